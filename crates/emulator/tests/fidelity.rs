//! Fidelity against the recorded kube-apiserver v1.28.7 exchanges in `KUBETRAIL_FIXTURES`:
//! the recorded Events are loaded into the emulator (keeping their resourceVersions), the
//! recorded requests are replayed, and the answers are compared with the recorded ones.

mod common;

use base64::Engine;
use common::*;
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};
use serde_json::Value;

async fn loaded() -> (Emulator, Client) {
    let emu = start().await;
    assert_eq!(load_fixture_events(&emu), 42);
    let c = Client::new(&emu);
    (emu, c)
}

fn decode_token(t: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Our list body equals the recorded one except for the list's own resourceVersion (the
/// recorded server had written other resources by then).
fn assert_same_list(ours: &Resp, fixture: &Fixture) {
    let mut want = fixture.json();
    let mut got = ours.json();
    for v in [&mut want, &mut got] {
        v["metadata"]["resourceVersion"] = Value::Null;
        v["metadata"]["continue"] = Value::Null;
    }
    assert_eq!(got["items"], want["items"]);
    // And byte for byte, item by item (key order, escaping, null vs omitted).
    assert_eq!(raw_items(&ours.body), fixture.raw_items());
}

#[tokio::test]
async fn list_all_is_byte_identical_in_both_views() {
    let (emu, c) = loaded().await;
    for (path, fx) in [
        ("/api/v1/events", "core-v1-events-list-all.txt"),
        (
            "/apis/events.k8s.io/v1/events",
            "events-k8s-io-v1-events-list-all.txt",
        ),
        (
            "/api/v1/namespaces/fx/events",
            "core-v1-events-list-namespace-fx.txt",
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/fx/events",
            "events-k8s-io-v1-events-list-namespace-fx.txt",
        ),
    ] {
        let f = Fixture::load(fx);
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(key_order(&r.text()), key_order(&f.text()), "{path}");
        assert_eq!(
            nested_key_order(&r.text(), &["metadata"]),
            nested_key_order(&f.text(), &["metadata"])
        );
        assert!(r.body.ends_with(b"}\n"));
        assert_same_list(&r, &f);
        // large lists are chunked, like Go's server
        assert!(r.header("content-length").is_none());
        assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    }
    // the list RV is the store's current revision
    let r = c.get("/api/v1/events").await.json();
    assert_eq!(
        r["metadata"]["resourceVersion"].as_str().unwrap(),
        emu.current_resource_version()
    );
}

#[tokio::test]
async fn item_key_order_matches_for_generated_events_too() {
    let emu = start().await;
    let c = Client::new(&emu);
    emu.create_event(EventSpec::simple(
        "fx",
        "Pod",
        "p",
        "Started",
        "Started container app",
    ));
    let mut new_style = EventSpec::simple("fx", "Pod", "p", "Scheduled", "assigned");
    new_style.new_style = true;
    new_style.reporting_component = "default-scheduler".into();
    new_style.reporting_instance = "default-scheduler-vm".into();
    let r = emu.create_event(new_style);
    emu.bump_event("fx", &r.name).unwrap();
    let core = Fixture::load("core-v1-events-list-all.txt");
    let ev = Fixture::load("events-k8s-io-v1-events-list-all.txt");
    let fixture_orders =
        |f: &Fixture| -> Vec<Vec<String>> { f.raw_items().iter().map(|i| key_order(i)).collect() };
    let core_orders = fixture_orders(&core);
    let ev_orders = fixture_orders(&ev);
    for (path, orders) in [
        ("/api/v1/events", &core_orders),
        ("/apis/events.k8s.io/v1/events", &ev_orders),
    ] {
        let r = c.get(path).await;
        for item in raw_items(&r.body) {
            let ko = key_order(&item);
            assert!(
                orders.contains(&ko),
                "{path}: key order {ko:?} is not one the real server produced"
            );
            let meta = nested_key_order(&item, &["metadata"]);
            assert_eq!(
                meta,
                [
                    "name",
                    "namespace",
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "managedFields"
                ]
            );
        }
    }
}

#[tokio::test]
async fn single_get_matches_both_fixtures() {
    let (_emu, c) = loaded().await;
    for (path, fx) in [
        (
            "/api/v1/namespaces/fx/events/fx-app.18ebbf51f6ae2a95",
            "core-v1-event-get.txt",
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/fx/events/fx-app.18ebbf51f6ae2a95",
            "events-k8s-io-v1-event-get.txt",
        ),
    ] {
        let f = Fixture::load(fx);
        let r = c.get(path).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, f.body, "{path}");
        assert_eq!(r.header("content-length"), Some(f.body.len().to_string()));
    }
}

