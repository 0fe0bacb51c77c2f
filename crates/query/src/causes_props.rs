//! Property tests of the chain builder: on records made up at random (objects owning each
//! other, in cycles too; controllers, people and kubelets acting in any order; Events naming
//! objects; evidence loaded in full or in part), every chain ends, never visits a change
//! twice, runs back in time, and rests each step on records that exist.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::backend::{ObjectKey, Row};
use crate::causes::chain;
use crate::evidence::Evidence;
use crate::history::History;
use crate::rec::Rec;

const KINDS: &[(&str, &str, &str, bool)] = &[
    ("Deployment", "apps", "deployments", true),
    ("ReplicaSet", "apps", "replicasets", true),
    ("Pod", "", "pods", true),
    ("Node", "", "nodes", false),
    ("Namespace", "", "namespaces", false),
];
const NAMES: &[&str] = &["a", "b", "c"];
const ACTORS: &[&str] = &[
    "alice",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:node-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:kube-scheduler",
    "system:node:a",
];
const TAINTS: &[&str] = &[
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/memory-pressure",
];
const REASONS: &[&str] = &[
    "SuccessfulCreate",
    "SuccessfulDelete",
    "ScalingReplicaSet",
    "TaintManagerEviction",
    "Scheduled",
    "Evicted",
    "Preempted",
    "FailedScheduling",
    "NodeNotReady",
    "NodeHasInsufficientMemory",
];

/// One made-up record: who did what to which object, when.
#[derive(Debug, Clone)]
struct Op {
    object: (usize, usize),
    action: usize,
    actor: usize,
    dt_ms: u32,
    code: u16,
    replicas: i64,
    image: usize,
    taint: usize,
    ready: bool,
    grace: i64,
    other: (usize, usize),
    reason: usize,
    /// Made by the actor who usually makes this change (deep chains are made of those)
    /// rather than by `actor`.
    natural: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        (0..KINDS.len(), 0..NAMES.len()),
        0..12usize,
        0..ACTORS.len(),
        0..3000u32,
        prop_oneof![9 => Just(200u16), 1 => Just(403u16)],
        0..6i64,
        0..2usize,
        0..TAINTS.len(),
        any::<bool>(),
        0..3i64,
        (0..KINDS.len(), 0..NAMES.len()),
        (0..REASONS.len(), any::<bool>()),
    )
        .prop_map(
            |(
                object,
                action,
                actor,
                dt_ms,
                code,
                replicas,
                image,
                taint,
                ready,
                grace,
                other,
                (reason, natural),
            )| Op {
                object,
                action,
                actor,
                dt_ms,
                code,
                replicas,
                image,
                taint,
                ready,
                grace,
                other,
                reason,
                natural,
            },
        )
}

fn uid(o: (usize, usize)) -> String {
    format!("uid-{}-{}", KINDS[o.0].2, NAMES[o.1])
}

fn ns(o: (usize, usize)) -> Value {
    if KINDS[o.0].3 {
        json!("ns")
    } else {
        Value::Null
    }
}

fn time(ms: i64) -> String {
    crate::spec::rfc3339(1_800_000_000_000_000_000 + ms * 1_000_000)
}

