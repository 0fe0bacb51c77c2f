//! Leader election over HTTP against the emulator's Leases (which answer like the recorded
//! kube-apiserver: 201, 409 AlreadyExists, 409 Conflict on a stale resourceVersion, 404):
//! creation, renewal with the handover annotation, a crash taken over after lease_duration, a
//! release taken over at once, edits by hand, deletion and a failing Lease API.

use std::time::Duration;

use kubetrail_core::config::{Section, SectionKind};
use kubetrail_emulator::{Emulator, EmulatorOptions, Faults};
use kubetrail_kube::leader::{
    CHECKPOINT_ANNOTATION, ElectionEvent, Elector, Handover, HandoverBook, HttpLeaseApi,
    LeaderElectionConfig, LossReason,
};
use kubetrail_kube::{Environment, KubeClient, KubeConnectionOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const NS: &str = "kubetrail";
const NAME: &str = "kubetrail-events";

async fn emulator() -> (Emulator, tempfile::TempDir, KubeClient) {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    emu.write_ca_file(&ca).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "admin-token\n").unwrap();
    let (url, ca, token) = (
        emu.url(),
        ca.display().to_string(),
        token.display().to_string(),
    );
    let mut s = Section::from_pairs(
        SectionKind::Input,
        "kubernetes_events",
        &[
            ("kube_url", &url),
            ("kube_ca_file", &ca),
            ("kube_token_file", &token),
        ],
    );
    let conn = KubeConnectionOptions::from_section(&mut s)
        .unwrap()
        .resolve(&Environment::isolated("/nonexistent"))
        .unwrap();
    (emu, dir, KubeClient::new(&conn).unwrap())
}

fn config(holder: &str) -> LeaderElectionConfig {
    let mut c = LeaderElectionConfig::new(NS, NAME, holder);
    c.lease_duration = Duration::from_secs(2);
    c.renew_deadline = Duration::from_millis(1500);
    c.retry_period = Duration::from_millis(300);
    c
}

/// An elector in its own task: its events, and a channel that makes it release and stop.
struct Running {
    events: mpsc::UnboundedReceiver<(Instant, ElectionEvent)>,
    release: Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<bool>>>,
    task: tokio::task::JoinHandle<()>,
    fence: std::sync::Arc<kubetrail_kube::leader::Fence>,
    book: HandoverBook,
}

fn start(client: &KubeClient, holder: &str) -> Running {
    let book = HandoverBook::new();
    let mut e = Elector::new(
        HttpLeaseApi::new(client.clone(), NS, NAME),
        config(holder),
        book.clone(),
    );
    let fence = e.fence();
    let (tx, events) = mpsc::unbounded_channel();
    let (rtx, mut rrx) = tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<bool>>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = e.next() => { let _ = tx.send((Instant::now(), ev)); }
                reply = &mut rrx => {
                    let released = e.release().await.unwrap_or(false);
                    if let Ok(reply) = reply { let _ = reply.send(released); }
                    return;
                }
            }
        }
    });
    Running {
        events,
        release: Some(rtx),
        task,
        fence,
        book,
    }
}

impl Running {
    /// The next event other than `Failed` and `Leader`, within `within`.
    async fn next_change(&mut self, within: Duration) -> (Instant, ElectionEvent) {
        let end = Instant::now() + within;
        loop {
            let (t, ev) = timeout(end - Instant::now(), self.events.recv())
                .await
                .expect("an election event in time")
                .expect("the elector runs");
            if !matches!(ev, ElectionEvent::Failed(_) | ElectionEvent::Leader { .. }) {
                return (t, ev);
            }
        }
    }

    async fn release(&mut self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.release.take().unwrap().send(tx);
        rx.await.unwrap()
    }
}