#[tokio::test]
async fn selectors_select_what_the_real_server_selected() {
    let (_emu, c) = loaded().await;
    for fx in [
        "core-v1-events-list-fieldselector-kind-pod.txt",
        "core-v1-events-list-fieldselector-for-object.txt",
        "core-v1-events-list-fieldselector-type-warning.txt",
        "core-v1-events-list-labelselector.txt",
        "core-v1-events-list-labelselector-setbased.txt",
        "events-k8s-io-v1-events-list-fieldselector-regarding-kind.txt",
    ] {
        let f = Fixture::load(fx);
        let r = c.get(&f.request_target()).await;
        assert_eq!(r.status, 200, "{fx}: {}", r.text());
        assert_eq!(names(&r.json()), f.names(), "{fx}");
        assert_same_list(&r, &f);
    }
}

#[tokio::test]
async fn paging_walks_the_same_pages_with_the_same_tokens() {
    let (emu, c) = loaded().await;
    let page1 = Fixture::load("core-v1-events-list-limit5-page1.txt");
    let page2 = Fixture::load("core-v1-events-list-limit5-page2.txt");
    let last = Fixture::load("core-v1-events-list-limit5-lastpage.txt");
    let r1 = c.get("/api/v1/events?limit=5").await;
    let j1 = r1.json();
    assert_eq!(
        nested_key_order(&r1.text(), &["metadata"]),
        ["resourceVersion", "continue", "remainingItemCount"]
    );
    assert_eq!(j1["metadata"]["remainingItemCount"], 37);
    assert_same_list(&r1, &page1);
    let tok = j1["metadata"]["continue"].as_str().unwrap();
    let mine = decode_token(tok);
    let theirs = decode_token(page1.json()["metadata"]["continue"].as_str().unwrap());
    assert_eq!(mine["v"], theirs["v"]);
    assert_eq!(mine["start"], theirs["start"]);
    assert_eq!(
        mine["rv"].as_i64().unwrap().to_string(),
        emu.current_resource_version()
    );
    // Writes between pages do not show up: every page is read at the first page's revision.
    let list_rv = j1["metadata"]["resourceVersion"].clone();
    emu.create_event(EventSpec::simple("fx", "Pod", "zz-late", "Started", "late"));
    emu.delete_event("fx", "fx-pod-0.18ebbf51f6a05586");
    let r2 = c
        .get(&format!("/api/v1/events?limit=5&continue={tok}"))
        .await;
    let j2 = r2.json();
    assert_eq!(j2["metadata"]["resourceVersion"], list_rv);
    assert_eq!(j2["metadata"]["remainingItemCount"], 32);
    assert_same_list(&r2, &page2);
    // walk to the end
    let mut tok = j2["metadata"]["continue"].as_str().unwrap().to_string();
    let mut pages = 2;
    let mut seen = 10;
    loop {
        let r = c
            .get(&format!("/api/v1/events?limit=5&continue={tok}"))
            .await;
        let j = r.json();
        pages += 1;
        seen += j["items"].as_array().unwrap().len();
        assert_eq!(j["metadata"]["resourceVersion"], list_rv);
        match j["metadata"]["continue"].as_str() {
            Some(t) => {
                assert!(j["metadata"]["remainingItemCount"].is_i64());
                tok = t.to_string();
            }
            None => {
                assert_eq!(
                    nested_key_order(&r.text(), &["metadata"]),
                    ["resourceVersion"]
                );
                assert_same_list(&r, &last);
                break;
            }
        }
    }
    assert_eq!((pages, seen), (9, 42));
}

