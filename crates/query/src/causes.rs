//! The chain of causes of a change, built from the records' own evidence.
//!
//! Each rule looks at who made a change and how (the actor, the subresource, the Event's
//! reason and reporting component) and names the earlier change it reacted to:
//!
//! | change | made by | caused by |
//! |---|---|---|
//! | pod created / deleted | replicaset-controller | its ReplicaSet's replica count rising / falling, or (created) one of the ReplicaSet's pods going away: each new pod is matched to one such reason, oldest first |
//! | ReplicaSet created / scaled | deployment-controller | the Deployment's creation, new pod template (rollout), restart or scale |
//! | anything deleted | generic-garbage-collector | the deletion of its owner |
//! | anything deleted | namespace-controller | the deletion of its namespace |
//! | pod evicted | the taint manager (node-controller, `TaintManagerEviction`, `DisruptionTarget`) | a NoExecute taint on the pod's node |
//! | node tainted | node-controller | the node cordoned (unschedulable), or its Ready condition going Unknown / False |
//! | node not ready | node-controller | no kubelet ever posting status since the node was created, or the kubelet falling silent |
//! | pod evicted | its kubelet (`Evicted`, phase Failed) | the node's memory, disk or PID pressure |
//! | pod evicted | the scheduler (`Preempted`) | the pod it made room for |
//! | pod bound | the scheduler, after `FailedScheduling` | a node created in the meantime |
//! | pod removed | its kubelet | the deletion asked before |
//!
//! A chain ends at an actor outside the cluster's own controllers (a person, a client, an
//! outside service account): that is who instructed Kubernetes. Where no rule applies or the
//! records a rule needs are not there, it ends with what is missing, never with a guess.

use std::collections::BTreeSet;

use crate::backend::ObjectKey;
use crate::evidence::{AROUND, BEFORE, Evidence, node_key, owner_key};
use crate::history::{Fact, History, Via};
use crate::model::{Cause, ChangeKind};
use crate::spec::rfc3339;

/// A chain: the causes, nearest first, and why it ends where it does.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Chain {
    pub causes: Vec<Cause>,
    pub missing: Option<String>,
}

/// The longest chain followed.
const MAX_DEPTH: usize = 16;

/// What one rule found.
enum Step {
    /// The change another (or the same) object's fact `fact` caused.
    Cause {
        key: ObjectKey,
        fact: usize,
        link: String,
    },
    /// The chain ends here: the actor acted on its own account (or the change needs none).
    End,
    /// The evidence to go on is not in the records.
    Missing(String),
    /// Records the rule needs are being fetched.
    Pending,
}

/// The chain of causes of `h.facts[fact]`.
pub(crate) fn chain(ev: &Evidence, h: &History, fact: usize) -> Chain {
    let mut out = Chain::default();
    let mut seen: BTreeSet<(ObjectKey, usize)> = BTreeSet::new();
    seen.insert((h.key.clone(), fact));
    let mut cur_key = h.key.clone();
    let mut cur_fact = fact;
    while let Some(cur) = ev.histories.get(&cur_key) {
        if out.causes.len() >= MAX_DEPTH {
            out.missing = Some(format!("the chain was cut after {MAX_DEPTH} steps"));
            break;
        }
        match step(ev, cur, cur_fact) {
            Step::Cause { key, fact, link } => {
                // Never the same change twice: a chain of causes runs back in time.
                if !seen.insert((key.clone(), fact)) {
                    out.missing =
                        Some("the records lead back to a change already in this chain".into());
                    break;
                }
                let Some(ch) = ev.histories.get(&key) else {
                    break;
                };
                let f = &ch.facts[fact];
                out.causes.push(Cause {
                    object: ch.object_ref(),
                    what: f.what,
                    time: rfc3339(f.at),
                    actor: f.actor.clone(),
                    summary: f.summary.clone(),
                    link,
                    record_ids: ch.ids(f),
                });
                cur_key = key;
                cur_fact = fact;
            }
            Step::End => break,
            Step::Missing(m) => {
                out.missing = Some(m);
                break;
            }
            Step::Pending => {
                out.missing = Some("the records this step needs could not all be read".into());
                break;
            }
        }
    }
    out
}

