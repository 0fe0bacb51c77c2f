//! `kubetrail demo`: starts the built-in Kubernetes API emulator with a generator of realistic
//! Event traffic (deployments scaling, images failing to pull, repeated back-offs) and a small
//! cluster at work in namespace `prod` (people deploying, scaling, rolling out, draining a
//! node; the controllers reacting), told both by its Events and by the audit log its API
//! server would write; and runs a real pipeline against it (TLS, bearer token, list+watch,
//! the audit log tailed) into stdout, the state database and the activity store, which
//! `kubetrail who` and `kubetrail activity` read afterwards. The emulator starts empty each time, so the demo starts with a fresh state
//! database too (a saved position would point into the previous emulator's history).

use anyhow::Context as _;
use kubetrail::telemetry::Metrics;
use kubetrail::topology::{Plan, stop_signal};
use kubetrail_core::config::{Config, parse_duration};
use kubetrail_emulator::activity::{self, ActivityOptions};
use kubetrail_emulator::generator::{self, GeneratorOptions};
use kubetrail_emulator::{Emulator, EmulatorOptions};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long to run (e.g. 30s, 2m); 0 runs until Ctrl-C.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Where the state database (and the emulator's CA and token) go.
    #[arg(long, default_value = "kubetrail-demo")]
    data_dir: PathBuf,
    /// Events per second from the traffic generator.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Print records as indented JSON.
    #[arg(long)]
    pretty: bool,
    /// Log level of kubetrail's own logs (on stderr).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let duration = parse_duration(&args.duration).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // Never pull the state from under a running demo: hold its lock while cleaning up.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("kubetrail.db.lock"))
        .context("opening the demo's lock file")?;
    if lock.try_lock().is_err() {
        anyhow::bail!("another kubetrail is using {}", data_dir.display());
    }
    // The activity store's files: its first and its other shards'.
    let store_files = (0..kubetrail_activity::MAX_SHARDS).flat_map(|k| {
        let db = kubetrail_activity::shard_path(Path::new("activity.db"), k);
        let db = db.to_string_lossy().into_owned();
        [format!("{db}-wal"), format!("{db}-shm"), db]
    });
    let files = [
        "kubetrail.db",
        "kubetrail.db-wal",
        "kubetrail.db-shm",
        "audit/audit.log",
    ]
    .map(String::from)
    .into_iter()
    .chain(store_files);
    for f in files {
        let p = data_dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("removing the previous demo state {}", p.display()))?;
        }
    }

    drop(lock);
    let token = format!("demo-{:016x}", fastrand::u64(..));
    let emu = Emulator::start(EmulatorOptions {
        tokens: vec![(token.clone(), "kubetrail-demo".into())],
        ..Default::default()
    })
    .await
    .context("starting the Kubernetes API emulator")?;
    let ca = data_dir.join("emulator-ca.crt");
    emu.write_ca_file(&ca).context("writing the emulator CA")?;
    let token_file = data_dir.join("emulator-token");
    std::fs::write(&token_file, &token).context("writing the emulator token")?;
    let audit_dir = data_dir.join("audit");
    std::fs::create_dir_all(&audit_dir).context("creating the demo's audit log directory")?;
    let activity_task = activity::spawn_activity(
        emu.clone(),
        ActivityOptions {
            audit_log: audit_dir.join("audit.log"),
            namespace: "prod".into(),
            seed: fastrand::u64(..),
            pause: std::time::Duration::from_millis(1200),
        },
    );
    let gen_task = generator::spawn(
        emu.clone(),
        GeneratorOptions {
            events_per_second: args.rate,
            namespaces: vec!["shop".into(), "payments".into(), "kube-system".into()],
            seed: fastrand::u64(..),
            max_events: None,
        },
    );

    let yaml = format!(
        r#"service:
  data_dir: {data}
  log_level: {level}
  grace: 3s
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
      kube_request_limit: 500
    - name: audit_file
      tag: k8s.audit
      path: {audit}/audit*.log
      refresh_interval: 200ms
  outputs:
    - name: stdout
      match: '*'
      format: {format}
    - name: store
      match: '*'
"#,
        audit = audit_dir.display(),
        data = data_dir.display(),
        level = args.log_level,
        url = emu.url(),
        ca = ca.display(),
        token = token_file.display(),
        format = if args.pretty { "pretty" } else { "json_lines" },
    );
    eprintln!(
        "kubetrail demo: emulator at {}, configuration:\n{yaml}",
        emu.url()
    );
    let config = Config::parse(&yaml, &data_dir.join("demo.yaml")).context("demo configuration")?;
    let plan = Plan::from_config(config).context("demo configuration")?;
    let metrics = Metrics::new();
    let stop = async move {
        if duration.is_zero() {
            stop_signal().await;
        } else {
            tokio::select! {
                _ = stop_signal() => {}
                _ = tokio::time::sleep(duration) => {}
            }
        }
    };
    let result = plan.run_with(stop, metrics.clone()).await;
    gen_task.abort();
    activity_task.abort();
    emu.shutdown().await;
    result?;
    let label = [("component", "kubernetes_events.0")];
    let recorded = metrics
        .value("kubetrail_component_records_in_total", &label)
        .unwrap_or(0);
    let written = metrics
        .value(
            "kubetrail_component_records_out_total",
            &[("component", "stdout.0")],
        )
        .unwrap_or(0);
    let audited = metrics
        .value(
            "kubetrail_component_records_in_total",
            &[("component", "audit_file.0")],
        )
        .unwrap_or(0);
    let store = data_dir.join("activity.db");
    eprintln!(
        "kubetrail demo: {recorded} Event records and {audited} audit records committed, \
         {written} records written to stdout; state in {}, activity store {}\n\
         ask it who did what, and why:\n  \
         kubetrail who deploy/checkout -n prod --store {store}\n  \
         kubetrail activity --user carol --store {store}",
        data_dir.join("kubetrail.db").display(),
        store.display(),
        store = store.display(),
    );
    Ok(())
}