fn handover(emu: &Emulator) -> Handover {
    let l = emu.lease(NS, NAME).expect("the Lease exists");
    Handover::parse(
        l["metadata"]["annotations"][CHECKPOINT_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_taken_over_with_its_checkpoint_and_a_release_at_once() {
    let (emu, _dir, client) = emulator().await;
    let mut a = start(&client, "a_1");
    let (t0, ev) = a.next_change(Duration::from_secs(5)).await;
    let ElectionEvent::Acquired {
        term, emit_from, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    // Created: a whole lease_duration before emitting.
    assert!(emit_from >= t0 + Duration::from_millis(1900));
    a.book.committed("s1", json!({"rv": "17"}), None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(a.fence.may_emit(term));
    assert_eq!(emu.lease_holder(NS, NAME).as_deref(), Some("a_1"));
    assert_eq!(handover(&emu).streams["s1"].position, json!({"rv": "17"}));

    let mut b = start(&client, "b_2");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // a crashes: nobody renews; b takes over once the record is 2 s unchanged.
    a.task.abort();
    let crashed = Instant::now();
    let (taken, ev) = b.next_change(Duration::from_secs(6)).await;
    let ElectionEvent::Acquired {
        emit_from,
        handover: h,
        ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert!(
        taken - crashed >= Duration::from_millis(1500),
        "{:?}",
        taken - crashed
    );
    assert!(
        taken - crashed <= Duration::from_secs(4),
        "{:?}",
        taken - crashed
    );
    assert!(
        emit_from <= taken,
        "an expired Lease is emitted from at once"
    );
    assert_eq!(h.unwrap().streams["s1"].position, json!({"rv": "17"}));
    let lease = emu.lease(NS, NAME).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);

    // b releases on shutdown; c, waiting, takes over within a poll.
    let mut c = start(&client, "c_3");
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.book.committed("s1", json!({"rv": "23"}), None);
    assert!(b.release().await);
    let released = Instant::now();
    let (taken, ev) = c.next_change(Duration::from_secs(3)).await;
    let ElectionEvent::Acquired {
        handover: h,
        emit_from,
        ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert!(
        taken - released < Duration::from_millis(1000),
        "{:?}",
        taken - released
    );
    assert!(emit_from <= taken);
    let h = h.unwrap();
    assert!(h.released);
    assert_eq!(h.streams["s1"].position, json!({"rv": "23"}));
    c.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_by_hand_and_deletion_are_handled() {
    let (emu, _dir, client) = emulator().await;
    let mut a = start(&client, "a_1");
    let (_, ev) = a.next_change(Duration::from_secs(5)).await;
    let ElectionEvent::Acquired { term, .. } = ev else {
        panic!("{ev:?}")
    };
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(a.fence.may_emit(term));

    // An annotation added by hand: the next renewal conflicts, is read back, goes on.
    assert!(emu.annotate_lease(NS, NAME, "team", "sre"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(a.fence.may_emit(term));
    let lease = emu.lease(NS, NAME).unwrap();
    assert_eq!(lease["metadata"]["annotations"]["team"], "sre");
    assert_eq!(lease["spec"]["holderIdentity"], "a_1");

    // Deleted by hand: the holder creates it again and goes on leading.
    assert!(emu.delete_lease(NS, NAME));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(emu.lease_holder(NS, NAME).as_deref(), Some("a_1"));
    assert!(a.fence.may_emit(term));

    // Another holder written by hand: the leader stops at its next renewal.
    assert!(emu.set_lease_holder(NS, NAME, "intruder"));
    let edited = Instant::now();
    let (t, ev) = a.next_change(Duration::from_secs(2)).await;
    assert!(
        matches!(&ev, ElectionEvent::Lost { reason: LossReason::TakenBy(Some(h)), .. } if h == "intruder"),
        "{ev:?}"
    );
    assert!(t - edited <= Duration::from_millis(700), "{:?}", t - edited);
    assert!(!a.fence.may_emit(term));
    a.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lease_api_fences_the_leader_within_renew_deadline() {
    let (emu, _dir, client) = emulator().await;
    let mut a = start(&client, "a_1");
    let (_, ev) = a.next_change(Duration::from_secs(5)).await;
    let ElectionEvent::Acquired { term, .. } = ev else {
        panic!("{ev:?}")
    };
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Shorter than renew_deadline: nothing happens.
    emu.set_faults(Faults {
        lease_fail_status: Some(503),
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    emu.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.fence.may_emit(term));
    // Longer: the fence closes at renew_deadline after the last renewal, never later.
    emu.set_faults(Faults {
        lease_fail_status: Some(500),
        ..Default::default()
    });
    let failing = Instant::now();
    let until = a.fence.until(term).unwrap();
    let (t, ev) = a.next_change(Duration::from_secs(3)).await;
    assert!(
        matches!(
            ev,
            ElectionEvent::Lost {
                reason: LossReason::RenewDeadline(_),
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(t - failing <= Duration::from_millis(1500));
    assert!(t >= until);
    assert!(!a.fence.may_emit(term));
    // The API comes back: the Lease is still a's own record, taken back at once.
    emu.set_faults(Faults::default());
    let (_, ev) = a.next_change(Duration::from_secs(3)).await;
    assert!(matches!(ev, ElectionEvent::Acquired { .. }), "{ev:?}");
    a.task.abort();
}
