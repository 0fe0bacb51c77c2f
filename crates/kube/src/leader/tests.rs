//! Tests of the election state machine against a simulated apiserver holding one Lease
//! (resourceVersions from a counter, 409 on a stale write or an existing create, 404 when it is
//! missing), with faults per client, edits by hand, and paused time. The property test runs
//! two or three electors through random faults and checks that no two may emit at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use kubetrail_core::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::client::KubeError;
use crate::status::ApiError;

/// A wall clock that follows tokio's (paused) clock from a fixed start.
struct TestClock {
    start: Instant,
}

impl WallClock for TestClock {
    fn now(&self) -> Timestamp {
        let base = Timestamp::parse_rfc3339("2026-11-27T00:00:00Z").unwrap();
        Timestamp::from_unix_nanos(base.unix_nanos() + self.start.elapsed().as_nanos() as i64)
    }
}

/// Faults of one client of the simulated server.
#[derive(Clone, Default)]
struct ClientFaults {
    /// Every call is answered with this status.
    fail: Option<u16>,
    /// Writes are applied but their answers are lost (the client sees an error).
    lose_answers: bool,
    /// Each call takes this long before it reaches the server, and as long again back.
    delay: Duration,
}

#[derive(Default)]
struct SimState {
    lease: Option<Value>,
    rv: u64,
    faults: HashMap<usize, ClientFaults>,
    /// (client, verb, when).
    calls: Vec<(usize, &'static str, Instant)>,
}

/// The simulated apiserver.
#[derive(Clone, Default)]
struct Sim(Arc<Mutex<SimState>>);

impl Sim {
    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().unwrap()
    }

    fn api(&self, client: usize) -> SimApi {
        SimApi {
            sim: self.clone(),
            client,
        }
    }

    fn faults(&self, client: usize, f: ClientFaults) {
        self.state().faults.insert(client, f);
    }

    fn holder(&self) -> Option<String> {
        let s = self.state();
        let h = s.lease.as_ref()?["spec"]["holderIdentity"].as_str()?;
        (!h.is_empty()).then(|| h.to_string())
    }

    fn lease(&self) -> Option<Lease> {
        let s = self.state();
        s.lease
            .as_ref()
            .map(|v| Lease::from_json(v.to_string().as_bytes()).unwrap())
    }