/// The body of an object after a change.
fn body(op: &Op, owners: &BTreeMap<(usize, usize), (usize, usize)>, deleting: bool) -> Value {
    let (kind, group, _, _) = KINDS[op.object.0];
    let mut meta =
        json!({"name": NAMES[op.object.1], "namespace": ns(op.object), "uid": uid(op.object)});
    if let Some(o) = owners.get(&op.object) {
        let (k, g, _, _) = KINDS[o.0];
        let api = if g.is_empty() {
            "v1".to_string()
        } else {
            format!("{g}/v1")
        };
        meta["ownerReferences"] = json!([{"apiVersion": api, "kind": k, "name": NAMES[o.1], "uid": uid(*o), "controller": true}]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!(time(99_999));
        meta["deletionGracePeriodSeconds"] = json!(op.grace);
    }
    let taint = TAINTS[op.taint];
    json!({
        "kind": kind,
        "apiVersion": if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") },
        "metadata": meta,
        "spec": {
            "replicas": op.replicas,
            "template": {"spec": {"containers": [{"image": format!("img:{}", op.image)}]}},
            "nodeName": NAMES[op.other.1],
            "unschedulable": op.ready,
            "taints": [{"key": taint, "effect": if op.image == 0 { "NoExecute" } else { "NoSchedule" }}],
            "tolerations": [{"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
        },
        "status": {"conditions": [
            {"type": "Ready", "status": if op.ready { "True" } else { "Unknown" }, "reason": if op.grace == 0 { "NodeStatusNeverUpdated" } else { "NodeStatusUnknown" }},
            {"type": "MemoryPressure", "status": if op.ready { "False" } else { "True" }},
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
        ], "phase": if op.grace == 2 { "Failed" } else { "Running" }, "reason": "Evicted"},
    })
}

fn record(i: usize, t: i64, op: &Op, owners: &BTreeMap<(usize, usize), (usize, usize)>) -> Value {
    let (_, group, resource, _) = KINDS[op.object.0];
    let name = NAMES[op.object.1];
    if op.action >= 10 {
        // An Event about the object (or naming another one).
        let reason = REASONS[op.reason];
        let message = match reason {
            "SuccessfulCreate" => format!("Created pod: {}", NAMES[op.other.1]),
            "SuccessfulDelete" => format!("Deleted pod: {}", NAMES[op.other.1]),
            "ScalingReplicaSet" => format!(
                "Scaled up replica set {} to {} from {}",
                NAMES[op.other.1], op.replicas, op.grace
            ),
            "Scheduled" => format!("Successfully assigned ns/{name} to {}", NAMES[op.other.1]),
            "Preempted" => format!("Preempted by pod {} on node a", uid(op.other)),
            _ => "something".to_string(),
        };
        let component = [
            "replicaset-controller",
            "deployment-controller",
            "taint-controller",
            "default-scheduler",
            "kubelet",
        ][op.actor % 5];
        return json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": format!("e{i}"), "namespace": "ns", "uid": format!("e{i}"), "resourceVersion": i.to_string()},
            "involvedObject": {"kind": KINDS[op.object.0].0, "name": name, "namespace": ns(op.object), "uid": uid(op.object),
                "apiVersion": if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") }},
            "reason": reason, "message": message, "type": "Normal", "source": {"component": component},
            "lastTimestamp": time(t),
        });
    }
    let (verb, sub, deleting) = match op.action {
        0 => ("create", None, false),
        1 | 2 => ("update", None, false),
        3 => ("patch", Some("scale"), false),
        4 => ("update", Some("status"), false),
        5 => ("create", Some("binding"), false),
        6 => ("create", Some("eviction"), false),
        7 | 8 => ("delete", None, op.grace > 0),
        _ => ("patch", Some("status"), false),
    };
    let response = match sub {
        Some("eviction") | Some("binding") => json!({"kind": "Status", "code": op.code}),
        Some("scale") => {
            json!({"kind": "Scale", "metadata": {"name": name}, "spec": {"replicas": op.replicas}})
        }
        _ => body(op, owners, deleting),
    };
    // Half the time the actor who usually makes this change: deep chains are made of those.
    let actor = if op.natural {
        match (resource, verb, sub) {
            ("deployments", ..) | ("namespaces", ..) | (_, _, Some("eviction")) => "alice",
            ("replicasets", ..) => ACTORS[2],
            ("pods", _, Some("binding")) => ACTORS[6],
            ("pods", "delete", _) if op.grace == 1 => ACTORS[4],
            ("pods", ..) => ACTORS[1],
            ("nodes", ..) => ACTORS[3],
            _ => ACTORS[op.actor],
        }
    } else {
        ACTORS[op.actor]
    };
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": format!("a{i}"), "stage": "ResponseComplete",
        "verb": verb, "user": {"username": actor, "groups": ["g"]},
        "objectRef": {"resource": resource, "apiGroup": group, "namespace": ns(op.object), "name": name, "subresource": sub},
        "responseStatus": {"code": if verb == "create" && op.code == 200 { 201 } else { op.code }},
        "requestObject": if sub == Some("binding") { json!({"kind": "Binding", "target": {"name": NAMES[op.other.1]}}) }
            else if verb == "delete" { json!({"kind": "DeleteOptions", "gracePeriodSeconds": op.grace}) }
            else { Value::Null },
        "responseObject": response,
        "requestReceivedTimestamp": time(t),
        "stageTimestamp": time(t + 1),
    })
}

