//! Throughput check: LIST 100,000 events in pages of 500, then stream 100,000 MODIFIED
//! through one watch, both over TLS with a real hyper client. Target: > 50,000 events/s each
//! on 2 cores. Run with `cargo bench -p kubetrail-emulator --bench throughput`
//! (`-- N` for another event count).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Client, Next};
use kubetrail_emulator::{Emulator, EmulatorOptions};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let emu = Emulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let t = Instant::now();
    emu.create_events_bulk(n, 10, 1);
    println!("bulk create {n}: {:?}", t.elapsed());
    let c = Client::new(&emu);

    // Paged LIST at one snapshot.
    let t = Instant::now();
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            None => "/api/v1/events?limit=500".to_string(),
            Some(t) => format!("/api/v1/events?limit=500&continue={t}"),
        };
        let r = c.get(&path).await;
        assert_eq!(r.status, 200);
        let j = r.json();
        seen += j["items"].as_array().map_or(0, |a| a.len());
        match j["metadata"]["continue"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let el = t.elapsed();
    assert_eq!(seen, n);
    println!(
        "list {seen} in pages of 500 (parsed by the client): {el:?} = {:.0} events/s",
        seen as f64 / el.as_secs_f64()
    );

    // The same pages, bytes only (server + transport cost without client JSON parsing).
    let t = Instant::now();
    let mut token: Option<String> = None;
    let mut bytes = 0usize;
    loop {
        let path = match &token {
            None => "/api/v1/events?limit=500".to_string(),
            Some(t) => format!("/api/v1/events?limit=500&continue={t}"),
        };
        let r = c.get(&path).await;
        bytes += r.body.len();
        // The continue token sits in the list metadata, before the first item.
        let head = &r.body[..r.body.len().min(400)];
        let head = String::from_utf8_lossy(head);
        match head.split_once("\"continue\":\"") {
            Some((_, rest)) => token = Some(rest.split('"').next().unwrap().to_string()),
            None => break,
        }
    }
    let el = t.elapsed();
    println!(
        "list {n} in pages of 500 (bytes only, {} MB): {el:?} = {:.0} events/s",
        bytes / 1_000_000,
        n as f64 / el.as_secs_f64()
    );

    // Watch: n MODIFIED written while one watcher streams them.
    let names: Vec<(String, String)> = {
        let r = c.get("/api/v1/events").await.json();
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["namespace"].as_str().unwrap().to_string(),
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let from = emu.current_resource_version();
    let mut w = c
        .watch(&format!("/api/v1/events?watch=1&resourceVersion={from}"))
        .await;
    let t = Instant::now();
    let writer = {
        let emu = emu.clone();
        tokio::spawn(async move {
            for (i, (ns, name)) in names.iter().enumerate() {
                emu.bump_event(ns, name);
                if i % 1000 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut frames = 0;
    while frames < n {
        match w.next(Duration::from_secs(30)).await {
            Next::Line(l) => {
                assert!(l.starts_with(b"{\"type\":\"MODIFIED\""));
                frames += 1;
            }
            other => panic!("watch ended early after {frames}: {other:?}"),
        }
    }
    let el = t.elapsed();
    writer.await.expect("writer");
    println!(
        "watch {frames} MODIFIED: {el:?} = {:.0} events/s ({} chunks)",
        frames as f64 / el.as_secs_f64(),
        w.chunks.len()
    );

    // Replay: the same number of changes already in the history, streamed to a new watcher.
    let t = Instant::now();
    let mut w = c
        .watch(&format!("/api/v1/events?watch=1&resourceVersion={from}"))
        .await;
    let mut frames = 0;
    while frames < n {
        match w.next(Duration::from_secs(30)).await {
            Next::Line(_) => frames += 1,
            other => panic!("replay ended early after {frames}: {other:?}"),
        }
    }
    let el = t.elapsed();
    println!(
        "replay {frames} from history: {el:?} = {:.0} events/s",
        frames as f64 / el.as_secs_f64()
    );
    let names = names_again(&c).await;
    let t = Instant::now();
    for (ns, name) in names.iter().take(n) {
        emu.bump_event(ns, name);
    }
    println!("{n} bumps without watchers: {:?}", t.elapsed());
    emu.shutdown().await;
}

async fn names_again(c: &Client) -> Vec<(String, String)> {
    let r = c.get("/api/v1/events").await.json();
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["namespace"].as_str().unwrap().to_string(),
                i["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
