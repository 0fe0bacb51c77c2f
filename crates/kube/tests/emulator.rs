//! End-to-end tests against the Kubernetes API emulator: list+watch over TLS, TLS and
//! authentication failures with clear messages, token rotation mid-watch, kubeconfig with a
//! client certificate, compaction gaps, garbage frames, cut and empty watches.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec, Faults};
use kubetrail_kube::{
    Environment, ExponentialBackoff, GapInfo, GapReason, HttpApi, KubeClient,
    KubeConnectionOptions, ResourcePath, Selectors, WatchEventType, Watcher, WatcherConfig,
    WatcherEvent, WatcherStats,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    ca: PathBuf,
    token: PathBuf,
}

async fn setup(opts: EmulatorOptions) -> Setup {
    let emu = Emulator::start(opts).await.expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    emu.write_ca_file(&ca).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-token\n").unwrap();
    Setup {
        emu,
        dir,
        ca,
        token,
    }
}

impl Setup {
    fn options(&self, extra: &[(&str, &str)]) -> KubeConnectionOptions {
        let url = self.emu.url();
        let ca = self.ca.display().to_string();
        let token = self.token.display().to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("kube_url", &url),
            ("kube_ca_file", &ca),
            ("kube_token_file", &token),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k, v));
        }
        let mut section = Section::from_pairs(SectionKind::Input, "kubernetes_events", &pairs);
        KubeConnectionOptions::from_section(&mut section).unwrap()
    }

    fn client(&self, extra: &[(&str, &str)]) -> KubeClient {
        let env = Environment::isolated(self.dir.path().join("no-service-account"));
        let resolved = self.options(extra).resolve(&env).unwrap();
        KubeClient::new(&resolved).unwrap()
    }
}

fn config() -> WatcherConfig {
    WatcherConfig {
        expected_kind: Some("Event".into()),
        page_limit: 3,
        watch_timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(500),
        ..WatcherConfig::default()
    }
}

fn watcher(client: &KubeClient, ns: Option<&str>, resume: Option<String>) -> Watcher<HttpApi> {
    let api = HttpApi::new(
        client.clone(),
        ResourcePath::core_v1_events(ns).unwrap(),
        Selectors::default(),
    );
    let cfg = config();
    let backoff = ExponentialBackoff::new(cfg.backoff_base, cfg.backoff_cap);
    Watcher::new(api, cfg, backoff, resume)
}

/// Runs a watcher in a task; its events (errors as text) arrive on a bounded channel.
fn spawn(
    mut w: Watcher<HttpApi>,
) -> (
    mpsc::Receiver<Result<WatcherEvent, String>>,
    Arc<WatcherStats>,
) {
    let stats = w.stats();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let ev = w.next().await.map_err(|e| e.to_string());
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    (rx, stats)
}

async fn next(
    rx: &mut mpsc::Receiver<Result<WatcherEvent, String>>,
) -> Result<WatcherEvent, String> {
    timeout(WAIT, rx.recv())
        .await
        .expect("the watcher answers in time")
        .expect("the watcher runs")
}