    /// An edit by hand (like `kubectl edit`): a new resourceVersion.
    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.state();
        s.rv += 1;
        let rv = s.rv.to_string();
        if let Some(v) = s.lease.as_mut() {
            f(v);
            v["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    fn delete(&self) {
        let mut s = self.state();
        s.rv += 1;
        s.lease = None;
    }

    fn put(&self, mut v: Value) {
        let mut s = self.state();
        s.rv += 1;
        v["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        s.lease = Some(v);
    }

    fn calls(&self, client: usize, verb: &str) -> Vec<Instant> {
        self.state()
            .calls
            .iter()
            .filter(|(c, v, _)| *c == client && *v == verb)
            .map(|(_, _, t)| *t)
            .collect()
    }
}

struct SimApi {
    sim: Sim,
    client: usize,
}

fn api_error(code: u16, reason: &str) -> LeaseError {
    LeaseError::from(KubeError::Api {
        method: Method::PUT,
        url: "https://kube.test/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease".into(),
        error: Box::new(ApiError {
            code,
            reason: reason.into(),
            message: format!("status {code}"),
            retry_after: None,
            causes: Vec::new(),
        }),
    })
}

impl SimApi {
    async fn call(
        &self,
        verb: &'static str,
        f: impl FnOnce(&mut SimState) -> Result<Option<Lease>, LeaseError>,
    ) -> Result<Option<Lease>, LeaseError> {
        let faults = self
            .sim
            .state()
            .faults
            .get(&self.client)
            .cloned()
            .unwrap_or_default();
        tokio::time::sleep(faults.delay).await;
        let result = {
            let mut s = self.sim.state();
            s.calls.push((self.client, verb, Instant::now()));
            if let Some(code) = faults.fail {
                return Err(api_error(code, "InternalError"));
            }
            f(&mut s)
        };
        tokio::time::sleep(faults.delay).await;
        if faults.lose_answers && verb != "get" {
            return Err(LeaseError::Timeout(Duration::from_secs(1)));
        }
        result
    }
}

fn stored(s: &mut SimState, lease: &Lease) -> Lease {
    s.rv += 1;
    let mut v: Value = serde_json::from_slice(&lease.to_body()).unwrap();
    v["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    s.lease = Some(v.clone());
    Lease::from_json(v.to_string().as_bytes()).unwrap()
}

impl LeaseApi for SimApi {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.call("get", |s| {
            Ok(s.lease
                .as_ref()
                .map(|v| Lease::from_json(v.to_string().as_bytes()).unwrap()))
        })
        .await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let lease = lease.clone();
        self.call("create", move |s| {
            if s.lease.is_some() {
                return Err(api_error(409, "AlreadyExists"));
            }
            Ok(Some(stored(s, &lease)))
        })
        .await
        .map(|l| l.unwrap())
    }

    async fn update(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let lease = lease.clone();
        self.call("update", move |s| {
            let Some(current) = &s.lease else {
                return Err(api_error(404, "NotFound"));
            };
            if current["metadata"]["resourceVersion"].as_str() != lease.resource_version() {
                return Err(api_error(409, "Conflict"));
            }
            Ok(Some(stored(s, &lease)))
        })
        .await
        .map(|l| l.unwrap())
    }
}

fn elector(sim: &Sim, client: usize, holder: &str) -> Elector<SimApi> {
    elector_with(
        sim,
        client,
        LeaderElectionConfig::new("ns", "lease", holder),
    )
}

fn elector_with(sim: &Sim, client: usize, config: LeaderElectionConfig) -> Elector<SimApi> {
    Elector::with_clock(
        sim.api(client),
        config,
        HandoverBook::new(),
        Arc::new(TestClock {
            start: Instant::now(),
        }),
        fastrand::Rng::with_seed(client as u64 + 7),
    )
}

const S: Duration = Duration::from_secs(1);

/// Drives an elector for `d`: every event it yields, with the time.
async fn run_for(e: &mut Elector<SimApi>, d: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while let Ok(ev) = tokio::time::timeout_at(end, e.next()).await {
        out.push((Instant::now(), describe(&ev)));
    }
    out
}

fn describe(ev: &ElectionEvent) -> String {
    match ev {
        ElectionEvent::Acquired { term, .. } => format!("acquired {term}"),
        ElectionEvent::Lost { term, reason } => format!("lost {term}: {reason}"),
        ElectionEvent::Leader { holder } => format!("leader {holder:?}"),
        ElectionEvent::Failed(e) => format!("failed: {e}"),
    }
}

/// Runs an elector in its own task; its events come with their times.
fn spawn(mut e: Elector<SimApi>) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, ElectionEvent)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = e.next().await;
            if tx.send((Instant::now(), ev)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Makes `e` the leader of a fresh Lease and waits until it may emit.
async fn lead(e: &mut Elector<SimApi>) -> u64 {
    let ElectionEvent::Acquired {
        term, emit_from, ..
    } = e.next().await
    else {
        panic!("expected the Lease");
    };
    assert!(run_for(e, emit_from - Instant::now() + S).await.is_empty());
    assert!(e.fence().may_emit(term));
    term
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_is_created_and_emission_waits_a_lease_duration() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let t0 = Instant::now();
    let ElectionEvent::Acquired {
        term,
        emit_from,
        handover,
    } = a.next().await
    else {
        panic!()
    };
    assert_eq!((term, handover), (1, None));
    // The Lease may have been deleted under a live holder: a whole lease_duration first.
    assert_eq!(emit_from, t0 + 15 * S);
    assert!(!a.fence().may_emit(1));
    assert_eq!(sim.holder().as_deref(), Some("a_1"));
    let l = sim.lease().unwrap();
    assert_eq!(l.lease_duration(), Some(15 * S));
    assert_eq!(l.transitions(), 0);
    // Renewals every retry_period, with the book's positions in each.
    a.book().committed(
        "s",
        json!({"rv": "41"}),
        Some(Timestamp::from_unix_nanos(5)),
    );
    assert!(run_for(&mut a, 20 * S).await.is_empty());
    assert!(a.fence().may_emit(1));
    let renewals = sim.calls(0, "update");
    assert!((9..=11).contains(&renewals.len()), "{}", renewals.len());
    for w in renewals.windows(2) {
        assert_eq!(w[1] - w[0], 2 * S);
    }
    let h = Handover::parse(
        sim.lease()
            .unwrap()
            .annotation(CHECKPOINT_ANNOTATION)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(h.holder, "a_1");
    assert_eq!(h.streams["s"].position, json!({"rv": "41"}));
    assert_eq!(
        h.until.unix_nanos() - h.written.unix_nanos(),
        10_000_000_000
    );
}

fn held_by(holder: &str, renew_time: &str, handover: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "lease", "namespace": "ns", "uid": "u-1", "labels": {"app": "kubetrail"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": renew_time,
                 "renewTime": renew_time, "leaseTransitions": 4}
    });
    if let Some(h) = handover {
        v["metadata"]["annotations"] = json!({ CHECKPOINT_ANNOTATION: h });
    }
    v
}

#[tokio::test(start_paused = true)]
async fn expiry_is_judged_by_the_standbys_own_clock_not_the_records_times() {
    let sim = Sim::default();
    // A renewTime from long ago (another clock): still a whole lease_duration of waiting.
    let handover = r#"{"v":1,"holder":"b_2","written":"2001-01-01T00:00:00Z","until":"2001-01-01T00:00:10Z","streams":{"s":{"position":{"rv":"7"},"last":"2001-01-01T00:00:00Z"}}}"#;
    sim.put(held_by(
        "b_2",
        "2001-01-01T00:00:00.000000Z",
        Some(handover),
    ));
    let mut a = elector(&sim, 0, "a_1");
    let t0 = Instant::now();
    assert!(matches!(
        a.next().await,
        ElectionEvent::Leader { holder: Some(h) } if h == "b_2"
    ));
    let ElectionEvent::Acquired {
        emit_from,
        handover,
        ..
    } = a.next().await
    else {
        panic!()
    };
    // Taken exactly when the record had been unchanged for 15 s, and emitting at once.
    assert_eq!(Instant::now(), t0 + 15 * S);
    assert_eq!(emit_from, t0 + 15 * S);
    assert!(a.fence().may_emit(1));
    let h = handover.unwrap();
    assert_eq!(h.streams["s"].position, json!({"rv": "7"}));
    let l = sim.lease().unwrap();
    assert_eq!(l.holder(), Some("a_1"));
    assert_eq!(l.transitions(), 5);
    // What election does not own is kept; the handed-over positions are written back.
    assert_eq!(
        sim.state().lease.as_ref().unwrap()["metadata"]["labels"]["app"],
        "kubetrail"
    );
    let written = Handover::parse(l.annotation(CHECKPOINT_ANNOTATION).unwrap()).unwrap();
    assert_eq!(written.holder, "a_1");
    assert_eq!(written.streams["s"].position, json!({"rv": "7"}));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_keeps_renewing_is_never_taken_over() {
    let sim = Sim::default();
    let mut b = elector(&sim, 1, "b_2");
    lead(&mut b).await;
    let mut b_events = spawn(b);
    let mut a = elector(&sim, 0, "a_1");
    let events: Vec<String> = run_for(&mut a, 120 * S)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(events, vec!["leader Some(\"b_2\")"]);
    assert!(
        b_events.try_recv().is_err(),
        "the leader reported something"
    );
    // The standby polled with client-go's jitter: 2 s to 4.4 s apart, not all the same.
    let polls = sim.calls(0, "get");
    let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 25, "{}", gaps.len());
    assert!(
        gaps.iter()
            .all(|g| *g >= 2 * S && *g <= Duration::from_millis(4400)),
        "{gaps:?}"
    );
    assert!(gaps.iter().any(|g| *g != gaps[0]));
}

/// The leader cannot reach the apiserver: it stops emitting when its last successful renewal
/// is renew_deadline old, and the standby takes over only after lease_duration of the record
/// unchanged: never both at once.
#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_is_fenced_before_the_standby_takes_over() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    let fence_a = a.fence();
    let mut b = elector(&sim, 1, "b_2");
    assert_eq!(run_for(&mut b, 3 * S).await.len(), 1);
    sim.faults(
        0,
        ClientFaults {
            fail: Some(503),
            ..Default::default()
        },
    );
    let fenced_at = fence_a.until(term).unwrap();
    let mut a_events = spawn(a);
    let mut b_events = spawn(b);
    let (lost_at, lost) = loop {
        let (t, ev) = a_events.recv().await.unwrap();
        match ev {
            ElectionEvent::Failed(_) => assert!(fence_a.may_emit(term) || t >= fenced_at),
            other => break (t, other),
        }
    };
    assert!(matches!(
        lost,
        ElectionEvent::Lost {
            reason: LossReason::RenewDeadline(_),
            ..
        }
    ));
    assert_eq!(lost_at, fenced_at);
    assert!(!fence_a.may_emit(term));
    let (taken_at, ev) = b_events.recv().await.unwrap();
    let ElectionEvent::Acquired { emit_from, .. } = ev else {
        panic!("{}", describe(&ev))
    };
    // Emission of the two never overlaps, by at least lease_duration - renew_deadline.
    assert!(
        emit_from >= fenced_at + 5 * S,
        "{emit_from:?} {fenced_at:?}"
    );
    assert_eq!(taken_at, emit_from);
}