fn sa(f: &Fact) -> Option<&str> {
    f.user.strip_prefix("system:serviceaccount:kube-system:")
}

/// Whether a fact was made by a controller (by its audit user or, from an Event alone, by
/// its reporting component).
fn by(f: &Fact, controller: &str) -> bool {
    sa(f) == Some(controller)
        || (f.from_event
            && f.actor.as_ref().and_then(|a| a.component.as_deref()) == Some(controller))
}

fn who(f: &Fact) -> String {
    f.actor
        .as_ref()
        .map_or_else(|| "an unknown actor".to_string(), |a| a.display.clone())
}

fn step(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let res = h.key.resource.as_str();
    if f.via == Via::Removal {
        return removal(h, fi);
    }
    if f.actor.as_ref().is_some_and(|a| a.external) {
        return Step::End;
    }
    match (res, f.what, f.via) {
        ("pods", ChangeKind::Evicted, Via::TaintManager) => return taint_eviction(ev, h, fi),
        ("pods", ChangeKind::Evicted, Via::KubeletPressure) => return pressure(ev, h, fi),
        ("pods", ChangeKind::Evicted, Via::Preemption) => return preemption(ev, h, fi),
        _ => {}
    }
    if by(f, "replicaset-controller")
        && matches!(
            f.what,
            ChangeKind::Created | ChangeKind::DeletionRequested | ChangeKind::Deleted
        )
    {
        return replicaset(ev, h, fi);
    }
    if by(f, "generic-garbage-collector") && f.is_deletion() {
        return garbage_collection(ev, h, fi);
    }
    if by(f, "namespace-controller") && f.is_deletion() {
        return namespace(ev, h, fi);
    }
    if by(f, "deployment-controller")
        && res == "replicasets"
        && matches!(f.what, ChangeKind::Created | ChangeKind::Scaled)
    {
        return deployment(ev, h, fi);
    }
    if by(f, "node-controller") && res == "nodes" {
        match f.what {
            ChangeKind::Tainted => return node_taint(ev, h, fi),
            ChangeKind::NotReady => return node_not_ready(ev, h, fi),
            _ => {}
        }
    }
    if f.what == ChangeKind::Bound {
        return bound(ev, h, fi);
    }
    if f.what == ChangeKind::UnderPressure {
        return Step::Missing(
            "what used up the node's memory, disk or PIDs is not in the API's records".into(),
        );
    }
    if by(f, "horizontal-pod-autoscaler") {
        return Step::Missing(
            "the autoscaler acted on metrics, which are not in the records".into(),
        );
    }
    if f.user.starts_with("system:node:") || f.what == ChangeKind::Ready {
        // A kubelet reporting on its own node and pods.
        return Step::End;
    }
    Step::Missing(format!(
        "no rule links this {} by {} to an earlier change: what it reacted to is not in the records",
        f.what.word(),
        who(f)
    ))
}

/// The removal that completes a deletion asked for earlier.
fn removal(h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    match h.latest_before(f.at, |g| g.is_deletion()) {
        Some(d) => Step::Cause {
            key: h.key.clone(),
            fact: d,
            link: format!(
                "{} removed it once the graceful deletion asked for at {} was done",
                who(f),
                rfc3339(h.facts[d].at)
            ),
        },
        None => Step::Missing("the records show no deletion asked for before this removal".into()),
    }
}

/// A source of a ReplicaSet's wish for one more pod (or one fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The ReplicaSet's own fact (created or scaled).
    Replicas(usize),
    /// One of its pods went away: `(index of the pod among the keys, its fact)`.
    Lost(usize, usize),
}

