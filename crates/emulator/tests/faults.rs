//! Every fault knob, seen from a real client.

mod common;

use std::time::Duration;

use common::*;
use kubetrail_emulator::{EventSpec, Faults};
use serde_json::Value;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(10);

async fn with_events(n: usize) -> (kubetrail_emulator::Emulator, Client) {
    let emu = start().await;
    for i in 0..n {
        emu.create_event(EventSpec::simple(
            "a",
            "Pod",
            format!("p{i}"),
            "Started",
            "m",
        ));
    }
    let c = Client::new(&emu);
    (emu, c)
}

#[tokio::test]
async fn cut_watch_after_frames_leaves_half_a_frame() {
    let (emu, c) = with_events(5).await;
    emu.set_faults(Faults {
        cut_watch_after_frames: Some(2),
        ..Faults::default()
    });
    let mut w = c.watch("/api/v1/events?watch=1").await;
    assert_eq!(w.status, 200);
    let (frames, end) = w.drain(LONG).await;
    assert_eq!(frames.len(), 2);
    for f in &frames {
        serde_json::from_slice::<Value>(f).unwrap();
    }
    match end {
        Next::Broken(partial) => {
            assert!(!partial.is_empty(), "half a JSON line was sent");
            assert!(serde_json::from_slice::<Value>(&partial).is_err());
            assert!(partial.starts_with(b"{\"type\":\"ADDED\""));
        }
        other => panic!("expected an abrupt end, got {other:?}"),
    }
    // the fault applies to every new watch until cleared
    emu.set_faults(Faults::default());
    let mut w = c.watch("/api/v1/events?watch=1").await;
    for _ in 0..5 {
        assert_eq!(w.frame().await["type"], "ADDED");
    }
}

#[tokio::test]
async fn stale_watch_empty_200_answers_empty_and_closes() {
    let (emu, c) = with_events(3).await;
    emu.set_faults(Faults {
        stale_watch_empty_200: true,
        ..Faults::default()
    });
    for path in [
        "/api/v1/events?watch=1",
        "/api/v1/events?watch=1&resourceVersion=1",
        "/apis/events.k8s.io/v1/namespaces/a/events?watch=true&timeoutSeconds=300",
    ] {
        let mut w = c.watch(path).await;
        assert_eq!(w.status, 200);
        assert_eq!(w.drain(LONG).await, (vec![], Next::End(vec![])));
    }
    // lists are unaffected
    assert_eq!(c.get("/api/v1/events").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn garbage_frames_are_interleaved_with_the_real_ones() {
    let (emu, c) = with_events(6).await;
    emu.set_faults(Faults {
        garbage_frames: true,
        ..Faults::default()
    });
    let mut w = c.watch("/api/v1/events?watch=1&timeoutSeconds=1").await;
    let mut good = 0;
    let mut not_json = 0;
    let mut odd = 0;
    loop {
        match w.next(LONG).await {
            Next::Line(l) => match serde_json::from_slice::<Value>(&l) {
                Ok(v)
                    if v["type"] == "ADDED"
                        && v["object"]["kind"] == "Event"
                        && v["object"]["metadata"]["name"].is_string() =>
                {
                    good += 1
                }
                Ok(_) => odd += 1,
                Err(_) => not_json += 1,
            },
            Next::End(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(good, 6, "every real frame arrives intact");
    assert!(not_json >= 2, "broken JSON and non-JSON lines");
    assert!(
        odd >= 2,
        "frames of unexpected shape (ConfigMap, unknown type)"
    );
}

#[tokio::test]
async fn non_json_list_body() {
    let (emu, c) = with_events(2).await;
    emu.set_faults(Faults {
        non_json_list_body: true,
        ..Faults::default()
    });
    let r = c.get("/api/v1/events").await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("<html>"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    // watches and single GETs still work
    let mut w = c.watch("/api/v1/events?watch=1").await;
    assert_eq!(w.frame().await["type"], "ADDED");
}

#[tokio::test(start_paused = true)]
async fn delay_slows_every_answer() {
    let (emu, c) = with_events(1).await;
    emu.set_faults(Faults {
        delay: Some(Duration::from_secs(7)),
        ..Faults::default()
    });
    let t0 = Instant::now();
    assert_eq!(c.get("/api/v1/events").await.status, 200);
    assert!(t0.elapsed() >= Duration::from_secs(7));
    let t1 = Instant::now();
    let mut w = c.watch("/api/v1/events?watch=1").await;
    assert!(t1.elapsed() >= Duration::from_secs(7));
    assert_eq!(w.frame().await["type"], "ADDED");
}

#[tokio::test]
async fn fail_status_answers_everything_with_a_status() {
    let (emu, c) = with_events(1).await;
    emu.set_faults(Faults {
        fail_status: Some(500),
        ..Faults::default()
    });
    for path in ["/api/v1/events", "/api/v1/events?watch=1", "/version"] {
        let r = c.get(path).await;
        assert_eq!(r.status, 500, "{path}");
        let j = r.json();
        assert_eq!(
            (j["kind"].as_str(), j["code"].as_u64()),
            (Some("Status"), Some(500))
        );
        assert_eq!(j["reason"], "InternalError");
    }
    emu.set_faults(Faults {
        fail_status: Some(429),
        ..Faults::default()
    });
    let r = c.get("/api/v1/events").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.json()["details"]["retryAfterSeconds"], 1);
    emu.set_faults(Faults::default());
    assert_eq!(c.get("/api/v1/events").await.status, 200);
    assert_eq!(emu.stats().status(500), 3);
}

#[tokio::test]
async fn cut_watches_closes_every_stream_abruptly() {
    let (emu, c) = with_events(1).await;
    let mut w1 = c.watch("/api/v1/events?watch=1").await;
    let mut w2 = c.watch("/apis/events.k8s.io/v1/events?watch=1").await;
    assert_eq!(w1.frame().await["type"], "ADDED");
    assert_eq!(w2.frame().await["type"], "ADDED");
    emu.cut_watches();
    assert_eq!(w1.next(LONG).await, Next::Broken(vec![]));
    assert_eq!(w2.next(LONG).await, Next::Broken(vec![]));
    // with the frame-cut fault set, the cut lands mid-frame
    emu.set_faults(Faults {
        cut_watch_after_frames: Some(1000),
        ..Faults::default()
    });
    let mut w = c.watch("/api/v1/events?watch=1").await;
    assert_eq!(w.frame().await["type"], "ADDED");
    emu.cut_watches();
    match w.next(LONG).await {
        Next::Broken(partial) => assert!(!partial.is_empty()),
        other => panic!("{other:?}"),
    }
}