fn key(o: (usize, usize)) -> ObjectKey {
    ObjectKey {
        resource: KINDS[o.0].2.to_string(),
        name: NAMES[o.1].to_string(),
        namespace: Some(KINDS[o.0].3.then(|| "ns".to_string())),
    }
}

/// Everything loaded, or (with `hide`) some objects' records held back.
fn evidence(
    ops: &[Op],
    owners: &BTreeMap<(usize, usize), (usize, usize)>,
    hide: &BTreeSet<(usize, usize)>,
) -> (Evidence, BTreeSet<String>) {
    let mut t = 0i64;
    let recs: Vec<Rec> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            t += i64::from(op.dt_ms);
            let v = record(i, t, op, owners);
            Rec::from_row(Row {
                seq: i as i64 + 1,
                id: format!("r{i}"),
                time: 0,
                record: v.to_string(),
            })
        })
        .collect();
    let ids: BTreeSet<String> = recs.iter().map(|r| r.id.clone()).collect();
    let mut ev = Evidence::default();
    for k in 0..KINDS.len() {
        for n in 0..NAMES.len() {
            let o = (k, n);
            if hide.contains(&o) {
                continue;
            }
            let kk = key(o);
            let mine: Vec<Rec> = recs
                .iter()
                .filter(|r| {
                    (r.a.resource.as_deref() == Some(kk.resource.as_str())
                        && r.a.name.as_deref() == Some(kk.name.as_str()))
                        || r.a
                            .mention
                            .as_ref()
                            .is_some_and(|(res, name)| *res == kk.resource && *name == kk.name)
                })
                .cloned()
                .collect();
            ev.histories.insert(kk.clone(), History::build(kk, mine));
            let children: Vec<ObjectKey> = owners
                .iter()
                .filter(|(_, ow)| **ow == o)
                .map(|(c, _)| key(*c))
                .collect();
            ev.owned.insert(uid(o), children);
            ev.uids.insert(uid(o), Some(key(o)));
        }
    }
    (ev, ids)
}

fn ns_of(t: &str) -> i64 {
    kubetrail_core::Timestamp::parse_rfc3339(t).map_or(0, |t| t.unix_nanos())
}

fn check(ev: &Evidence, ids: &BTreeSet<String>) -> Result<(), TestCaseError> {
    for h in ev.histories.values() {
        for (i, f) in h.facts.iter().enumerate() {
            prop_assert!(!f.recs.is_empty(), "a change without records");
            let c = chain(ev, h, i);
            prop_assert!(c.causes.len() <= 16);
            let mut seen = BTreeSet::new();
            let mut last = f.at;
            for step in &c.causes {
                prop_assert!(
                    !step.record_ids.is_empty(),
                    "a step without records: {step:?}"
                );
                for id in &step.record_ids {
                    prop_assert!(
                        ids.contains(id),
                        "a step names a record that does not exist: {id}"
                    );
                }
                let t = ns_of(&step.time);
                // Back in time (Events' whole seconds allow a little slack).
                prop_assert!(
                    t <= last + 2_000_000_000,
                    "a cause after its effect: {step:?}"
                );
                last = t;
                let ident = (
                    step.object.clone(),
                    step.what.word(),
                    step.time.clone(),
                    step.record_ids.clone(),
                );
                prop_assert!(
                    seen.insert(ident),
                    "the chain visits a change twice: {:?}",
                    c.causes
                );
            }
        }
    }
    Ok(())
}