/// Pods made or deleted by the replicaset-controller, each matched to the reason for it.
fn replicaset(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some((owner, _)) = &h.owner else {
        return Step::Missing("the records do not show the pod's owner".into());
    };
    let rs_key = owner_key(owner, &h.key.namespace);
    let Some(rs) = ev.history_near(&rs_key, f.at) else {
        return Step::Pending;
    };
    let Some(keys) = ev.children(&owner.uid) else {
        return Step::Pending;
    };
    let mut keys: Vec<ObjectKey> = keys.to_vec();
    if !keys.contains(&h.key) {
        keys.push(h.key.clone());
    }
    let mut pods: Vec<&History> = Vec::new();
    let mut pending = false;
    for k in &keys {
        match ev.history_near(k, f.at) {
            Some(p) => pods.push(p),
            None => pending = true,
        }
    }
    if pending {
        return Step::Pending;
    }
    let creation = f.what == ChangeKind::Created;
    // Reasons for a new pod (or for deleting one), in the order they arose.
    let mut sources: Vec<(i64, bool, Source)> = Vec::new();
    let mut last: Option<i64> = None;
    for (i, g) in rs.facts.iter().enumerate() {
        let (from, to) = match (g.what, g.replicas) {
            (ChangeKind::Created, Some((_, Some(n)))) => (Some(0), n),
            (ChangeKind::Scaled, Some((from, Some(n)))) => (from.or(last), n),
            _ => continue,
        };
        last = Some(to);
        let Some(from) = from else { continue };
        let n = if creation { to - from } else { from - to };
        for _ in 0..n.max(0) {
            sources.push((g.at, g.from_event, Source::Replicas(i)));
        }
    }
    let rs_controller = |g: &Fact| by(g, "replicaset-controller");
    if creation {
        for (pi, p) in pods.iter().enumerate() {
            for (gi, g) in p.facts.iter().enumerate() {
                let lost = (g.is_deletion()
                    || (g.what == ChangeKind::Evicted && g.via == Via::KubeletPressure))
                    && !rs_controller(g)
                    && !by(g, "generic-garbage-collector")
                    && !by(g, "namespace-controller");
                // Only the first deletion of a pod counts: later ones finish it.
                let first = p.facts[..gi].iter().all(|e| !e.is_deletion());
                if lost && first {
                    sources.push((g.at, g.from_event, Source::Lost(pi, gi)));
                }
            }
        }
    }
    sources.sort_by_key(|s| s.0);
    // The replicaset-controller's own changes, in the order it made them.
    let mut consumers: Vec<(i64, bool, usize, usize)> = Vec::new();
    for (pi, p) in pods.iter().enumerate() {
        for (gi, g) in p.facts.iter().enumerate() {
            let mine = rs_controller(g)
                && if creation {
                    g.what == ChangeKind::Created
                } else {
                    g.is_deletion() && p.facts[..gi].iter().all(|e| !e.is_deletion())
                };
            if mine {
                consumers.push((g.at, g.from_event, pi, gi));
            }
        }
    }
    consumers.sort_by_key(|c| c.0);
    let me = keys.iter().position(|k| *k == h.key);
    let mut used = vec![false; sources.len()];
    for (at, from_event, pi, gi) in consumers {
        let slack = if from_event { 1_000_000_000 } else { 0 };
        let pick = sources
            .iter()
            .enumerate()
            .find(|(si, s)| !used[*si] && s.0 <= at + slack + if s.1 { 1_000_000_000 } else { 0 })
            .map(|(si, _)| si);
        if let Some(si) = pick {
            used[si] = true;
        }
        if Some(pi) == me && gi == fi {
            let Some(si) = pick else { break };
            return match sources[si].2 {
                Source::Replicas(rf) => {
                    let g = &rs.facts[rf];
                    let link = match (creation, g.what) {
                        (true, ChangeKind::Created) => format!(
                            "the pod is one of the replicas ReplicaSet {} was created with",
                            rs.key.name
                        ),
                        (true, _) => format!(
                            "ReplicaSet {}'s replica count rose, and the replicaset-controller made a pod for it",
                            rs.key.name
                        ),
                        (false, _) => format!(
                            "ReplicaSet {}'s replica count fell, and the replicaset-controller deleted a pod",
                            rs.key.name
                        ),
                    };
                    Step::Cause {
                        key: rs.key.clone(),
                        fact: rf,
                        link,
                    }
                }
                Source::Lost(lp, lf) => {
                    let lost = pods[lp];
                    Step::Cause {
                        key: lost.key.clone(),
                        fact: lf,
                        link: format!(
                            "a replacement: ReplicaSet {} still wanted its replicas after pod {} went away ({})",
                            rs.key.name,
                            lost.key.name,
                            lost.facts[lf].what.word()
                        ),
                    }
                }
            };
        }
    }
    let word = if creation {
        "another pod"
    } else {
        "one pod fewer"
    };
    Step::Missing(format!(
        "no record shows why ReplicaSet {} wanted {word} at {}: neither a change of its replica count nor {} before then is in the records",
        rs.key.name,
        rfc3339(f.at),
        if creation {
            "the loss of one of its pods"
        } else {
            "a surplus pod"
        }
    ))
}