#[tokio::test(start_paused = true)]
async fn a_conflict_while_still_the_holder_renews_again_at_once() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    // Someone annotates the Lease by hand: the next renewal carries a stale resourceVersion.
    sim.edit(|v| v["metadata"]["annotations"]["team"] = json!("sre"));
    let t = Instant::now();
    let ev = a.next().await;
    assert!(
        matches!(ev, ElectionEvent::Failed(LeaseError::Conflict(_))),
        "{}",
        describe(&ev)
    );
    assert!(Instant::now() - t <= 2 * S);
    assert!(run_for(&mut a, 10 * S).await.is_empty());
    assert!(a.fence().may_emit(term));
    let l = sim.lease().unwrap();
    assert_eq!(l.holder(), Some("a_1"));
    assert_eq!(l.annotation("team"), Some("sre"), "the edit is kept");
}

#[tokio::test(start_paused = true)]
async fn a_conflict_from_another_holder_stops_emission_at_once() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    sim.edit(|v| v["spec"]["holderIdentity"] = json!("intruder"));
    let ev = a.next().await;
    assert!(
        matches!(&ev, ElectionEvent::Lost { reason: LossReason::TakenBy(Some(h)), .. } if h == "intruder"),
        "{}",
        describe(&ev)
    );
    assert!(!a.fence().may_emit(term));
    assert_eq!(a.fence().until(term), None);
    // The intruder never renews: after lease_duration of its record unchanged, a takes back.
    let t = Instant::now();
    let ev = a.next().await;
    assert!(matches!(&ev, ElectionEvent::Leader { holder: Some(h) } if h == "intruder"));
    let ElectionEvent::Acquired { term: t2, .. } = a.next().await else {
        panic!()
    };
    assert_eq!(t2, term + 1);
    assert!(Instant::now() - t >= 15 * S);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_is_created_again_by_its_holder_without_a_pause() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    a.book().committed("s", json!({"rv": "9"}), None);
    sim.delete();
    assert!(run_for(&mut a, 10 * S).await.is_empty());
    assert!(a.fence().may_emit(term));
    let l = sim.lease().unwrap();
    assert_eq!(l.holder(), Some("a_1"));
    let h = Handover::parse(l.annotation(CHECKPOINT_ANNOTATION).unwrap()).unwrap();
    assert_eq!(h.streams["s"].position, json!({"rv": "9"}));
    assert_eq!(sim.calls(0, "create").len(), 2);
}

