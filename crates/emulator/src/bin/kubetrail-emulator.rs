//! `kubetrail-emulator`: the Kubernetes API emulator as a standalone server, for benchmarks
//! and for trying kubetrail by hand. Writes its CA, token and URL into `--dir`, prints one
//! JSON line when ready, and runs until SIGINT/SIGTERM.
//!
//! ```text
//! kubetrail-emulator --dir DIR [--listen 127.0.0.1:0] [--events N] [--namespaces K]
//!                    [--modify-after-list] [--rate EVENTS_PER_S] [--token TOKEN]
//! ```
//! `--events N` creates N Events before serving; `--modify-after-list` then bumps every one of
//! them once (N MODIFIED changes) as soon as the first LIST request has been answered, so a
//! client sees a list of N followed by a watch delivering N changes. `--rate` runs the
//! realistic traffic generator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kubetrail_emulator::generator::{self, GeneratorOptions};
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};

struct Args {
    dir: PathBuf,
    listen: std::net::SocketAddr,
    events: usize,
    namespaces: usize,
    modify_after_list: bool,
    rate: f64,
    token: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from("."),
        listen: ([127, 0, 0, 1], 0).into(),
        events: 0,
        namespaces: 10,
        modify_after_list: false,
        rate: 0.0,
        token: "emulator-token".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(value()?),
            "--listen" => a.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--events" => a.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--namespaces" => {
                a.namespaces = value()?.parse().map_err(|e| format!("--namespaces: {e}"))?
            }
            "--rate" => a.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--token" => a.token = value()?,
            "--modify-after-list" => a.modify_after_list = true,
            "-h" | "--help" => {
                return Err("usage: kubetrail-emulator --dir DIR [--listen ADDR] [--events N] [--namespaces K] [--modify-after-list] [--rate R] [--token T]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubetrail-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let emu = Emulator::start(EmulatorOptions {
        bind: args.listen,
        tokens: vec![(args.token.clone(), "kubetrail".into())],
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let ca = args.dir.join("ca.crt");
    emu.write_ca_file(&ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    let token = args.dir.join("token");
    std::fs::write(&token, &args.token).map_err(|e| format!("{}: {e}", token.display()))?;
    let mut names = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let ns = format!("ns-{}", i % args.namespaces.max(1));
        let kinds = ["Pod", "Deployment", "ReplicaSet", "Node"];
        let reasons = ["BackOff", "Pulled", "FailedScheduling", "ScalingReplicaSet"];
        let spec = EventSpec::simple(
            &ns,
            kinds[i % 4],
            format!("workload-{i}"),
            reasons[i % 4],
            format!(
                "Back-off restarting failed container app in pod workload-{i}_{ns}(5d6b0a4c-1e2f-4a3b-9c8d-7e6f5a4b3c2d)"
            ),
        );
        let e = emu.create_event(spec);
        names.push((e.namespace, e.name));
    }
    println!(
        "{{\"url\":\"{}\",\"ca_file\":\"{}\",\"token_file\":\"{}\",\"events\":{}}}",
        emu.url(),
        ca.display(),
        token.display(),
        args.events
    );
    if args.modify_after_list && !names.is_empty() {
        let emu2 = emu.clone();
        tokio::spawn(async move {
            while emu2.stats().lists == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for (ns, name) in names {
                emu2.bump_event(&ns, &name);
            }
            eprintln!("kubetrail-emulator: bumped every Event once");
        });
    }
    let _gen = (args.rate > 0.0).then(|| {
        generator::spawn(
            emu.clone(),
            GeneratorOptions {
                events_per_second: args.rate,
                ..Default::default()
            },
        )
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emu.shutdown().await;
    Ok(())
}