/// A ReplicaSet made or scaled by the deployment-controller.
fn deployment(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some((owner, _)) = &h.owner else {
        return Step::Missing("the records do not show the ReplicaSet's owner".into());
    };
    let key = owner_key(owner, &h.key.namespace);
    let Some(d) = ev.history_near(&key, f.at) else {
        return Step::Pending;
    };
    let created = f.what == ChangeKind::Created;
    let kinds: &[ChangeKind] = if created {
        &[
            ChangeKind::Created,
            ChangeKind::RolledOut,
            ChangeKind::Restarted,
        ]
    } else {
        &[
            ChangeKind::Created,
            ChangeKind::RolledOut,
            ChangeKind::Restarted,
            ChangeKind::Scaled,
        ]
    };
    match d.latest_before(f.at, |g| kinds.contains(&g.what)) {
        Some(g) => {
            let df = &d.facts[g];
            let link = match (created, df.what) {
                (true, ChangeKind::Created) => {
                    format!("Deployment {}'s first ReplicaSet", d.key.name)
                }
                (true, _) => format!(
                    "the ReplicaSet for Deployment {}'s new pod template",
                    d.key.name
                ),
                (false, ChangeKind::Scaled) => {
                    format!("Deployment {}'s replica count changed", d.key.name)
                }
                (false, ChangeKind::Created) => {
                    format!("Deployment {} brought up its first ReplicaSet", d.key.name)
                }
                (false, _) => format!(
                    "the rolling update of Deployment {} moves replicas to its new ReplicaSet",
                    d.key.name
                ),
            };
            Step::Cause {
                key: d.key.clone(),
                fact: g,
                link,
            }
        }
        None => Step::Missing(format!(
            "no change of Deployment {} before {} is in the records",
            d.key.name,
            rfc3339(f.at)
        )),
    }
}

/// Something the garbage collector deleted: its owner was deleted.
fn garbage_collection(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some((owner, _)) = &h.owner else {
        return Step::Missing(
            "the records do not show the owner whose deletion the garbage collector followed"
                .into(),
        );
    };
    let key = owner_key(owner, &h.key.namespace);
    let Some(o) = ev.history_near(&key, f.at) else {
        return Step::Pending;
    };
    match o.latest_before(f.at, Fact::is_deletion) {
        Some(g) => Step::Cause {
            key: o.key.clone(),
            fact: g,
            link: format!(
                "its owner {} {} was deleted, and the garbage collector deletes what an owner leaves",
                owner.kind, owner.name
            ),
        },
        None => Step::Missing(format!(
            "the records show no deletion of its owner {} {} before then",
            owner.kind, owner.name
        )),
    }
}

/// Something the namespace controller deleted: its namespace was deleted.
fn namespace(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some(ns) = h.key.namespace.clone().flatten() else {
        return Step::Missing("the object has no namespace".into());
    };
    let key = ObjectKey {
        resource: "namespaces".into(),
        name: ns.clone(),
        namespace: Some(None),
    };
    let Some(n) = ev.history_near(&key, f.at) else {
        return Step::Pending;
    };
    match n.latest_before(f.at, Fact::is_deletion) {
        Some(g) => Step::Cause {
            key,
            fact: g,
            link: format!("its namespace {ns} was deleted"),
        },
        None => Step::Missing(format!(
            "the records show no deletion of namespace {ns} before then"
        )),
    }
}