/// The Lease is deleted while its holder cannot reach the apiserver: the standby leaves the
/// holder a lease_duration to create it again, then creates it, and since it cannot know
/// whether a holder is still active, emits only a whole lease_duration later, long after the
/// old holder's fence closed.
#[tokio::test(start_paused = true)]
async fn a_standby_that_creates_a_deleted_lease_waits_for_the_old_holders_fence() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    let fence_a = a.fence();
    let mut b = elector(&sim, 1, "b_2");
    assert_eq!(run_for(&mut b, 3 * S).await.len(), 1);
    sim.faults(
        0,
        ClientFaults {
            fail: Some(503),
            ..Default::default()
        },
    );
    let fenced_at = fence_a.until(term).unwrap();
    sim.delete();
    let deleted = Instant::now();
    let mut a_events = spawn(a);
    let mut b_events = spawn(b);
    let (_, ev) = b_events.recv().await.unwrap();
    assert!(
        matches!(ev, ElectionEvent::Leader { holder: None }),
        "{}",
        describe(&ev)
    );
    let (created, ev) = b_events.recv().await.unwrap();
    let ElectionEvent::Acquired { emit_from, .. } = ev else {
        panic!("{}", describe(&ev))
    };
    assert!(created - deleted >= 15 * S && created - deleted <= 20 * S);
    assert_eq!(emit_from, created + 15 * S);
    assert!(emit_from > fenced_at);
    // Meanwhile a gave up at its deadline.
    let (lost_at, ev) = loop {
        let (t, ev) = a_events.recv().await.unwrap();
        if !matches!(ev, ElectionEvent::Failed(_)) {
            break (t, ev);
        }
    };
    assert!(
        matches!(ev, ElectionEvent::Lost { .. }),
        "{}",
        describe(&ev)
    );
    assert_eq!(lost_at, fenced_at);
    // a comes back: it finds b's Lease and stands by.
    sim.faults(0, ClientFaults::default());
    tokio::time::sleep(30 * S).await;
    let mut seen = Vec::new();
    while let Ok((_, ev)) = a_events.try_recv() {
        seen.push(describe(&ev));
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("leader Some(\"b_2\")")
    );
    assert!(seen.iter().all(|s| !s.starts_with("acquired")), "{seen:?}");
    assert!(b_events.try_recv().is_err());
    assert_eq!(sim.holder().as_deref(), Some("b_2"));
}

