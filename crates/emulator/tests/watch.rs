//! WATCH behaviour: replay from a resourceVersion, live delivery, filtering, DELETED
//! revisions, timeouts, bookmarks, future and compacted revisions, slow watchers, chunking.

mod common;

use std::time::Duration;

use common::*;
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(10);

fn spec(ns: &str, obj: &str) -> EventSpec {
    EventSpec::simple(
        ns,
        "Pod",
        obj,
        "BackOff",
        format!("Back-off restarting {obj}"),
    )
}

#[tokio::test]
async fn watch_from_rv_replays_later_changes_then_follows_live() {
    let emu = start().await;
    let c = Client::new(&emu);
    emu.create_event(spec("a", "before"));
    let from = emu.current_resource_version();
    let e1 = emu.create_event(spec("a", "x"));
    let e1b = emu.bump_event("a", &e1.name).unwrap();
    let e2 = emu.create_event(spec("b", "y"));
    assert!(emu.delete_event("a", &e1.name));
    let del_rv = emu.current_resource_version();

    let mut w = c
        .watch(&format!("/api/v1/events?resourceVersion={from}&watch=true"))
        .await;
    assert_eq!(w.status, 200);
    let mut got = Vec::new();
    for _ in 0..4 {
        let f = w.frame().await;
        got.push((
            f["type"].as_str().unwrap().to_string(),
            f["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    assert_eq!(
        got,
        [
            ("ADDED".to_string(), e1.resource_version.clone()),
            ("MODIFIED".to_string(), e1b.resource_version.clone()),
            ("ADDED".to_string(), e2.resource_version.clone()),
            ("DELETED".to_string(), del_rv.clone()),
        ]
    );
    // live
    let live = emu.create_event(spec("c", "z"));
    let f = w.frame().await;
    assert_eq!(f["type"], "ADDED");
    assert_eq!(f["object"]["metadata"]["name"], live.name.as_str());
    assert_eq!(f["object"]["kind"], "Event");
    assert_eq!(f["object"]["apiVersion"], "v1");
    assert_eq!(w.next(Duration::from_millis(200)).await, Next::Timeout);
}

#[tokio::test]
async fn namespaced_and_selected_watches_only_see_their_events() {
    let emu = start().await;
    let c = Client::new(&emu);
    let from = emu.current_resource_version();
    let mut ns = c
        .watch(&format!(
            "/api/v1/namespaces/b/events?resourceVersion={from}&watch=1"
        ))
        .await;
    let mut warn = c
        .watch(&format!(
            "/apis/events.k8s.io/v1/events?resourceVersion={from}&watch=1&fieldSelector=type%3DWarning,regarding.kind%3DPod&labelSelector=team%20in%20(x)"
        ))
        .await;
    emu.create_event(spec("a", "1"));
    let b = emu.create_event(spec("b", "2"));
    let mut w = spec("c", "3");
    w.type_ = "Warning".into();
    w.labels = vec![("team".into(), "x".into())];
    let wr = emu.create_event(w);
    let f = ns.frame().await;
    assert_eq!(f["object"]["metadata"]["name"], b.name.as_str());
    assert_eq!(ns.next(Duration::from_millis(200)).await, Next::Timeout);
    let f = warn.frame().await;
    assert_eq!(f["object"]["metadata"]["name"], wr.name.as_str());
    assert_eq!(f["object"]["apiVersion"], "events.k8s.io/v1");
    assert_eq!(f["object"]["regarding"]["kind"], "Pod");
    assert_eq!(warn.next(Duration::from_millis(200)).await, Next::Timeout);
}

#[tokio::test]
async fn both_views_share_uids_names_and_revisions() {
    let emu = start().await;
    let c = Client::new(&emu);
    let mut s = spec("a", "p");
    s.new_style = true;
    let r = emu.create_event(s);
    emu.bump_event("a", &r.name).unwrap();
    let core = c.get("/api/v1/namespaces/a/events").await.json();
    let v1 = c
        .get("/apis/events.k8s.io/v1/namespaces/a/events")
        .await
        .json();
    assert_eq!(core["items"][0]["metadata"], v1["items"][0]["metadata"]);
    assert_eq!(core["items"][0]["series"]["count"], 2);
    assert_eq!(v1["items"][0]["series"]["count"], 2);
    assert_eq!(core["items"][0]["message"], v1["items"][0]["note"]);
    assert_eq!(
        core["metadata"]["resourceVersion"],
        v1["metadata"]["resourceVersion"]
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_seconds_closes_the_stream_cleanly() {
    let emu = start().await;
    let c = Client::new(&emu);
    emu.create_event(spec("a", "x"));
    let t0 = Instant::now();
    let mut w = c.watch("/api/v1/events?watch=1&timeoutSeconds=5").await;
    assert_eq!(w.frame().await["type"], "ADDED");
    let (rest, end) = w.drain(Duration::from_secs(60)).await;
    assert!(rest.is_empty());
    assert_eq!(end, Next::End(vec![]));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn future_rv_watch_is_empty_until_the_timeout() {
    let emu = start().await;
    let c = Client::new(&emu);
    let t0 = Instant::now();
    let f = Fixture::load("core-v1-events-watch-future-rv.txt");
    let mut w = c.watch(&f.request_target()).await;
    assert_eq!(w.status, 200);
    emu.create_event(spec("fx", "x"));
    let (frames, end) = w.drain(Duration::from_secs(60)).await;
    assert!(frames.is_empty());
    assert_eq!(end, Next::End(vec![]));
    assert!(t0.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn bookmarks_only_when_enabled_and_asked_for() {
    let opts = EmulatorOptions {
        bookmark_interval: Some(Duration::from_secs(1)),
        ..EmulatorOptions::default()
    };
    let emu = Emulator::start(opts).await.unwrap();
    let c = Client::new(&emu);
    let e = emu.create_event(spec("a", "x"));
    for (path, view) in [
        ("/api/v1/events", "v1"),
        ("/apis/events.k8s.io/v1/events", "events.k8s.io/v1"),
    ] {
        let rv = emu.current_resource_version();
        let mut w = c
            .watch(&format!(
                "{path}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=3"
            ))
            .await;
        let f = w.frame().await;
        assert_eq!(f["type"], "BOOKMARK");
        assert_eq!(f["object"]["kind"], "Event");
        assert_eq!(f["object"]["apiVersion"], view);
        assert_eq!(f["object"]["metadata"]["resourceVersion"], rv.as_str());
        assert_eq!(f["object"]["metadata"]["creationTimestamp"], Value::Null);
        emu.bump_event("a", &e.name).unwrap();
        assert_eq!(w.frame().await["type"], "MODIFIED");
        let f = w.frame().await;
        assert_eq!(f["type"], "BOOKMARK");
        assert_eq!(
            f["object"]["metadata"]["resourceVersion"],
            emu.current_resource_version().as_str()
        );
    }
    // not asked for: none
    let mut w = c
        .watch(&format!(
            "/api/v1/events?watch=1&resourceVersion={}&timeoutSeconds=3",
            emu.current_resource_version()
        ))
        .await;
    assert_eq!(w.drain(LONG).await, (vec![], Next::End(vec![])));
    // not enabled (the default, as the recorded server): none
    let plain = start().await;
    let c = Client::new(&plain);
    let mut w = c
        .watch("/api/v1/events?watch=1&allowWatchBookmarks=true&timeoutSeconds=3")
        .await;
    assert_eq!(w.drain(LONG).await, (vec![], Next::End(vec![])));
}

#[tokio::test]
async fn a_watcher_overtaken_by_compaction_gets_410_and_is_closed() {
    let opts = EmulatorOptions {
        history_limit: 100,
        ..EmulatorOptions::default()
    };
    let emu = Emulator::start(opts).await.unwrap();
    let c = Client::new(&emu);
    let e = emu.create_event(spec("a", "x"));
    let mut w = c
        .watch(&format!(
            "/api/v1/events?watch=1&resourceVersion={}",
            e.resource_version
        ))
        .await;
    // Do not read while far more changes than the history keeps are written.
    for _ in 0..2000 {
        emu.bump_event("a", &e.name).unwrap();
    }
    let (frames, end) = w.drain(LONG).await;
    assert_eq!(end, Next::End(vec![]));
    let last: Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
    assert_eq!(last["type"], "ERROR");
    assert_eq!(last["object"]["code"], 410);
    assert!(
        frames.len() < 2000,
        "the watcher was cut short, not fed everything"
    );
}

#[tokio::test]
async fn many_changes_stream_in_order_without_loss() {
    let emu = start().await;
    let c = Client::new(&emu);
    assert_eq!(emu.create_events_bulk(3000, 5, 42), 3000);
    let from = emu.current_resource_version();
    let mut w = c
        .watch(&format!(
            "/api/v1/namespaces/bench-1/events?watch=1&resourceVersion={from}"
        ))
        .await;
    let list = c.get("/api/v1/namespaces/bench-1/events").await.json();
    let names = names(&list);
    assert_eq!(names.len(), 600);
    let writer = {
        let emu = emu.clone();
        let names = names.clone();
        tokio::spawn(async move {
            for round in 0..5 {
                for n in &names {
                    emu.bump_event("bench-1", n).unwrap();
                }
                if round % 2 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut last_rv = 0u64;
    for _ in 0..3000 {
        let f = w.frame().await;
        assert_eq!(f["type"], "MODIFIED");
        let rv: u64 = f["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > last_rv);
        last_rv = rv;
    }
    writer.await.unwrap();
    assert_eq!(w.next(Duration::from_millis(100)).await, Next::Timeout);
}

#[tokio::test(start_paused = true)]
async fn each_frame_is_one_http_chunk() {
    // Plain HTTP so the raw chunked framing is visible, like the `curl --raw` fixture.
    let emu = Emulator::start(EmulatorOptions {
        tls: false,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    assert!(emu.url().starts_with("http://"));
    let from = emu.current_resource_version();
    for i in 0..3 {
        emu.create_event(spec("fx", &format!("p{i}")));
    }
    let mut s = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let req = format!(
        "GET /api/v1/namespaces/fx/events?resourceVersion={from}&timeoutSeconds=1&watch=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer admin-token\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(LONG, s.read_to_end(&mut raw))
        .await
        .ok();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Type: application/json\r\n"));
    assert!(head.contains("\r\nAudit-Id: "));
    // <hex>\r\n{json}\n\r\n per frame, then 0\r\n\r\n — as core-v1-events-watch-fx-chunked-raw.txt
    let mut rest = body;
    let mut frames = 0;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            assert_eq!(after, "\r\n");
            break;
        }
        let chunk = &after[..size];
        assert!(
            chunk.ends_with("}\n") && chunk.matches('\n').count() == 1,
            "{chunk}"
        );
        let v: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(v["type"], "ADDED");
        rest = after[size..].strip_prefix("\r\n").unwrap();
        frames += 1;
    }
    assert_eq!(frames, 3);
    let fixture = Fixture::load("core-v1-events-watch-fx-chunked-raw.txt");
    let fx = fixture.text();
    assert!(fx.ends_with("\r\n0\r\n\r\n"));
}

#[tokio::test]
async fn absurd_timeouts_do_not_break_the_server() {
    let emu = Emulator::start(EmulatorOptions {
        event_ttl: Some(Duration::MAX),
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(&emu);
    emu.create_event(spec("a", "x"));
    let mut w = c
        .watch("/api/v1/events?watch=1&timeoutSeconds=9223372036854775807")
        .await;
    assert_eq!(w.status, 200);
    assert_eq!(w.frame().await["type"], "ADDED");
    let r = c
        .get("/api/v1/events?watch=1&timeoutSeconds=-3&resourceVersion=abc")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(c.get("/api/v1/events").await.status, 200);
}
