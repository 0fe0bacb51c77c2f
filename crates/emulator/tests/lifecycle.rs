//! Restart, shutdown, plain HTTP, non-resource endpoints, robustness against garbage, stats,
//! TTL expiry and the traffic generator.

mod common;

use std::time::Duration;

use common::*;
use kubetrail_emulator::generator::{self, GeneratorOptions};
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spec(obj: &str) -> EventSpec {
    EventSpec::simple("a", "Pod", obj, "Started", "m")
}

#[tokio::test]
async fn restart_keeps_data_and_port_and_drops_connections() {
    let emu = start().await;
    let c = Client::new(&emu);
    for i in 0..5 {
        emu.create_event(spec(&format!("p{i}")));
    }
    let rv = emu.current_resource_version();
    let addr = emu.addr();
    let mut w = c.watch("/api/v1/events?watch=1").await;
    for _ in 0..5 {
        assert_eq!(w.frame().await["type"], "ADDED");
    }
    emu.restart().await;
    assert!(matches!(
        w.next(Duration::from_secs(10)).await,
        Next::Broken(_)
    ));
    assert_eq!(emu.addr(), addr);
    let r = c.get("/api/v1/events").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 5);
    assert_eq!(r.json()["metadata"]["resourceVersion"], rv.as_str());
    // watching from the old revision still works after the restart
    let mut w = c
        .watch(&format!("/api/v1/events?watch=1&resourceVersion={rv}"))
        .await;
    emu.create_event(spec("after"));
    assert_eq!(w.frame().await["type"], "ADDED");
    assert!(emu.stats().connections >= 3);
}

#[tokio::test]
async fn shutdown_closes_everything() {
    let emu = start().await;
    let c = Client::new(&emu);
    let mut w = c.watch("/api/v1/events?watch=1").await;
    assert_eq!(emu.stats().open_watches, 1);
    emu.shutdown().await;
    assert!(emu.is_shut_down());
    assert!(matches!(
        w.next(Duration::from_secs(10)).await,
        Next::Broken(_) | Next::End(_)
    ));
    assert!(c.try_get("/api/v1/events").await.is_err());
    // the watch task noticed the closed connection
    for _ in 0..100 {
        if emu.stats().open_watches == 0 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.stats().open_watches, 0);
}

#[tokio::test]
async fn plain_http_version_and_health() {
    let emu = Emulator::start(EmulatorOptions {
        tls: false,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    assert!(emu.url().starts_with("http://127.0.0.1:"));
    assert_eq!(emu.ca_pem(), "");
    let c = Client::new(&emu);
    let v = c.get("/version").await;
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["gitVersion"], "v1.28.7-emulated");
    let h = c.get("/healthz").await;
    assert_eq!((h.status.as_u16(), h.text().as_str()), (200, "ok"));
    assert_eq!(c.get("/nope").await.status, 404);
    assert_eq!(c.get("/api/v1/events/x").await.status, 404);
    assert_eq!(
        c.get("/api/v1/namespaces/a/events/x/status").await.status,
        404
    );
    assert_eq!(c.get("/apis/events.k8s.io/v2/events").await.status, 404);
}

#[tokio::test]
async fn garbage_requests_do_not_hurt_the_server() {
    let emu = Emulator::start(EmulatorOptions {
        tls: false,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let tls_emu = start().await;
    let junk: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /api/v1/events?limit=-5&continue=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer admin-token\r\n\r\n".to_vec(),
        b"GET /api/v1/events?fieldSelector=%FF%FE&labelSelector=(((( HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer admin-token\r\n\r\n".to_vec(),
        b"GET /api/v1/events?resourceVersion=-1&timeoutSeconds=abc&watch=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer admin-token\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        b"DELETE /api/v1/namespaces/a/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer admin-token\r\n\r\n".to_vec(),
    ];
    for target in [emu.addr(), tls_emu.addr()] {
        for j in &junk {
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = s.write_all(j).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        }
    }
    emu.create_event(spec("still-fine"));
    assert_eq!(Client::new(&emu).get("/api/v1/events").await.status, 200);
    assert_eq!(
        Client::new(&tls_emu).get("/api/v1/events").await.status,
        200
    );
    let r = Client::new(&emu).get("/api/v1/events?limit=-5").await;
    assert_eq!(r.status, 200, "a negative limit means unpaged");
    let r = Client::new(&emu).get("/api/v1/namespaces/a/events").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stats_count_requests() {
    let emu = start().await;
    let c = Client::new(&emu);
    c.get("/api/v1/events").await;
    c.get("/apis/events.k8s.io/v1/events?limit=1").await;
    c.get("/api/v1/namespaces/a/events/none").await;
    let mut w = c.watch("/api/v1/events?watch=1").await;
    let _ = w.next(Duration::from_millis(50)).await;
    let s = emu.stats();
    assert_eq!((s.lists, s.gets, s.watches), (2, 1, 1));
    assert_eq!(s.status(200), 3);
    assert_eq!(s.status(404), 1);
    assert_eq!(s.requests, 4);
    assert_eq!(s.open_watches, 1);
}

#[tokio::test(start_paused = true)]
async fn events_expire_after_the_ttl() {
    let emu = Emulator::start(EmulatorOptions {
        event_ttl: Some(Duration::from_secs(3600)),
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(&emu);
    let e = emu.create_event(spec("old"));
    let mut w = c
        .watch(&format!(
            "/api/v1/events?watch=1&timeoutSeconds=100000&resourceVersion={}",
            e.resource_version
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let keep = emu.create_event(spec("young"));
    assert_eq!(w.frame().await["type"], "ADDED");
    tokio::time::sleep(Duration::from_secs(1801)).await;
    let f = w.frame().await;
    assert_eq!(f["type"], "DELETED");
    assert_eq!(f["object"]["metadata"]["name"], e.name.as_str());
    assert_eq!(emu.event_count(), 1);
    // a repeat refreshes the TTL
    emu.bump_event("a", &keep.name).unwrap();
    assert_eq!(w.frame().await["type"], "MODIFIED");
    tokio::time::sleep(Duration::from_secs(3000)).await;
    assert_eq!(emu.event_count(), 1);
    tokio::time::sleep(Duration::from_secs(700)).await;
    assert_eq!(emu.event_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn generator_makes_realistic_traffic_and_stops() {
    let emu = start().await;
    let from = emu.current_resource_version();
    let h = generator::spawn(
        emu.clone(),
        GeneratorOptions {
            events_per_second: 50.0,
            namespaces: vec!["shop".into()],
            seed: 9,
            max_events: Some(300),
        },
    );
    h.await.unwrap();
    let c = Client::new(&emu);
    let list = c.get("/api/v1/events").await.json();
    let items = list["items"].as_array().unwrap();
    assert!(items.len() > 50 && items.len() <= 300, "{}", items.len());
    let types: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert!(types.contains("Normal") && types.contains("Warning"));
    assert!(
        items.iter().any(|i| i["count"].as_i64().unwrap_or(0) > 1),
        "repeats bump counts"
    );
    assert!(
        items.iter().any(|i| !i["eventTime"].is_null()),
        "some new-style events"
    );
    // every write is one change
    let w_changes: u64 =
        emu.current_resource_version().parse::<u64>().unwrap() - from.parse::<u64>().unwrap();
    assert_eq!(w_changes, 300);
}