/// Deleted under a live holder: the standby waits, the holder creates it again at its next
/// renewal with its handover, and nothing changes hands.
#[tokio::test(start_paused = true)]
async fn a_deleted_lease_is_left_to_its_live_holder_to_create_again() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    let fence_a = a.fence();
    a.book().committed("s", json!({"rv": "12"}), None);
    let mut b = elector(&sim, 1, "b_2");
    assert_eq!(run_for(&mut b, S).await.len(), 1);
    sim.delete();
    // b sees the Lease missing before a's next renewal (a is not running yet).
    let ev = b.next().await;
    assert!(
        matches!(ev, ElectionEvent::Leader { holder: None }),
        "{}",
        describe(&ev)
    );
    assert!(sim.lease().is_none());
    let mut a_events = spawn(a);
    let seen: Vec<String> = run_for(&mut b, 30 * S)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(seen, vec!["leader Some(\"a_1\")"]);
    while let Ok((_, ev)) = a_events.try_recv() {
        assert!(
            matches!(ev, ElectionEvent::Failed(_)),
            "a kept leading: {}",
            describe(&ev)
        );
    }
    assert!(fence_a.may_emit(term));
    let l = sim.lease().unwrap();
    assert_eq!(l.holder(), Some("a_1"));
    let h = Handover::parse(l.annotation(CHECKPOINT_ANNOTATION).unwrap()).unwrap();
    assert_eq!(h.streams["s"].position, json!({"rv": "12"}));
}

#[tokio::test(start_paused = true)]
async fn a_release_hands_the_lease_over_at_once() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    let mut b = elector(&sim, 1, "b_2");
    assert_eq!(run_for(&mut b, 5 * S).await.len(), 1);
    a.book().committed(
        "s",
        json!({"rv": "99"}),
        Some(Timestamp::parse_rfc3339("2026-11-27T00:00:30Z").unwrap()),
    );
    let released_at = Instant::now();
    assert!(a.release().await.unwrap());
    assert!(!a.fence().may_emit(term));
    assert_eq!(sim.holder(), None);
    let ElectionEvent::Acquired {
        emit_from,
        handover,
        ..
    } = b.next().await
    else {
        panic!()
    };
    assert!(Instant::now() - released_at <= Duration::from_millis(4400));
    assert_eq!(emit_from, Instant::now());
    let h = handover.unwrap();
    assert!(h.released);
    assert_eq!(h.until, h.written);
    assert_eq!(h.streams["s"].position, json!({"rv": "99"}));
    // Releasing again, or without holding, does nothing.
    assert!(!a.release().await.unwrap());
    let mut c = elector(&sim, 2, "c_3");
    assert!(!c.release().await.unwrap());
    assert!(sim.calls(2, "update").is_empty());
}

