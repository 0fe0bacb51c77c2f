//! Replaying a watch recorded from a real cluster (the "shop" scenario's `events-watch.jsonl`):
//! a client watching the emulator sees every recorded frame, in order, with its type,
//! resourceVersion, count and message; and a list at the end shows what the recorder's final
//! `kubectl get events` showed.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn shop() -> PathBuf {
    let d = PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect("KUBETRAIL_FIXTURES"));
    d.join("scenarios/shop")
}

#[tokio::test]
async fn a_recorded_watch_is_seen_as_recorded() {
    let emu = start().await;
    let c = Client::new(&emu);
    let mut w = c.watch("/api/v1/events?watch=true").await;
    assert_eq!(w.status, 200);
    let text = std::fs::read_to_string(shop().join("events-watch.jsonl")).unwrap();
    let recorded: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        emu.replay_watch_file(&shop().join("events-watch.jsonl"))
            .unwrap(),
        recorded.len()
    );
    for want in &recorded {
        let got = w.frame().await;
        assert_eq!(got["type"], want["type"]);
        for key in [
            "reason",
            "message",
            "count",
            "type",
            "involvedObject",
            "firstTimestamp",
            "lastTimestamp",
            "source",
        ] {
            assert_eq!(
                got["object"][key], want["object"][key],
                "{key} of {}",
                want["object"]["metadata"]["name"]
            );
        }
        for key in ["uid", "name", "namespace", "resourceVersion"] {
            assert_eq!(
                got["object"]["metadata"][key],
                want["object"]["metadata"][key]
            );
        }
    }
    // A MODIFIED of an Event that was never added, or a frame that is not one, is refused.
    let bad = r#"{"type":"MODIFIED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"nope","namespace":"shop","uid":"u","resourceVersion":"9999"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"R","message":"m"}}"#;
    assert!(emu.replay_watch_frame(bad, 1).is_err());
    assert!(emu.replay_watch_frame("{}", 2).is_err());
    // The final list holds what the recorder's `kubectl get events -A -o json` held.
    let list = c.get("/api/v1/events").await.json();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(shop().join("events-list.json")).unwrap())
            .unwrap();
    let key = |v: &Value| {
        let mut k: Vec<(String, String, i64)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["metadata"]["uid"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                    e["count"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&list), key(&want));
    emu.shutdown().await;
}
