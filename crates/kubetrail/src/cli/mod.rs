//! Command-line parsing and the user-facing commands. `anyhow` lives here only.

mod activity;
mod answers;
#[cfg(feature = "demo")]
mod demo;
mod logging;
mod migrate;
mod ui;
mod who;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kubetrail::topology::{BuildError, Plan};

/// Records Kubernetes Events and audit logs, exactly once, into the stores you already run.
#[derive(Parser, Debug)]
#[command(name = "kubetrail", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline described by a configuration file.
    Run {
        /// The configuration file: kubetrail YAML, or Fluent Bit's classic or YAML format.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the resolved pipeline.
    Check {
        /// The configuration file: kubetrail YAML, or Fluent Bit's classic or YAML format.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Print a Fluent Bit configuration (classic or YAML) as kubetrail YAML, with a comment
    /// wherever the meaning changes.
    Migrate {
        /// The Fluent Bit configuration file.
        file: PathBuf,
    },
    /// Who did this, and why: an object's story and the causes of its changes, from the
    /// records of a `store` or `postgresql` output.
    Who(who::WhoArgs),
    /// What a user, a service account, a namespace... did: the stored records, filtered.
    Activity(activity::ActivityArgs),
    /// Serve the activity page alone over a store (`kubetrail run` serves it beside the
    /// pipeline when the configuration sets `service.ui.listen`).
    Ui(ui::UiArgs),
    #[cfg(feature = "demo")]
    /// Start a built-in Kubernetes API emulator with realistic Event traffic and record it to
    /// stdout and a state database: kubetrail at work without a cluster.
    Demo(demo::DemoArgs),
}

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

/// Why a configuration could not be turned into a plan.
#[derive(Debug, thiserror::Error)]
enum LoadPlanError {
    #[error(transparent)]
    Load(#[from] kubetrail_fluentbit::LoadError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl LoadPlanError {
    /// Prints every problem, one `error:` (or `warning:`, `note:`) line each.
    fn report(&self) {
        match self {
            LoadPlanError::Load(kubetrail_fluentbit::LoadError::FluentBit(all)) => {
                migrate::print_diagnostics(all)
            }
            e => eprintln!("error: {e}"),
        }
    }
}

/// A built plan, the dialect its file was in, and what the Fluent Bit reader said about it.
type Loaded = (
    Plan,
    kubetrail_fluentbit::Dialect,
    Vec<kubetrail_fluentbit::Diagnostic>,
);

/// Reads kubetrail YAML or a Fluent Bit file (translated) and builds the plan.
fn load_plan(path: &std::path::Path) -> Result<Loaded, LoadPlanError> {
    let kubetrail_fluentbit::Loaded {
        config,
        dialect,
        diagnostics,
    } = kubetrail_fluentbit::load(path)?;
    Ok((Plan::from_config(config)?, dialect, diagnostics))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load_plan(&config) {
            Ok((plan, dialect, diagnostics)) => {
                if dialect != kubetrail_fluentbit::Dialect::Kubetrail {
                    println!("read as {}", dialect.describe());
                    migrate::print_check_diagnostics(&diagnostics, &config);
                }
                print!("{}", plan.describe());
                let problems = plan.preflight();
                if !problems.is_empty() {
                    for p in &problems {
                        eprintln!("error: {p}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
                println!("configuration OK: {}", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                e.report();
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Migrate { file } => migrate::run(&file),
        Command::Run { config } => {
            let (plan, _, diagnostics) = match load_plan(&config) {
                Ok(p) => p,
                Err(e) => {
                    e.report();
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            logging::init(&plan.service.log_level, plan.service.log_format);
            migrate::log_diagnostics(&diagnostics);
            run_async(async move { ui::run(plan, &config).await })
        }
        Command::Who(args) => {
            logging::init("warn", kubetrail::service::LogFormat::Text);
            run_async(who::run(args))
        }
        Command::Activity(args) => {
            logging::init("warn", kubetrail::service::LogFormat::Text);
            run_async(activity::run(args))
        }
        Command::Ui(args) => {
            logging::init("info", kubetrail::service::LogFormat::Text);
            run_async(ui::serve(args))
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            logging::init(&args.log_level, kubetrail::service::LogFormat::Text);
            run_async(demo::run(args))
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(batch_scheduling)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "kubetrail failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Puts the calling thread (each of the async runtime's worker and blocking threads) in
/// Linux's `SCHED_BATCH` class: the same share of the CPU as before, but its wake-ups do not
/// preempt the thread that is running. The one thread everything waits on, the journal (a
/// plain thread, left in the normal class), then keeps its core while parsers and outputs
/// wake around it: under full load on 2 cores its involuntary context switches fell from
/// 690-800 to 390-460 per million webhook events (throughput moved within this machine's
/// noise, p99 latency down a little). Unprivileged; a refusal changes nothing.
#[cfg(target_os = "linux")]
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_BATCH
    // (priority 0), and the call only changes this thread's scheduling class.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_scheduling() {}