/// A stream that must not go on before its position is in the Lease asks for it: the leader
/// renews at once instead of at its next renewal (retry_period, 2 s here), and the wait ends
/// once the Lease holds that position. A position already in the Lease needs no renewal.
#[tokio::test(start_paused = true)]
async fn a_position_waited_for_is_handed_over_at_once() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    lead(&mut a).await;
    let book = a.book().clone();
    let _events = spawn(a);
    // Between two renewals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let generation = book.committed("s", json!({"rv": "42"}), None);
    let asked = Instant::now();
    let before = sim.calls(0, "update").len();
    tokio::time::timeout(Duration::from_millis(100), book.handed_over(generation))
        .await
        .expect("handed over without waiting for the next renewal");
    assert_eq!(sim.calls(0, "update").len(), before + 1);
    assert!(*sim.calls(0, "update").last().unwrap() - asked < Duration::from_millis(100));
    let lease = sim.lease().unwrap();
    let h = Handover::parse(lease.annotation(CHECKPOINT_ANNOTATION).unwrap()).unwrap();
    assert_eq!(h.streams["s"].position, json!({"rv": "42"}));
    // Already there: no renewal.
    book.handed_over(generation).await;
    assert_eq!(sim.calls(0, "update").len(), before + 1);
}

/// A renewal that was applied but whose answer was lost: the next one conflicts, the Lease is
/// read back, still this process's, and renewed; emission never stopped.
#[tokio::test(start_paused = true)]
async fn a_lost_renewal_answer_is_recovered_by_reading_the_lease() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    sim.faults(
        0,
        ClientFaults {
            lose_answers: true,
            ..Default::default()
        },
    );
    let ev = a.next().await;
    assert!(matches!(ev, ElectionEvent::Failed(LeaseError::Timeout(_))));
    sim.faults(0, ClientFaults::default());
    let ev = a.next().await;
    assert!(matches!(ev, ElectionEvent::Failed(LeaseError::Conflict(_))));
    assert!(run_for(&mut a, 10 * S).await.is_empty());
    assert!(a.fence().may_emit(term));
}

/// A standby whose own earlier write answered late takes its own record back at once.
#[tokio::test(start_paused = true)]
async fn a_process_that_lost_its_lease_by_timeout_takes_its_own_record_back() {
    let sim = Sim::default();
    let mut a = elector(&sim, 0, "a_1");
    let term = lead(&mut a).await;
    sim.faults(
        0,
        ClientFaults {
            delay: 6 * S,
            ..Default::default()
        },
    );
    let mut lost = false;
    while !lost {
        lost = matches!(a.next().await, ElectionEvent::Lost { .. });
    }
    assert!(!a.fence().may_emit(term));
    sim.faults(0, ClientFaults::default());
    let ElectionEvent::Acquired { emit_from, .. } = a.next().await else {
        panic!()
    };
    assert_eq!(emit_from, Instant::now(), "its own record: no wait");
}

/// What the property test's world can do at a random moment.
#[derive(Debug, Clone)]
enum Act {
    Faults(usize, u16, bool, u64),
    Heal(usize),
    Edit,
    Delete,
    Intrude,
    Crash(usize),
    Release(usize),
    /// The process is frozen (SIGSTOP) for a while: its renewals stop, its fence does not.
    Pause(usize, u64),
}

fn act() -> impl Strategy<Value = (u64, Act)> {
    let a = prop_oneof![
        (
            0..3usize,
            prop_oneof![Just(0u16), Just(503), Just(409)],
            any::<bool>(),
            0..3000u64
        )
            .prop_map(|(c, code, lose, delay)| Act::Faults(c, code, lose, delay)),
        (0..3usize).prop_map(Act::Heal),
        Just(Act::Edit),
        Just(Act::Delete),
        Just(Act::Intrude),
        (0..3usize).prop_map(Act::Crash),
        (0..3usize).prop_map(Act::Release),
        (0..3usize, 0..6000u64).prop_map(|(c, ms)| Act::Pause(c, ms)),
    ];
    (0..60_000u64, a)
}