/// A story that makes long chains (a Deployment's pod evicted by the taint manager from a
/// node that went not ready), for the random records to mix with.
fn skeleton() -> Vec<Op> {
    let base = Op {
        object: (0, 0),
        action: 0,
        actor: 0,
        dt_ms: 100,
        code: 200,
        replicas: 2,
        image: 0,
        taint: 0,
        ready: false,
        grace: 2,
        other: (3, 0),
        reason: 0,
        natural: false,
    };
    let at = |object, action, actor| Op {
        object,
        action,
        actor,
        ..base.clone()
    };
    vec![
        at((0, 0), 0, 0),
        at((1, 0), 0, 2),
        at((2, 0), 0, 1),
        at((3, 0), 0, 0),
        at((3, 0), 4, 3),
        at((3, 0), 1, 3),
        at((2, 0), 5, 6),
        at((2, 0), 9, 3),
        at((2, 0), 7, 3),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn chains_end_never_repeat_and_rest_on_records(
        ops in proptest::collection::vec(op(), 1..60),
        owner_pairs in proptest::collection::vec(((0..KINDS.len(), 0..NAMES.len()), (0..KINDS.len(), 0..NAMES.len())), 0..10),
        hidden in proptest::collection::btree_set((0..KINDS.len(), 0..NAMES.len()), 0..4),
        with_story in any::<bool>(),
    ) {
        // Pods owned by ReplicaSets owned by Deployments of the same name, but for random
        // owners on top: owners may form cycles, and an object may own itself.
        let mut owners: BTreeMap<(usize, usize), (usize, usize)> = (0..NAMES.len())
            .flat_map(|n| [((2, n), (1, n)), ((1, n), (0, n))])
            .collect();
        owners.extend(owner_pairs);
        let ops: Vec<Op> = if with_story { skeleton().into_iter().chain(ops).collect() } else { ops };
        let (ev, ids) = evidence(&ops, &owners, &BTreeSet::new());
        check(&ev, &ids)?;
        // With some objects' records missing, chains stop where the records do.
        let (ev, ids) = evidence(&ops, &owners, &hidden);
        check(&ev, &ids)?;
    }
}

/// A hand-made cycle: a pod owned by a ReplicaSet owned by the pod, each deleted by the
/// garbage collector "because the other was": the chain stops instead of going round.
#[test]
fn an_ownership_cycle_ends() {
    let gc = ACTORS
        .iter()
        .position(|a| a.ends_with("generic-garbage-collector"))
        .unwrap();
    let pod = (2, 0);
    let rs = (1, 0);
    let owners: BTreeMap<_, _> = [(pod, rs), (rs, pod)].into_iter().collect();
    let del = |object, dt_ms| Op {
        object,
        action: 7,
        actor: gc,
        dt_ms,
        code: 200,
        replicas: 1,
        image: 0,
        taint: 0,
        ready: true,
        grace: 0,
        other: (0, 0),
        reason: 0,
        natural: false,
    };
    let ops = vec![del(rs, 10), del(pod, 10), del(rs, 10), del(pod, 10)];
    let (ev, ids) = evidence(&ops, &owners, &BTreeSet::new());
    check(&ev, &ids).unwrap();
    let h = &ev.histories[&key(pod)];
    let last = h.facts.len() - 1;
    let c = chain(&ev, h, last);
    assert!(!c.causes.is_empty());
    assert!(c.missing.is_some(), "the chain says why it stops: {c:?}");
}