/// A pod evicted by the taint manager: a NoExecute taint on its node.
fn taint_eviction(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some((node, _)) = &h.node else {
        return Step::Missing("the records do not show which node the pod was on".into());
    };
    let Some(n) = ev.history_near(&node_key(node), f.at) else {
        return Step::Pending;
    };
    match n.latest_before(f.at, |g| {
        g.what == ChangeKind::Tainted && g.taints.iter().any(|t| t.ends_with(":NoExecute"))
    }) {
        Some(g) => {
            let taint = n.facts[g]
                .taints
                .iter()
                .find(|t| t.ends_with(":NoExecute"))
                .cloned()
                .unwrap_or_default();
            let key = taint.split([':', '=']).next().unwrap_or("");
            let tolerated = h
                .first_body
                .as_ref()
                .and_then(|b| crate::body::toleration_seconds(b, key))
                .map(|s| format!(", which the pod tolerated for {s} s"))
                .unwrap_or_default();
            Step::Cause {
                key: n.key.clone(),
                fact: g,
                link: format!(
                    "the pod ran on node {node}; the taint manager evicts pods from a node with a NoExecute taint ({taint}{tolerated})"
                ),
            }
        }
        None => Step::Missing(format!(
            "the records show no NoExecute taint on node {node} before the eviction"
        )),
    }
}

/// A node tainted by the node lifecycle controller.
fn node_taint(_ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let taint = f.taints.first().cloned().unwrap_or_default();
    let key = taint.split([':', '=']).next().unwrap_or("");
    let (kinds, link): (&[ChangeKind], &str) = match key {
        "node.kubernetes.io/unschedulable" => (
            &[ChangeKind::Cordoned],
            "the node lifecycle controller taints a cordoned node",
        ),
        "node.kubernetes.io/unreachable" | "node.kubernetes.io/not-ready" => (
            &[ChangeKind::NotReady],
            "the node lifecycle controller taints a node whose Ready condition is Unknown (unreachable) or False (not-ready)",
        ),
        "node.kubernetes.io/memory-pressure"
        | "node.kubernetes.io/disk-pressure"
        | "node.kubernetes.io/pid-pressure" => (
            &[ChangeKind::UnderPressure],
            "the node lifecycle controller taints a node under pressure",
        ),
        _ => {
            return Step::Missing(format!("no rule explains the taint {taint}"));
        }
    };
    match h.latest_before(f.at, |g| kinds.contains(&g.what)) {
        Some(g) => Step::Cause {
            key: h.key.clone(),
            fact: g,
            link: link.to_string(),
        },
        None => Step::Missing(format!(
            "the records show no change of node {} that explains the taint {taint}",
            h.key.name
        )),
    }
}

/// A node marked not ready by the node lifecycle controller.
fn node_not_ready(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    match f.reason.as_deref() {
        Some("NodeStatusNeverUpdated") => match h.latest_before(f.at, |g| g.what == ChangeKind::Created) {
            Some(g) => Step::Cause {
                key: h.key.clone(),
                fact: g,
                link: "no kubelet ever posted the node's status after it was created (the controller waits node-startup-grace-period, 60 s by default, then marks it Unknown)".into(),
            },
            None => Step::Missing("the node's kubelet never posted its status; its creation is not in the records".into()),
        },
        Some("NodeStatusUnknown") => {
            let kubelet = format!("system:node:{}", h.key.name);
            let lease = ObjectKey {
                resource: "leases".into(),
                name: h.key.name.clone(),
                namespace: Some(Some("kube-node-lease".into())),
            };
            let Some(l) = ev.history_near(&lease, f.at) else { return Step::Pending };
            let last = h
                .recs
                .iter()
                .chain(l.recs.iter())
                .filter(|r| r.user() == kubelet && r.ok() && r.at <= f.at)
                .max_by_key(|r| r.at);
            Step::Missing(match last {
                Some(r) => format!(
                    "its kubelet ({kubelet}) was last heard from at {} (record {}); why it fell silent (node down, network, kubelet stopped) is not in the API's records",
                    rfc3339(r.at),
                    r.id
                ),
                None => format!("no record from its kubelet ({kubelet}) is in the store; why it stopped reporting is not in the API's records"),
            })
        }
        _ => Step::Missing("what made the node not ready is not in the records".into()),
    }
}