fn world(seed: u64, n: usize, mut acts: Vec<(u64, Act)>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let sim = Sim::default();
        let mut fences = Vec::new();
        let mut tasks = Vec::new();
        let mut releases = Vec::new();
        for i in 0..n {
            let mut config = LeaderElectionConfig::new("ns", "lease", &format!("p{i}_{seed}"));
            config.lease_duration = 3 * S;
            config.renew_deadline = 2 * S;
            config.retry_period = Duration::from_millis(500);
            let mut e = Elector::with_clock(
                sim.api(i),
                config,
                HandoverBook::new(),
                Arc::new(TestClock {
                    start: Instant::now(),
                }),
                fastrand::Rng::with_seed(seed ^ i as u64),
            );
            fences.push(e.fence());
            // Some(0): release; Some(ms): freeze for ms.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
            releases.push(tx);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = e.next() => {}
                        cmd = rx.recv() => match cmd {
                            Some(0) | None => {
                                let _ = e.release().await;
                                std::future::pending::<()>().await;
                            }
                            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        }
                    }
                }
            }));
        }
        acts.sort_by_key(|(t, _)| *t);
        let start = Instant::now();
        let mut alive = vec![true; n];
        let mut next_act = 0;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut tick = start;
        while tick < start + 70 * S {
            tick += Duration::from_millis(5 + rng.u64(..20));
            tokio::time::sleep_until(tick).await;
            while next_act < acts.len() && start + Duration::from_millis(acts[next_act].0) <= tick {
                match &acts[next_act].1 {
                    Act::Faults(c, code, lose, delay) if *c < n => sim.faults(
                        *c,
                        ClientFaults {
                            fail: (*code != 0).then_some(*code),
                            lose_answers: *lose,
                            delay: Duration::from_millis(*delay),
                        },
                    ),
                    Act::Heal(c) if *c < n => sim.faults(*c, ClientFaults::default()),
                    Act::Edit => sim.edit(|v| {
                        v["metadata"]["annotations"]["x"] = json!(rng.u32(..).to_string())
                    }),
                    Act::Delete => sim.delete(),
                    Act::Intrude => sim.edit(|v| v["spec"]["holderIdentity"] = json!("intruder")),
                    Act::Crash(c) if *c < n => {
                        tasks[*c].abort();
                        alive[*c] = false;
                    }
                    Act::Release(c) if *c < n => {
                        let _ = releases[*c].try_send(0);
                    }
                    Act::Pause(c, ms) if *c < n => {
                        let _ = releases[*c].try_send(ms + 1);
                    }
                    _ => {}
                }
                next_act += 1;
            }
            let emitting: Vec<usize> = (0..n)
                .filter(|i| alive[*i] && fences[*i].emitting())
                .collect();
            prop_assert!(
                emitting.len() <= 1,
                "at {:?}: {emitting:?} emit at once",
                tick - start
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the faults (errors, lost answers, slow calls), edits by hand, deletions,
    /// intruders, crashes and releases: never two processes allowed to emit at once.
    #[test]
    fn never_two_emitters(seed in any::<u64>(), n in 2..=3usize, acts in proptest::collection::vec(act(), 0..25)) {
        world(seed, n, acts)?;
    }
}

#[test]
fn the_world_without_faults_has_a_leader() {
    // The property's baseline: with nothing going wrong, someone leads most of the time.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Sim::default();
        let mut electors: Vec<_> = (0..3)
            .map(|i| {
                let mut c = LeaderElectionConfig::new("ns", "lease", &format!("p{i}"));
                c.lease_duration = 3 * S;
                c.renew_deadline = 2 * S;
                c.retry_period = Duration::from_millis(500);
                elector_with(&sim, i, c)
            })
            .collect();
        let fences: Vec<_> = electors.iter().map(|e| e.fence()).collect();
        let mut tasks = Vec::new();
        for mut e in electors.drain(..) {
            tasks.push(tokio::spawn(async move {
                loop {
                    e.next().await;
                }
            }));
        }
        let start = Instant::now();
        let mut led = 0;
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            led += fences.iter().filter(|f| f.emitting()).count();
        }
        // Emission starts after the first lease_duration (the Lease was missing).
        assert!(led >= 560, "{led} of 600 samples had a leader");
        assert!(start.elapsed() >= 60 * S);
    });
}