#[tokio::test]
async fn events_k8s_io_paging_token_has_the_same_format() {
    let (_emu, c) = loaded().await;
    let f = Fixture::load("events-k8s-io-v1-events-list-limit5-page1.txt");
    let r = c.get("/apis/events.k8s.io/v1/events?limit=5").await;
    assert_same_list(&r, &f);
    let mine = decode_token(r.json()["metadata"]["continue"].as_str().unwrap());
    let theirs = decode_token(f.json()["metadata"]["continue"].as_str().unwrap());
    assert_eq!(mine["start"], theirs["start"]);
    assert_eq!(r.json()["metadata"]["remainingItemCount"], 37);
}

#[tokio::test]
async fn status_bodies_equal_the_recorded_ones() {
    let opts = EmulatorOptions {
        tokens: vec![
            ("admin-token".into(), "admin".into()),
            ("viewer-token".into(), "viewer".into()),
        ],
        viewer_users: vec!["viewer".into()],
        ..EmulatorOptions::default()
    };
    let emu = Emulator::start(opts).await.unwrap();
    load_fixture_events(&emu);
    let c = Client::new(&emu);
    let viewer = c.clone().token(Some("viewer-token"));
    let cases: Vec<(&str, Resp)> = vec![
        ("error-401-no-token.txt", c.clone().token(None).get("/api/v1/events").await),
        ("error-401-bad-token.txt", c.clone().token(Some("nope")).get("/api/v1/events").await),
        (
            "error-403-viewer-list-configmaps.txt",
            viewer.get("/api/v1/namespaces/fx/configmaps").await,
        ),
        (
            "error-403-viewer-watch-configmaps.txt",
            viewer.get("/api/v1/namespaces/fx/configmaps?watch=1&timeoutSeconds=5").await,
        ),
        ("error-404-unknown-resource-path.txt", c.get("/api/v1/namespaces/fx/eventz").await),
        ("error-404-event-not-found.txt", c.get("/api/v1/namespaces/fx/events/no-such-event").await),
        (
            "error-404-event-in-unknown-namespace.txt",
            c.get("/api/v1/namespaces/no-such-ns/events/no-such-event").await,
        ),
        ("error-400-bad-fieldselector.txt", c.get("/api/v1/events?fieldSelector=foo%3Dbar").await),
        (
            "error-400-malformed-fieldselector.txt",
            c.get("/api/v1/events?fieldSelector=involvedObject.kind%3D%3D%3DPod%2C%28").await,
        ),
        (
            "error-400-bad-labelselector.txt",
            c.get("/api/v1/events?labelSelector=app%20in%20%28a").await,
        ),
        (
            "core-v1-events-list-continue-malformed-400.txt",
            c.get("/api/v1/events?limit=5&continue=not-a-token").await,
        ),
        (
            "error-422-resourceversionmatch-without-resourceversion.txt",
            c.get("/api/v1/events?resourceVersionMatch=Exact").await,
        ),
        (
            "configmaps-watch-sendinitialevents-featuregate-off.txt",
            c.get("/api/v1/namespaces/fx/events?allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=3&watch=1").await,
        ),
    ];
    for (fx, r) in cases {
        let f = Fixture::load(fx);
        assert_eq!(
            r.status.as_u16() as u64,
            f.header["status"].as_u64().unwrap(),
            "{fx}"
        );
        assert_eq!(r.text(), f.text(), "{fx}");
        // Header names and order (values differ: ids and dates).
        let want: Vec<String> = f.header["headers"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let got: Vec<String> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want_sorted, "{fx}: header names");
        assert_eq!(
            r.header("content-length"),
            Some(f.body.len().to_string()),
            "{fx}"
        );
    }
    // viewer may read events (viewer-list-events-allowed.txt)
    let f = Fixture::load("viewer-list-events-allowed.txt");
    let r = viewer.get(&f.request_target()).await;
    assert_eq!(r.status, 200);
    assert_eq!(names(&r.json()), f.names());
}