/// A pod failed by its kubelet under node pressure.
fn pressure(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let Some((node, _)) = &h.node else {
        return Step::Missing("the records do not show which node the pod was on".into());
    };
    let Some(n) = ev.history_near(&node_key(node), f.at) else {
        return Step::Pending;
    };
    match n.latest_before(f.at.saturating_add(1_000_000_000), |g| {
        g.what == ChangeKind::UnderPressure
    }) {
        Some(g) => Step::Cause {
            key: n.key.clone(),
            fact: g,
            link: format!(
                "the pod ran on node {node}, whose kubelet evicts pods when the node runs short of memory, disk or PIDs"
            ),
        },
        None => Step::Missing(format!(
            "the kubelet of node {node} evicted it for node pressure; the node's pressure condition is not in the records"
        )),
    }
}

/// A pod preempted by the scheduler: the pod it made room for.
fn preemption(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let msg = f
        .recs
        .iter()
        .map(|&i| &h.recs[i])
        .find(|r| r.reason() == "Preempted")
        .and_then(|r| r.message())
        .unwrap_or("");
    // "Preempted by pod <uid> on node <node>" (1.2x) or "Preempted by <ns>/<name> on node <node>".
    let by = msg
        .strip_prefix("Preempted by ")
        .and_then(|r| r.split(" on node").next())
        .unwrap_or("");
    let target: Option<&History> = if let Some(uid) = by.strip_prefix("pod ") {
        match ev.by_uid_near(uid.trim(), f.at) {
            None => return Step::Pending,
            Some(h) => h,
        }
    } else if let Some((ns, name)) = by.split_once('/') {
        let key = ObjectKey {
            resource: "pods".into(),
            name: name.trim().to_string(),
            namespace: Some(Some(ns.to_string())),
        };
        match ev.history_near(&key, f.at) {
            None => return Step::Pending,
            Some(h) => Some(h),
        }
    } else {
        None
    };
    match target.and_then(|t| {
        t.latest_before(f.at, |g| g.what == ChangeKind::Created)
            .map(|g| (t, g))
    }) {
        Some((t, g)) => Step::Cause {
            key: t.key.clone(),
            fact: g,
            link: format!(
                "the scheduler preempted it to make room for pod {} (of higher priority)",
                t.key.name
            ),
        },
        None => Step::Missing(format!(
            "the pod the scheduler made room for ({}) is not in the records",
            if by.is_empty() { "unnamed" } else { by }
        )),
    }
}

/// A pod bound after it could not be scheduled: a node that appeared meanwhile.
fn bound(ev: &Evidence, h: &History, fi: usize) -> Step {
    let f = &h.facts[fi];
    let first_failure = h
        .unschedulable
        .iter()
        .map(|&i| h.recs[i].at)
        .filter(|t| *t <= f.at)
        .min();
    let (Some(since), Some(node)) = (first_failure, f.node.as_deref()) else {
        return Step::End;
    };
    // From the first failure on (or a day before the binding, whichever is earlier).
    let from = since
        .min(f.at.saturating_sub(BEFORE))
        .saturating_sub(1_000_000_000);
    let Some(n) = ev.history_in(&node_key(node), from, f.at.saturating_add(AROUND)) else {
        return Step::Pending;
    };
    // The node's creation if it came after the pod had to wait, else the latest change that
    // made it schedulable.
    let created = n
        .latest_before(f.at, |g| g.what == ChangeKind::Created)
        .filter(|&g| n.facts[g].at + 1_000_000_000 >= since);
    let freed = created.or_else(|| {
        n.latest_before(f.at, |g| {
            g.what == ChangeKind::Uncordoned || g.what == ChangeKind::Untainted
        })
        .filter(|&g| n.facts[g].at + 1_000_000_000 >= since)
    });
    match freed {
        Some(g) => {
            let why = h
                .unschedulable
                .first()
                .and_then(|&i| h.recs[i].message())
                .map(|m| format!(" (FailedScheduling: {m})"))
                .unwrap_or_default();
            Step::Cause {
                key: n.key.clone(),
                fact: g,
                link: format!(
                    "the pod could not be scheduled{why} until node {node} could take it"
                ),
            }
        }
        None => Step::End,
    }
}