/// The next event, which must be a relist after a gap.
async fn next_gap(rx: &mut mpsc::Receiver<Result<WatcherEvent, String>>) -> GapInfo {
    match next(rx).await {
        Ok(WatcherEvent::ListStarted {
            after_gap: Some(gap),
        }) => gap,
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// Receives until every uid in `want` was seen in list pages or frames; returns what was seen.
async fn collect_until(
    rx: &mut mpsc::Receiver<Result<WatcherEvent, String>>,
    want: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        match next(rx).await {
            Ok(WatcherEvent::ListPage { items, .. }) => {
                seen.extend(items.into_iter().map(|o| o.uid))
            }
            Ok(WatcherEvent::Frames { items, .. }) => {
                seen.extend(items.into_iter().map(|(_, o)| o.uid))
            }
            _ => {}
        }
    }
    seen
}

fn create(emu: &Emulator, ns: &str, name: &str) -> kubetrail_emulator::EventRef {
    emu.create_event(EventSpec::simple(
        ns,
        "Pod",
        name,
        "BackOff",
        format!("back-off {name}"),
    ))
}

#[tokio::test]
async fn lists_in_pages_then_watches_over_tls() {
    let s = setup(EmulatorOptions::default()).await;
    let mut created: Vec<String> = (0..7)
        .map(|i| create(&s.emu, "fx", &format!("pod-{i}")).uid)
        .collect();
    create(&s.emu, "other", "elsewhere");
    let (mut rx, stats) = spawn(watcher(&s.client(&[]), Some("fx"), None));

    assert!(matches!(
        next(&mut rx).await,
        Ok(WatcherEvent::ListStarted { after_gap: None })
    ));
    let mut listed = Vec::new();
    let mut pages = Vec::new();
    let list_rv = loop {
        let Ok(WatcherEvent::ListPage { items, last, .. }) = next(&mut rx).await else {
            panic!("expected a page")
        };
        pages.push(items.len());
        listed.extend(items.into_iter().map(|o| {
            assert_eq!(o.namespace.as_deref(), Some("fx"));
            o.uid
        }));
        if let Some(rv) = last {
            break rv;
        }
    };
    assert_eq!(
        pages,
        vec![3, 3, 1],
        "pages of kube_request_limit items, never one unpaged list"
    );
    listed.sort();
    created.sort();
    assert_eq!(listed, created);

    let a = create(&s.emu, "fx", "late-a");
    let b = s.emu.bump_event("fx", &a.name).unwrap();
    assert!(s.emu.delete_event("fx", &a.name));
    let mut changes = Vec::new();
    let mut last_rv = list_rv.clone();
    while changes.len() < 3 {
        if let Ok(WatcherEvent::Frames {
            items,
            resource_version,
        }) = next(&mut rx).await
        {
            changes.extend(
                items
                    .into_iter()
                    .map(|(t, o)| (t, o.uid, o.resource_version)),
            );
            last_rv = resource_version;
        }
    }
    assert_eq!(
        changes[0],
        (
            WatchEventType::Added,
            a.uid.clone(),
            a.resource_version.clone()
        )
    );
    assert_eq!(
        changes[1],
        (
            WatchEventType::Modified,
            a.uid.clone(),
            b.resource_version.clone()
        )
    );
    assert_eq!(
        (changes[2].0, &changes[2].1),
        (WatchEventType::Deleted, &a.uid)
    );
    assert_eq!(last_rv, changes[2].2);
    let c = stats.counters();
    assert_eq!((c.list_requests, c.watch_requests, c.relists), (3, 1, 0));
    assert_eq!(s.emu.stats().lists, 3);
}

#[tokio::test]
async fn events_k8s_io_and_field_selectors() {
    let s = setup(EmulatorOptions::default()).await;
    let pod = create(&s.emu, "fx", "p");
    s.emu.create_event(EventSpec::simple(
        "fx",
        "Deployment",
        "d",
        "ScalingReplicaSet",
        "scaled",
    ));
    // The same selection has a different field name in each API view.
    for (path, field) in [
        (
            ResourcePath::core_v1_events(Some("fx")).unwrap(),
            "involvedObject.kind=Pod",
        ),
        (
            ResourcePath::events_k8s_io_v1(Some("fx")).unwrap(),
            "regarding.kind=Pod",
        ),
    ] {
        let sel = Selectors {
            field_selector: Some(field.into()),
            label_selector: None,
        };
        let api = HttpApi::new(s.client(&[]), path, sel);
        let mut w = Watcher::new(
            api,
            config(),
            ExponentialBackoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            None,
        );
        assert!(matches!(
            w.next().await.unwrap(),
            WatcherEvent::ListStarted { .. }
        ));
        let WatcherEvent::ListPage { items, last, .. } = w.next().await.unwrap() else {
            panic!()
        };
        assert!(last.is_some());
        assert_eq!(
            items.iter().map(|o| o.uid.clone()).collect::<Vec<_>>(),
            vec![pod.uid.clone()]
        );
    }
}

#[tokio::test]
async fn a_wrong_ca_names_the_url_and_the_ca_file() {
    let s = setup(EmulatorOptions::default()).await;
    let wrong = s.dir.path().join("wrong-ca.crt");
    std::fs::write(&wrong, Emulator::generate_unrelated_ca_pem()).unwrap();
    let client = s.client(&[("kube_ca_file", wrong.to_str().unwrap())]);
    let err = client
        .get("/api/v1/events?limit=1")
        .await
        .unwrap_err()
        .to_string();
    let expected = format!(
        "TLS handshake with {} failed: invalid peer certificate: UnknownIssuer (CA file: {})",
        s.emu.url(),
        wrong.display()
    );
    assert_eq!(err, expected);

    // The watcher reports the same text and keeps retrying.
    let (mut rx, _) = spawn(watcher(&client, None, None));
    assert!(matches!(
        next(&mut rx).await,
        Ok(WatcherEvent::ListStarted { .. })
    ));
    assert_eq!(next(&mut rx).await.unwrap_err(), expected);
    assert_eq!(next(&mut rx).await.unwrap_err(), expected);
}

#[tokio::test]
async fn a_hostname_mismatch_is_rejected() {
    let s = setup(EmulatorOptions {
        cert_hostnames: vec!["kube.example".into()],
        ..EmulatorOptions::default()
    })
    .await;
    create(&s.emu, "fx", "x");
    let err = s
        .client(&[])
        .get("/api/v1/events?limit=1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not valid for the name \"127.0.0.1\""),
        "{err}"
    );
    assert!(err.contains(&s.emu.url()), "{err}");
    assert!(err.contains("kube.example"), "{err}");

    // tls.vhost names what the certificate holds: accepted.
    let ok = s.client(&[("tls.vhost", "kube.example")]);
    ok.get("/api/v1/events?limit=1").await.unwrap();
    // And a vhost the certificate does not hold is rejected, even though the IP is right.
    let s2 = setup(EmulatorOptions::default()).await;
    let err = s2
        .client(&[("tls.vhost", "other.example")])
        .get("/api/v1/events?limit=1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"other.example\""), "{err}");
    // tls.verify off accepts it.
    s.client(&[("tls.verify", "off")])
        .get("/api/v1/events?limit=1")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_token_loses_nothing() {
    let s = setup(EmulatorOptions {
        tokens: vec![("token-1".into(), "admin".into())],
        ..EmulatorOptions::default()
    })
    .await;
    std::fs::write(&s.token, "token-1").unwrap();
    let mut want = BTreeSet::new();
    for i in 0..5 {
        want.insert(create(&s.emu, "fx", &format!("before-{i}")).uid);
    }
    let (mut rx, stats) = spawn(watcher(&s.client(&[]), None, None));
    collect_until(&mut rx, &want).await;

    // The kubelet rotates the projected token; the old one is revoked (its watch is cut).
    let mut want = BTreeSet::new();
    s.emu.add_token("token-2", "admin");
    std::fs::write(&s.token, "token-2\n").unwrap();
    want.insert(create(&s.emu, "fx", "during").uid);
    s.emu.revoke_token("token-1");
    for i in 0..5 {
        want.insert(create(&s.emu, "fx", &format!("after-{i}")).uid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = collect_until(&mut rx, &want).await;
    assert_eq!(seen, want, "every event once, nothing else");
    assert!(
        s.emu.stats().unauthorized >= 1,
        "the old token was refused once"
    );
    assert_eq!(
        stats.counters().relists,
        0,
        "no gap: resumed from the last resourceVersion"
    );
}

#[tokio::test]
async fn a_kubeconfig_with_a_client_certificate_works() {
    let s = setup(EmulatorOptions::default()).await;
    let ev = create(&s.emu, "fx", "kc");
    let (cert, key) = s.emu.issue_client_cert("admin");
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: emu\nclusters:\n- name: emu\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: emu\n  context: {{cluster: emu, user: admin, namespace: fx}}\n",
        s.emu.url(),
        b64(&s.emu.ca_pem()),
        b64(&cert),
        b64(&key)
    );
    let path = s.dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let mut section = Section::from_pairs(
        SectionKind::Input,
        "kubernetes_events",
        &[("kubeconfig", path.to_str().unwrap())],
    );
    let opts = KubeConnectionOptions::from_section(&mut section).unwrap();
    let resolved = opts
        .resolve(&Environment::isolated(s.dir.path().join("no-sa")))
        .unwrap();
    assert_eq!(resolved.namespace.as_deref(), Some("fx"));
    let client = KubeClient::new(&resolved).unwrap();
    let mut w = watcher(&client, Some("fx"), None);
    w.next().await.unwrap();
    let WatcherEvent::ListPage { items, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(items[0].uid, ev.uid);

    // Without the certificate (and no token) the server refuses: a clear 401.
    std::fs::write(
        &path,
        format!(
            "current-context: emu\nclusters:\n- name: emu\n  cluster: {{server: '{}', certificate-authority-data: {}}}\ncontexts:\n- name: emu\n  context: {{cluster: emu}}\n",
            s.emu.url(),
            b64(&s.emu.ca_pem())
        ),
    )
    .unwrap();
    let resolved = opts
        .resolve(&Environment::isolated(s.dir.path().join("no-sa")))
        .unwrap();
    let err = KubeClient::new(&resolved)
        .unwrap()
        .get("/api/v1/events")
        .await
        .unwrap_err();
    assert_eq!(err.api_error().map(|e| e.code), Some(401));
}

#[tokio::test]
async fn forbidden_is_a_clear_error() {
    let s = setup(EmulatorOptions {
        tokens: vec![("m-token".into(), "mallory".into())],
        forbidden_users: vec!["mallory".into()],
        ..EmulatorOptions::default()
    })
    .await;
    std::fs::write(&s.token, "m-token").unwrap();
    let (mut rx, stats) = spawn(watcher(&s.client(&[]), Some("fx"), None));
    assert!(matches!(
        next(&mut rx).await,
        Ok(WatcherEvent::ListStarted { .. })
    ));
    let err = next(&mut rx).await.unwrap_err();
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(
        err.contains("User \"mallory\" cannot list resource \"events\""),
        "{err}"
    );
    assert!(
        err.contains("/api/v1/namespaces/fx/events?limit=3"),
        "{err}"
    );
    assert!(
        next(&mut rx).await.is_err(),
        "keeps retrying (with backoff)"
    );
    assert!(stats.counters().api_errors >= 2);
}

#[tokio::test]
async fn compaction_while_away_becomes_a_gap_and_a_relist() {
    let s = setup(EmulatorOptions::default()).await;
    let first: Vec<String> = (0..4)
        .map(|i| create(&s.emu, "fx", &format!("a{i}")).uid)
        .collect();
    let client = s.client(&[]);
    let mut w = watcher(&client, None, None);
    let committed = loop {
        if let WatcherEvent::ListPage { last: Some(rv), .. } = w.next().await.unwrap() {
            break rv;
        }
    };
    drop(w);

    // While the agent is down: more events, then etcd compacts.
    let later: Vec<String> = (0..4)
        .map(|i| create(&s.emu, "fx", &format!("b{i}")).uid)
        .collect();
    s.emu.compact();

    let (mut rx, stats) = spawn(watcher(&client, None, Some(committed.clone())));
    let gap = next_gap(&mut rx).await;
    assert_eq!(
        gap.from_resource_version.as_deref(),
        Some(committed.as_str())
    );
    assert_eq!(gap.reason, GapReason::WatchExpired);
    let want: BTreeSet<String> = first.iter().chain(&later).cloned().collect();
    collect_until(&mut rx, &want).await;
    let fresh = create(&s.emu, "fx", "after-relist").uid;
    collect_until(&mut rx, &BTreeSet::from([fresh])).await;
    assert_eq!(stats.counters().relists, 1);
}

/// State kept, cluster rebuilt: the committed resourceVersion is ahead of the new server's.
/// A watch from it would answer nothing until its timeout, forever; the probe when resuming
/// finds it out and the watcher relists at once, with a gap.
#[tokio::test]
async fn a_resource_version_ahead_of_the_server_relists_at_once() {
    let s = setup(EmulatorOptions::default()).await;
    let uids: BTreeSet<String> = (0..4)
        .map(|i| create(&s.emu, "fx", &format!("r{i}")).uid)
        .collect();
    let client = s.client(&[]);
    let current: u64 = s.emu.current_resource_version().parse().unwrap();
    let ahead = (current + 100_000).to_string();
    let (mut rx, stats) = spawn(watcher(&client, None, Some(ahead.clone())));
    let gap = next_gap(&mut rx).await;
    assert_eq!(gap.reason, GapReason::ResourceVersionTooLarge);
    assert_eq!(gap.from_resource_version.as_deref(), Some(ahead.as_str()));
    assert!(
        gap.message.contains("Too large resource version"),
        "{}",
        gap.message
    );
    collect_until(&mut rx, &uids).await;
    let fresh = create(&s.emu, "fx", "after-relist").uid;
    collect_until(&mut rx, &BTreeSet::from([fresh])).await;
    assert_eq!(stats.counters().relists, 1);
}

#[tokio::test]
async fn garbage_frames_are_counted_and_collection_goes_on() {
    let s = setup(EmulatorOptions::default()).await;
    s.emu.set_faults(Faults {
        garbage_frames: true,
        ..Faults::default()
    });
    let (mut rx, stats) = spawn(watcher(
        &s.client(&[]),
        None,
        Some(s.emu.current_resource_version()),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let want: BTreeSet<String> = (0..10)
        .map(|i| create(&s.emu, "fx", &format!("g{i}")).uid)
        .collect();
    collect_until(&mut rx, &want).await;
    let c = stats.counters();
    assert!(c.malformed_frames + c.unexpected_kind > 0, "{c:?}");
    assert_eq!(c.relists, 0);
}

#[tokio::test]
async fn cut_watches_lose_nothing() {
    let s = setup(EmulatorOptions::default()).await;
    s.emu.set_faults(Faults {
        cut_watch_after_frames: Some(2),
        ..Faults::default()
    });
    let (mut rx, stats) = spawn(watcher(
        &s.client(&[]),
        None,
        Some(s.emu.current_resource_version()),
    ));
    let mut want = BTreeSet::new();
    for i in 0..12 {
        want.insert(create(&s.emu, "fx", &format!("c{i}")).uid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    collect_until(&mut rx, &want).await;
    let c = stats.counters();
    assert!(c.watch_restarts >= 3, "{c:?}");
    assert_eq!(c.relists, 0, "a cut is not a gap: {c:?}");
}

#[tokio::test]
async fn empty_200_watches_relist_with_backoff() {
    let s = setup(EmulatorOptions::default()).await;
    create(&s.emu, "fx", "e");
    s.emu.set_faults(Faults {
        stale_watch_empty_200: true,
        ..Faults::default()
    });
    let (mut rx, stats) = spawn(watcher(
        &s.client(&[]),
        None,
        Some(s.emu.current_resource_version()),
    ));
    let Ok(WatcherEvent::ListStarted {
        after_gap: Some(gap),
    }) = next(&mut rx).await
    else {
        panic!()
    };
    assert_eq!(gap.reason, GapReason::EmptyWatch);
    // Keep consuming for 3 s: with a 20 ms base and a 500 ms cap, a few dozen requests at most.
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < end {
        let _ = timeout(Duration::from_millis(100), rx.recv()).await;
    }
    let emu = s.emu.stats();
    assert!(emu.watches >= 3, "{emu:?}");
    assert!(emu.watches < 40, "no busy loop: {emu:?}");
    assert!(stats.counters().empty_watches >= 3);

    // The quirk goes away: the watcher settles into a normal watch.
    s.emu.set_faults(Faults::default());
    let fresh = create(&s.emu, "fx", "settled").uid;
    collect_until(&mut rx, &BTreeSet::from([fresh])).await;
}

#[tokio::test]
async fn a_non_json_list_is_an_error_then_recovers() {
    let s = setup(EmulatorOptions::default()).await;
    let ev = create(&s.emu, "fx", "n");
    s.emu.set_faults(Faults {
        non_json_list_body: true,
        ..Faults::default()
    });
    let (mut rx, _) = spawn(watcher(&s.client(&[]), None, None));
    assert!(matches!(
        next(&mut rx).await,
        Ok(WatcherEvent::ListStarted { .. })
    ));
    let err = next(&mut rx).await.unwrap_err();
    assert!(err.contains("LIST") && err.contains("<html>"), "{err}");
    s.emu.set_faults(Faults::default());
    collect_until(&mut rx, &BTreeSet::from([ev.uid])).await;
}