#[tokio::test]
async fn expired_and_future_resource_versions() {
    let (emu, c) = loaded().await;
    // A continue token minted before compaction (rv 300 < compacted).
    let before = c.get("/api/v1/events?limit=5").await.json();
    let tok = before["metadata"]["continue"].as_str().unwrap().to_string();
    let old_rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    emu.create_event(EventSpec::simple("fx", "Pod", "late", "Started", "m"));
    emu.compact();

    let f = Fixture::load("core-v1-events-list-exact-compacted-rv-410.txt");
    let r = c
        .get(&format!(
            "/api/v1/events?resourceVersion={old_rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (410, f.text()));
    let f = Fixture::load("events-k8s-io-v1-events-list-exact-compacted-rv-410.txt");
    let r = c
        .get(&format!(
            "/apis/events.k8s.io/v1/events?resourceVersion={old_rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (410, f.text()));
    let f = Fixture::load("core-v1-events-list-rv-with-limit-compacted-410.txt");
    let r = c
        .get(&format!("/api/v1/events?limit=5&resourceVersion={old_rv}"))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (410, f.text()));

    // The expired continue token: same body, including the fresh rv:-1 token (same start key).
    let f = Fixture::load("core-v1-events-list-continue-expired-410.txt");
    let r = c
        .get(&format!("/api/v1/events?limit=5&continue={tok}"))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (410, f.text()));
    // ... and that token continues at the latest revision.
    let fresh = r.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .get(&format!("/api/v1/events?limit=5&continue={fresh}"))
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(
        j["metadata"]["resourceVersion"].as_str().unwrap(),
        emu.current_resource_version()
    );
    let inconsistent = Fixture::load("core-v1-events-list-continue-inconsistent-token.txt");
    assert_eq!(names(&j), inconsistent.names());
    assert_eq!(
        decode_token(j["metadata"]["continue"].as_str().unwrap())["start"],
        decode_token(
            inconsistent.json()["metadata"]["continue"]
                .as_str()
                .unwrap()
        )["start"]
    );

    // NotOlderThan with an old RV: served at the current revision.
    let r = c
        .get(&format!("/api/v1/namespaces/fx/events?limit=2&resourceVersion={old_rv}&resourceVersionMatch=NotOlderThan"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["metadata"]["resourceVersion"].as_str().unwrap(),
        emu.current_resource_version()
    );
    assert_eq!(
        names(&r.json()),
        Fixture::load("core-v1-events-list-notolderthan-compacted-rv.txt").names()
    );

    // Future RV on a list: 504 with the recorded shape.
    let f = Fixture::load("core-v1-events-list-future-rv.txt");
    let r = c.get(&f.request_target()).await;
    assert_eq!(r.status, 504);
    let want = f.text().replace(
        "current: 381",
        &format!("current: {}", emu.current_resource_version()),
    );
    assert_eq!(r.text(), want);
}

#[tokio::test]
async fn compacted_watch_gets_the_recorded_error_frame() {
    let (emu, c) = loaded().await;
    let old = emu.current_resource_version();
    emu.create_event(EventSpec::simple("fx", "Pod", "a", "Started", "m"));
    emu.create_event(EventSpec::simple("fx", "Pod", "b", "Started", "m"));
    emu.compact();
    for (path, fx) in [
        ("/api/v1/events", "core-v1-events-watch-compacted-rv.txt"),
        (
            "/api/v1/namespaces/fx/events",
            "core-v1-events-watch-compacted-rv-namespace-fx-bookmarks.txt",
        ),
        (
            "/apis/events.k8s.io/v1/events",
            "events-k8s-io-v1-events-watch-compacted-rv.txt",
        ),
    ] {
        let f = Fixture::load(fx);
        let mut w = c
            .watch(&format!(
                "{path}?allowWatchBookmarks=true&resourceVersion={old}&timeoutSeconds=10&watch=1"
            ))
            .await;
        assert_eq!(w.status, 200);
        assert_eq!(w.headers.get("transfer-encoding").unwrap(), "chunked");
        let (frames, end) = w.drain(std::time::Duration::from_secs(5)).await;
        assert_eq!(end, common::Next::End(vec![]), "closes at once, cleanly");
        assert_eq!(frames.len(), 1);
        let mut got = frames[0].clone();
        got.push(b'\n');
        assert_eq!(String::from_utf8(got).unwrap(), f.text(), "{fx}");
    }
}

#[tokio::test]
async fn watch_frames_have_the_recorded_shape() {
    let (emu, c) = loaded().await;
    let from = emu.current_resource_version();
    let f = Fixture::load("core-v1-events-watch-fx-bookmarks.txt");
    let fe = Fixture::load("events-k8s-io-v1-events-watch-fx-bookmarks.txt");
    let mut core = c
        .watch(&format!("/api/v1/namespaces/fx/events?allowWatchBookmarks=true&resourceVersion={from}&timeoutSeconds=75&watch=1"))
        .await;
    let mut v1 = c
        .watch(&format!("/apis/events.k8s.io/v1/namespaces/fx/events?allowWatchBookmarks=true&resourceVersion={from}&timeoutSeconds=75&watch=1"))
        .await;
    // Replay the recorded watch's first object as a create, then a repeat and a delete.
    let first: Value = serde_json::from_str(f.text().lines().next().unwrap()).unwrap();
    let obj = serde_json::to_string(&first["object"]).unwrap();
    let added = emu.import_core_event_json(&obj).unwrap();
    let bumped = emu.bump_event("fx", &added.name).unwrap();
    assert!(emu.delete_event("fx", &added.name));
    let deleted_rv = emu.current_resource_version();
    for (w, fx) in [(&mut core, &f), (&mut v1, &fe)] {
        let recorded: Vec<String> = fx.text().lines().map(str::to_string).collect();
        assert_eq!(recorded.len(), 11);
        // The ADDED frame is the recorded one (same object, same view), byte for byte.
        let a_raw = w.line().await;
        assert_eq!(a_raw, recorded[0]);
        let a: Value = serde_json::from_str(&a_raw).unwrap();
        let m = w.frame().await;
        let d_raw = w.line().await;
        let d: Value = serde_json::from_str(&d_raw).unwrap();
        assert_eq!(
            [&a["type"], &m["type"], &d["type"]],
            ["ADDED", "MODIFIED", "DELETED"]
        );
        assert_eq!(
            a["object"]["metadata"]["resourceVersion"],
            added.resource_version
        );
        assert_eq!(
            m["object"]["metadata"]["resourceVersion"],
            bumped.resource_version
        );
        // DELETED carries the deletion revision, like the recorded frames (312, 314).
        assert_eq!(
            d["object"]["metadata"]["resourceVersion"],
            deleted_rv.as_str()
        );
        assert_eq!(
            d["object"]["metadata"]["uid"],
            a["object"]["metadata"]["uid"]
        );
        let rec_deleted = recorded
            .iter()
            .find(|l| l.starts_with("{\"type\":\"DELETED\""))
            .unwrap();
        assert_eq!(key_order(&d_raw), key_order(rec_deleted));
        assert_eq!(
            nested_key_order(&d_raw, &["object"]),
            nested_key_order(rec_deleted, &["object"])
        );
        // MODIFIED of a legacy event: count and lastTimestamp moved on.
        if fx.header["request"].as_str().unwrap().contains("/api/v1/") {
            assert_eq!(m["object"]["count"], 2);
        } else {
            assert_eq!(m["object"]["deprecatedCount"], 2);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn watch_without_rv_sends_synthetic_added_ordered_by_key() {
    let (emu, c) = loaded().await;
    let f = Fixture::load("core-v1-events-watch-no-rv-fieldselector.txt");
    let recorded: Vec<String> = f.text().lines().map(str::to_string).collect();
    // One of the recorded objects was written after the 42 listed ones: add it too.
    for line in &recorded {
        let v: Value = serde_json::from_str(line).unwrap();
        let _ = emu.import_core_event_json(&serde_json::to_string(&v["object"]).unwrap());
    }
    // An event that does not match the selector must not show up.
    emu.create_event(EventSpec::simple("fx", "Pod", "other", "Started", "m"));
    let mut w = c.watch(&f.request_target()).await;
    for rec in &recorded {
        assert_eq!(&w.line().await, rec);
    }
    // then live changes, then the clean end at timeoutSeconds=3
    let mut dep = EventSpec::simple("fx", "Deployment", "web", "ScalingReplicaSet", "up");
    dep.reporting_component = "deployment-controller".into();
    let live = emu.create_event(dep);
    let got = w.frame().await;
    assert_eq!(got["type"], "ADDED");
    assert_eq!(got["object"]["metadata"]["name"], live.name.as_str());
    let (rest, end) = w.drain(std::time::Duration::from_secs(10)).await;
    assert!(rest.is_empty());
    assert_eq!(end, common::Next::End(vec![]));
}

#[tokio::test]
async fn pretty_printing_for_curl_like_clients() {
    let (_emu, c) = loaded().await;
    let curl = c.clone().user_agent("curl/8.5.0");
    let r = curl
        .get("/api/v1/namespaces/fx/events/fx-pod-0.18ebbf51f6a05586")
        .await;
    // The recorded answer is the created object; ours is the same object read back.
    let f = Fixture::load("core-v1-event-create-201-curl-useragent-pretty.txt");
    assert_eq!(r.text(), f.text());
    assert!(!r.body.ends_with(b"\n"));
    let r = c
        .get("/api/v1/namespaces/fx/events/fx-pod-0.18ebbf51f6a05586?pretty=true")
        .await;
    assert!(r.text().starts_with("{\n  \"kind\": \"Event\""));
}

#[tokio::test]
async fn leases_behave_like_the_recorded_leader_election() {
    let emu = start().await;
    let c = Client::new(&emu).user_agent("fixture-recorder/1.0");
    let path = "/apis/coordination.k8s.io/v1/namespaces/fx/leases";
    let create = Fixture::load("lease-create-201.txt");
    let body = create.header["request_body"].as_str().unwrap();
    let r = c.request("POST", path, Some(body)).await;
    assert_eq!(r.status, 201);
    // Same object modulo uid, timestamps and resourceVersion.
    let mask = |v: &Value| {
        let mut v = v.clone();
        v["metadata"]["uid"] = Value::Null;
        v["metadata"]["resourceVersion"] = Value::Null;
        v["metadata"]["creationTimestamp"] = Value::Null;
        v["metadata"]["managedFields"][0]["time"] = Value::Null;
        v
    };
    assert_eq!(mask(&r.json()), mask(&create.json()));
    assert_eq!(key_order(&r.text()), key_order(&create.text()));
    let rv = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        rv,
        emu.current_resource_version(),
        "leases share the global revision"
    );

    let again = Fixture::load("lease-create-again-409-already-exists.txt");
    let r = c.request("POST", path, Some(body)).await;
    assert_eq!((r.status.as_u16(), r.text()), (409, again.text()));

    let got = c.get(&format!("{path}/fx-collector-leader")).await;
    assert_eq!(
        mask(&got.json()),
        mask(&Fixture::load("lease-get-200.txt").json())
    );

    // renew with the current RV
    let renew = Fixture::load("lease-update-renew-200.txt");
    let req = renew.header["request_body"].as_str().unwrap().replace(
        "\"resourceVersion\":\"352\"",
        &format!("\"resourceVersion\":\"{rv}\""),
    );
    let r = c
        .request("PUT", &format!("{path}/fx-collector-leader"), Some(&req))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(mask(&r.json()), mask(&renew.json()));
    assert_ne!(
        r.json()["metadata"]["resourceVersion"].as_str().unwrap(),
        rv
    );

    // another candidate with the stale RV: 409 Conflict
    let stale = Fixture::load("lease-update-stale-rv-409-conflict.txt");
    let req = stale.header["request_body"].as_str().unwrap().replace(
        "\"resourceVersion\":\"352\"",
        &format!("\"resourceVersion\":\"{rv}\""),
    );
    let r = c
        .request("PUT", &format!("{path}/fx-collector-leader"), Some(&req))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (409, stale.text()));
    assert_eq!(
        emu.lease_holder("fx", "fx-collector-leader").as_deref(),
        Some("collector-0_6f1c2b")
    );

    let no_rv = Fixture::load("lease-update-without-resourceversion-422.txt");
    let r = c
        .request(
            "PUT",
            &format!("{path}/fx-collector-leader"),
            Some(no_rv.header["request_body"].as_str().unwrap()),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (422, no_rv.text()));

    let nf = Fixture::load("lease-get-not-found-404.txt");
    let r = c.get(&format!("{path}/no-such-lease")).await;
    assert_eq!((r.status.as_u16(), r.text()), (404, nf.text()));

    let list = c.get(path).await.json();
    assert_eq!(list["kind"], "LeaseList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("kind").is_none());
}
