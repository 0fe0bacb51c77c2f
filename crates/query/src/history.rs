//! One object's history: its records in order and the changes they show ([`Fact`]s), each
//! backed by the records it was read from. Audit events say who asked for what; Events say
//! what the controllers did, and stand in for audit events that are not in the store (an
//! Event seen at about the same time as an audit change of the same kind is attached to it).

use serde_json::Value;

use kubetrail_activity::Owner;

use crate::backend::ObjectKey;
use crate::body::{self, Diff};
use crate::model::{Actor, ChangeKind};
use crate::rec::Rec;

/// How a change came about, as far as the records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// A plain request (or an Event standing for one).
    Request,
    /// `POST pods/NAME/eviction`.
    EvictionApi,
    /// The node lifecycle controller's taint manager (NoExecute taints).
    TaintManager,
    /// The kubelet, failing a pod under node pressure.
    KubeletPressure,
    /// The scheduler's preemption.
    Preemption,
    /// The final removal of an object whose deletion had been asked for.
    Removal,
}

/// One change of an object.
#[derive(Debug, Clone)]
pub(crate) struct Fact {
    pub what: ChangeKind,
    /// When it was asked for (ns).
    pub at: i64,
    /// When it was done (ns).
    pub done: i64,
    pub actor: Option<Actor>,
    /// The audit user, empty when the fact comes from an Event alone.
    pub user: String,
    /// The fact rests on Events only (the audit log has no record of it).
    pub from_event: bool,
    pub summary: String,
    /// Indices into the history's records.
    pub recs: Vec<usize>,
    pub via: Via,
    /// Replica counts (from, to).
    pub replicas: Option<(Option<i64>, Option<i64>)>,
    /// Taints added or removed.
    pub taints: Vec<String>,
    /// The node of a binding.
    pub node: Option<String>,
    /// A condition's or an Event's reason.
    pub reason: Option<String>,
}

impl Fact {
    fn new(what: ChangeKind, rec: &Rec, idx: usize, summary: String) -> Fact {
        Fact {
            what,
            at: rec.at,
            done: rec.done,
            actor: rec.actor(),
            user: if rec.is_audit() {
                rec.user().to_string()
            } else {
                String::new()
            },
            from_event: rec.is_event(),
            summary,
            recs: vec![idx],
            via: Via::Request,
            replicas: None,
            taints: Vec::new(),
            node: None,
            reason: None,
        }
    }

    /// Whether the fact asked for the object's deletion (graceful or not).
    pub fn is_deletion(&self) -> bool {
        matches!(
            self.what,
            ChangeKind::DeletionRequested | ChangeKind::Evicted | ChangeKind::Deleted
        ) && self.via != Via::Removal
    }
}

/// One object's records and changes.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub key: ObjectKey,
    /// Its records (and Events naming it), in the order they were done.
    pub recs: Vec<Rec>,
    pub facts: Vec<Fact>,
    pub uids: Vec<String>,
    /// Its controlling owner and the records that show it.
    pub owner: Option<(Owner, Vec<usize>)>,
    /// A pod's node and the record that shows it.
    pub node: Option<(String, usize)>,
    /// The first body seen (a pod's spec: its tolerations).
    pub first_body: Option<Value>,
    /// A deletion asked for and not yet done at the end: the fact's index.
    pub terminating: Option<usize>,
    /// The removal: the fact's index.
    pub deleted: Option<usize>,
    /// Records that tell about the pod's eviction without being a change themselves: the
    /// taint manager's `DisruptionTarget` condition, its `TaintManagerEviction` Event.
    pub eviction_notes: Vec<usize>,
    /// `FailedScheduling` Events.
    pub unschedulable: Vec<usize>,
}

/// The same change seen by an Event and an audit event: how far apart their times may be
/// (Events' legacy timestamps have whole seconds).
const EVENT_SLACK_NS: i64 = 2_000_000_000;

fn first_word_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let i = s.find(prefix)? + prefix.len();
    s[i..].split_whitespace().next()
}

impl History {
    pub fn build(key: ObjectKey, recs: Vec<Rec>) -> History {
        History::build_from(key, recs, &[])
    }

    /// The history of records read in time windows: `starts` are the times (ns) where a
    /// window begins whose earlier records are not loaded. The object's state just before
    /// such a time is unknown, so its first record there shows no change (the change it
    /// seems to show may be anything that happened before, unread).
    pub fn build_from(key: ObjectKey, mut recs: Vec<Rec>, starts: &[i64]) -> History {
        recs.sort_by_key(|r| (r.done.saturating_add(r.late), r.seq));
        recs.dedup_by(|a, b| a.id == b.id);
        let mut h = History {
            key,
            recs,
            facts: Vec::new(),
            uids: Vec::new(),
            owner: None,
            node: None,
            first_body: None,
            terminating: None,
            deleted: None,
            eviction_notes: Vec::new(),
            unschedulable: Vec::new(),
        };
        h.audit_facts(starts);
        h.event_facts();
        h.facts.sort_by_key(|f| (f.at, f.done));
        h.end_state();
        h
    }

    /// Whether a record is about this object itself (not an Event naming it in its message).
    pub fn own(&self, r: &Rec) -> bool {
        r.a.resource.as_deref() == Some(self.key.resource.as_str())
            && r.a.name.as_deref() == Some(self.key.name.as_str())
    }

    fn audit_facts(&mut self, starts: &[i64]) {
        let mut body: Option<Value> = None;
        let mut terminating = false;
        // After the start of a window, until a body is seen: the earlier state is not known.
        let mut unknown = false;
        let mut next_start = 0;
        for i in 0..self.recs.len() {
            let r = &self.recs[i];
            while next_start < starts.len() && r.done >= starts[next_start] {
                next_start += 1;
                body = None;
                terminating = false;
                unknown = true;
            }
            if !self.own(r) {
                continue;
            }
            if let Some(u) = &r.a.uid
                && r.is_audit()
                && !self.uids.contains(u)
            {
                self.uids.push(u.clone());
            }
            if self.owner.is_none()
                && let Some(o) = &r.a.owner
            {
                self.owner = Some((o.clone(), vec![i]));
            }
            if !r.is_audit() || !r.ok() {
                continue;
            }
            if r.a
                .stage
                .as_deref()
                .is_some_and(|s| s != "ResponseComplete" && s != "Panic")
            {
                continue;
            }
            let new_body = r.object_body().cloned();
            if self.first_body.is_none() && r.sub().is_none() {
                self.first_body = new_body.clone();
            }
            if let Some(n) = new_body.as_ref().and_then(body::node_name) {
                self.node.get_or_insert((n.to_string(), i));
            }
            let mut facts: Vec<Fact> = Vec::new();
            match (r.verb(), r.sub()) {
                ("create", None) => {
                    let mut f = Fact::new(ChangeKind::Created, r, i, format!("created{}", created_detail(&self.key.resource, new_body.as_ref())));
                    f.replicas = new_body.as_ref().and_then(body::replicas).map(|n| (None, Some(n)));
                    facts.push(f);
                    terminating = false;
                }
                ("update" | "patch", None) => match (&body, &new_body) {
                    (Some(old), Some(new)) => facts.extend(change_facts(r, i, &Diff::between(old, new))),
                    (_, None) => facts.push(Fact::new(
                        ChangeKind::Updated,
                        r,
                        i,
                        format!("updated ({} {}; the audit policy recorded no body, so what changed is not in the records)", r.verb(), r.target()),
                    )),
                    // The object's earlier state is not in the window: nothing to compare with.
                    (None, Some(_)) => {
                        if r.actor().is_some_and(|a| a.external) {
                            facts.push(Fact::new(ChangeKind::Updated, r, i, format!("updated ({} {})", r.verb(), r.target())));
                        }
                    }
                },
                ("update" | "patch", Some("scale")) => {
                    let from = body.as_ref().and_then(body::replicas);
                    let to = r
                        .response_body()
                        .and_then(body::replicas)
                        .or_else(|| r.request_body().and_then(body::replicas));
                    if from != to {
                        let mut f = Fact::new(ChangeKind::Scaled, r, i, scaled_words(from, to));
                        f.replicas = Some((from, to));
                        facts.push(f);
                    }
                    // The Scale is not the object; keep the body, with its new count.
                    if let (Some(b), Some(n)) = (body.as_mut(), to)
                        && let Some(spec) = b.get_mut("spec").and_then(Value::as_object_mut)
                    {
                        spec.insert("replicas".into(), n.into());
                    }
                }
                ("update" | "patch", Some("status")) => {
                    if let Some(new) = new_body.as_ref().filter(|_| !unknown) {
                        facts.extend(status_facts(r, i, body.as_ref(), new));
                        if self.key.resource == "pods"
                            && let Some((_, reason, _)) = body::condition(new, "DisruptionTarget")
                            && !reason.is_empty()
                            && body
                                .as_ref()
                                .and_then(|b| body::condition(b, "DisruptionTarget"))
                                .is_none()
                        {
                            self.eviction_notes.push(i);
                        }
                    }
                }
                ("create", Some("binding")) => {
                    let node = r.request_body().and_then(|b| b.get("target")?.get("name")?.as_str()).map(str::to_string);
                    let mut f = Fact::new(
                        ChangeKind::Bound,
                        r,
                        i,
                        format!("bound to node {}", node.as_deref().unwrap_or("?")),
                    );
                    if let Some(n) = &node {
                        self.node = Some((n.clone(), i));
                    }
                    f.node = node;
                    facts.push(f);
                }
                ("create", Some("eviction")) => {
                    let mut f = Fact::new(ChangeKind::Evicted, r, i, "evicted through the Eviction API (a graceful deletion)".into());
                    f.via = Via::EvictionApi;
                    facts.push(f);
                    terminating = true;
                }
                ("delete", None) => {
                    let deletion = new_body.as_ref().and_then(body::deletion).map(|(t, g)| (t.to_string(), g));
                    if terminating {
                        let mut f = Fact::new(ChangeKind::Deleted, r, i, format!("removed{}", grace_words(r)));
                        f.via = Via::Removal;
                        facts.push(f);
                        terminating = false;
                    } else {
                        match deletion {
                            Some((t, Some(g))) if g > 0 => {
                                facts.push(Fact::new(
                                    ChangeKind::DeletionRequested,
                                    r,
                                    i,
                                    format!("deletion requested (grace period {g} s, to end {t}){}", options_words(r)),
                                ));
                                terminating = true;
                            }
                            // With finalizers left, the object stays until they are done.
                            Some((t, None)) => {
                                facts.push(Fact::new(
                                    ChangeKind::DeletionRequested,
                                    r,
                                    i,
                                    format!("deletion requested (marked for deletion at {t}){}", options_words(r)),
                                ));
                                terminating = true;
                            }
                            _ => facts.push(Fact::new(ChangeKind::Deleted, r, i, format!("deleted{}", options_words(r)))),
                        }
                    }
                }
                _ => {}
            }
            if let Some(nb) = new_body
                && (r.sub().is_none() || r.sub() == Some("status"))
            {
                body = Some(nb);
                unknown = false;
            }
            self.facts.extend(facts);
        }
    }

    fn event_facts(&mut self) {
        for i in 0..self.recs.len() {
            let r = &self.recs[i];
            if !r.is_event() {
                continue;
            }
            let own = self.own(r);
            let msg = r.message().unwrap_or("").to_string();
            let mentioned = !own
                && r.a
                    .mention
                    .as_ref()
                    .is_some_and(|(res, n)| *res == self.key.resource && *n == self.key.name);
            let candidate: Option<Fact> = match (own, mentioned, r.reason()) {
                (false, true, "SuccessfulCreate") => {
                    if self.owner.is_none()
                        && let Some(o) = r.object_ref()
                    {
                        self.owner = Some((
                            Owner {
                                kind: o.kind.clone().unwrap_or_default(),
                                name: o.name.clone(),
                                uid: o.uid.clone().unwrap_or_default(),
                                group: o.group.clone(),
                            },
                            vec![i],
                        ));
                    }
                    Some(Fact::new(
                        ChangeKind::Created,
                        r,
                        i,
                        format!("created by {} (Event SuccessfulCreate)", r.component()),
                    ))
                }
                (false, true, "SuccessfulDelete") => Some(Fact::new(
                    ChangeKind::DeletionRequested,
                    r,
                    i,
                    format!(
                        "deletion requested by {} (Event SuccessfulDelete)",
                        r.component()
                    ),
                )),
                (false, true, "ScalingReplicaSet") => {
                    let to = first_word_after(&msg, " to ").and_then(|w| w.parse::<i64>().ok());
                    let from = first_word_after(&msg, " from ").and_then(|w| w.parse::<i64>().ok());
                    let mut f = Fact::new(
                        ChangeKind::Scaled,
                        r,
                        i,
                        format!(
                            "{} (Event ScalingReplicaSet on {})",
                            scaled_words(from, to),
                            r.target()
                        ),
                    );
                    f.replicas = Some((from, to));
                    Some(f)
                }
                (true, _, "Scheduled") => {
                    let node = first_word_after(&msg, " to ").map(str::to_string);
                    let mut f = Fact::new(
                        ChangeKind::Bound,
                        r,
                        i,
                        format!(
                            "bound to node {} (Event Scheduled)",
                            node.as_deref().unwrap_or("?")
                        ),
                    );
                    if let Some(n) = &node {
                        self.node.get_or_insert((n.clone(), i));
                    }
                    f.node = node;
                    Some(f)
                }
                (true, _, "TaintManagerEviction") => {
                    self.eviction_notes.push(i);
                    let mut f = Fact::new(
                        ChangeKind::Evicted,
                        r,
                        i,
                        format!("evicted by the taint manager (Event TaintManagerEviction: {msg})"),
                    );
                    f.via = Via::TaintManager;
                    Some(f)
                }
                (true, _, "Evicted") => {
                    let mut f = Fact::new(
                        ChangeKind::Evicted,
                        r,
                        i,
                        format!(
                            "evicted by the kubelet under node pressure (Event Evicted: {msg})"
                        ),
                    );
                    f.via = Via::KubeletPressure;
                    Some(f)
                }
                (true, _, "Preempted") => {
                    let mut f = Fact::new(
                        ChangeKind::Evicted,
                        r,
                        i,
                        format!("preempted by the scheduler (Event Preempted: {msg})"),
                    );
                    f.via = Via::Preemption;
                    Some(f)
                }
                (
                    true,
                    _,
                    "NodeHasInsufficientMemory"
                    | "NodeHasDiskPressure"
                    | "NodeHasInsufficientPID"
                    | "EvictionThresholdMet",
                ) => {
                    let mut f = Fact::new(
                        ChangeKind::UnderPressure,
                        r,
                        i,
                        format!("under pressure (Event {}: {msg})", r.reason()),
                    );
                    f.reason = Some(r.reason().to_string());
                    Some(f)
                }
                (true, _, "NodeNotReady") => Some(Fact::new(
                    ChangeKind::NotReady,
                    r,
                    i,
                    format!("not ready (Event NodeNotReady: {msg})"),
                )),
                (true, _, "NodeReady") => Some(Fact::new(
                    ChangeKind::Ready,
                    r,
                    i,
                    format!("ready (Event NodeReady: {msg})"),
                )),
                (true, _, "BackOff") if msg.contains("restarting failed container") => {
                    Some(Fact::new(
                        ChangeKind::Restarted,
                        r,
                        i,
                        format!(
                            "a container keeps failing and is restarted (Event BackOff: {msg})"
                        ),
                    ))
                }
                (true, _, "FailedScheduling") => {
                    self.unschedulable.push(i);
                    None
                }
                _ => None,
            };
            let Some(mut cand) = candidate else { continue };
            // The same change in the audit log: the Event becomes part of its evidence.
            let to = |f: &Fact| f.replicas.and_then(|r| r.1);
            let same = self
                .facts
                .iter_mut()
                .filter(|f| {
                    !f.from_event
                        && f.at.abs_diff(cand.at) <= EVENT_SLACK_NS.unsigned_abs()
                        && (f.what == cand.what
                            || (cand.what == ChangeKind::Evicted && f.is_deletion())
                            || (cand.what == ChangeKind::DeletionRequested && f.is_deletion())
                            || (cand.what == ChangeKind::Scaled && f.what == ChangeKind::Created))
                        && (to(&cand).is_none() || to(f) == to(&cand))
                })
                .min_by_key(|f| f.at.abs_diff(cand.at));
            match same {
                Some(f) => {
                    f.recs.push(i);
                    if cand.via != Via::Request && f.via == Via::Request {
                        f.via = cand.via;
                    }
                }
                None => {
                    // Several Events (repeats) for one change: keep the first.
                    let dup = self.facts.iter().any(|f| {
                        f.from_event
                            && f.what == cand.what
                            && f.at.abs_diff(cand.at) <= EVENT_SLACK_NS.unsigned_abs()
                            && f.summary == cand.summary
                    });
                    if !dup {
                        cand.from_event = true;
                        self.facts.push(cand);
                    }
                }
            }
        }
        // A deletion by the taint manager or the scheduler is an eviction: the actor, the
        // taint manager's DisruptionTarget condition and Event, or the scheduler's Event say so.
        for f in &mut self.facts {
            if !f.is_deletion() || f.from_event || f.what == ChangeKind::Evicted {
                continue;
            }
            let u = f.user.as_str();
            if f.via == Via::Request {
                if u == "system:serviceaccount:kube-system:node-controller"
                    && !self.eviction_notes.is_empty()
                {
                    f.via = Via::TaintManager;
                } else if u == "system:kube-scheduler" {
                    f.via = Via::Preemption;
                }
            }
            let by = match f.via {
                Via::TaintManager => "the taint manager",
                Via::Preemption => "the scheduler's preemption",
                _ => continue,
            };
            f.what = ChangeKind::Evicted;
            f.summary = format!("evicted by {by}: {}", f.summary);
            let notes: Vec<usize> = self
                .eviction_notes
                .iter()
                .copied()
                .filter(|n| !f.recs.contains(n))
                .collect();
            f.recs.extend(notes);
        }
    }

    fn end_state(&mut self) {
        self.terminating = None;
        self.deleted = None;
        for (i, f) in self.facts.iter().enumerate() {
            match f.what {
                ChangeKind::Created => {
                    self.terminating = None;
                    self.deleted = None;
                }
                ChangeKind::Deleted => {
                    self.deleted = Some(i);
                    self.terminating = None;
                }
                // An eviction by the kubelet fails the pod; it is not deleted by it.
                ChangeKind::DeletionRequested | ChangeKind::Evicted
                    if self.deleted.is_none()
                        && f.via != Via::KubeletPressure
                        && self.terminating.is_none() =>
                {
                    self.terminating = Some(i);
                }
                _ => {}
            }
        }
    }

    /// The latest fact asked for at or before `t` (ns) matching `pred`. (A controller reacts
    /// to a change once it is made, which is after it was asked for: the request time orders
    /// cause and effect; the completion time can come after the reaction's request.)
    pub fn latest_before(&self, t: i64, pred: impl Fn(&Fact) -> bool) -> Option<usize> {
        self.facts
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= t && pred(f))
            .max_by_key(|(_, f)| (f.at, f.done))
            .map(|(i, _)| i)
    }

    /// The record ids of a fact.
    pub fn ids(&self, f: &Fact) -> Vec<String> {
        f.recs.iter().map(|&i| self.recs[i].id.clone()).collect()
    }

    /// The object's reference.
    pub fn object_ref(&self) -> crate::model::ObjectRef {
        let own = self.recs.iter().find(|r| self.own(r));
        crate::model::ObjectRef {
            group: own.and_then(|r| r.a.api_group.clone()).unwrap_or_default(),
            resource: self.key.resource.clone(),
            kind: own.and_then(|r| r.a.object_kind.clone()).or_else(|| {
                kubetrail_activity::kinds::BUILTIN
                    .iter()
                    .find(|k| k.resource == self.key.resource)
                    .map(|k| k.kind.to_string())
            }),
            namespace: self.key.namespace.clone().flatten(),
            name: self.key.name.clone(),
            uid: self.uids.last().cloned(),
        }
    }
}

fn scaled_words(from: Option<i64>, to: Option<i64>) -> String {
    let n = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
    format!("scaled {}→{}", n(from), n(to))
}

fn grace_words(r: &Rec) -> String {
    match r
        .request_body()
        .and_then(|b| b.get("gracePeriodSeconds"))
        .and_then(Value::as_i64)
    {
        Some(g) => format!(" (gracePeriodSeconds {g})"),
        None => String::new(),
    }
}

fn options_words(r: &Rec) -> String {
    r.detail().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// What a new object's body says that people ask about.
fn created_detail(resource: &str, b: Option<&Value>) -> String {
    let Some(b) = b else { return String::new() };
    let mut parts: Vec<String> = Vec::new();
    match resource {
        "deployments" | "replicasets" | "statefulsets" | "replicationcontrollers" => {
            if let Some(n) = body::replicas(b) {
                parts.push(format!("replicas {n}"));
            }
            let im = body::images(b);
            if !im.is_empty() {
                parts.push(format!("image {}", im.join(", ")));
            }
            if let Some(rv) = body::revision(b) {
                parts.push(format!("revision {rv}"));
            }
        }
        "pods" | "daemonsets" | "jobs" => {
            let im = body::images(b);
            if !im.is_empty() {
                parts.push(format!("image {}", im.join(", ")));
            }
        }
        "rolebindings" | "clusterrolebindings" => parts.extend(body::binding(b)),
        "roles" | "clusterroles" => parts.extend(body::rules(b).map(|r| format!("rules {r}"))),
        "configmaps" | "secrets" => {
            let keys = body::data_keys(b);
            if !keys.is_empty() {
                parts.push(format!("keys {}", keys.join(", ")));
            }
        }
        _ => {}
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// The changes an update of the object's own body shows.
fn change_facts(r: &Rec, i: usize, d: &Diff) -> Vec<Fact> {
    let mut out = Vec::new();
    if let Some((from, to)) = d.replicas {
        let mut f = Fact::new(ChangeKind::Scaled, r, i, scaled_words(from, to));
        f.replicas = Some((from, to));
        out.push(f);
    }
    if d.template {
        let what = match &d.images {
            Some((a, b)) => format!(
                "rolled out a new pod template (image {} → {})",
                a.join(", "),
                b.join(", ")
            ),
            None => "rolled out a new pod template".to_string(),
        };
        let fm = r.uri_params("fieldManager");
        let what = if fm.is_empty() {
            what
        } else {
            format!("{what} (field manager {})", fm.join(","))
        };
        out.push(Fact::new(ChangeKind::RolledOut, r, i, what));
    }
    if d.restarted {
        out.push(Fact::new(
            ChangeKind::Restarted,
            r,
            i,
            "restarted (kubectl rollout restart: new restartedAt annotation)".into(),
        ));
    }
    match d.unschedulable {
        Some(true) => out.push(Fact::new(
            ChangeKind::Cordoned,
            r,
            i,
            "cordoned (spec.unschedulable true)".into(),
        )),
        Some(false) => out.push(Fact::new(
            ChangeKind::Uncordoned,
            r,
            i,
            "uncordoned (spec.unschedulable false)".into(),
        )),
        None => {}
    }
    if !d.taints_added.is_empty() {
        let mut f = Fact::new(
            ChangeKind::Tainted,
            r,
            i,
            format!("tainted {}", d.taints_added.join(", ")),
        );
        f.taints = d.taints_added.clone();
        out.push(f);
    }
    if !d.taints_removed.is_empty() {
        let mut f = Fact::new(
            ChangeKind::Untainted,
            r,
            i,
            format!("taint removed: {}", d.taints_removed.join(", ")),
        );
        f.taints = d.taints_removed.clone();
        out.push(f);
    }
    if out.is_empty() {
        let mut what: Vec<String> = Vec::new();
        if d.other_spec {
            what.push("spec changed".into());
        }
        if !d.data.is_empty() {
            what.push(format!("data keys changed: {}", d.data.join(", ")));
        }
        if let Some(rb) = &d.rbac {
            what.push(rb.clone());
        }
        // Labels and annotations matter when a person changes them; controllers write their
        // bookkeeping there all the time.
        if d.meta && what.is_empty() && r.actor().is_some_and(|a| a.external) {
            what.push("labels or annotations changed".into());
        }
        if !what.is_empty() {
            out.push(Fact::new(
                ChangeKind::Updated,
                r,
                i,
                format!("updated ({})", what.join("; ")),
            ));
        }
    }
    out
}

/// The changes a status update shows: a node's readiness, a pod failed by its kubelet.
fn status_facts(r: &Rec, i: usize, old: Option<&Value>, new: &Value) -> Vec<Fact> {
    let mut out = Vec::new();
    if r.a.resource.as_deref() == Some("nodes") {
        let before = old.and_then(|o| body::condition(o, "Ready")).map(|c| c.0);
        if let Some((status, reason, message)) = body::condition(new, "Ready")
            && before != Some(status)
        {
            let (what, word) = if status == "True" {
                (ChangeKind::Ready, "ready")
            } else {
                (ChangeKind::NotReady, "not ready")
            };
            let mut f = Fact::new(
                what,
                r,
                i,
                format!("{word} (Ready={status}, reason {reason}: {message})"),
            );
            f.reason = Some(reason.to_string());
            out.push(f);
        }
        for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            let before = old.and_then(|o| body::condition(o, ty)).map(|c| c.0);
            if let Some((status, reason, message)) = body::condition(new, ty)
                && status == "True"
                && before != Some("True")
            {
                let mut f = Fact::new(
                    ChangeKind::UnderPressure,
                    r,
                    i,
                    format!("under pressure ({ty}=True, reason {reason}: {message})"),
                );
                f.reason = Some(ty.to_string());
                out.push(f);
            }
        }
    }
    if r.a.resource.as_deref() == Some("pods") {
        let (phase, reason) = body::phase(new);
        let (old_phase, _) = old.map(body::phase).unwrap_or((None, None));
        if phase == Some("Failed") && reason == Some("Evicted") && old_phase != Some("Failed") {
            let msg = new
                .get("status")
                .and_then(|s| s.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut f = Fact::new(
                ChangeKind::Evicted,
                r,
                i,
                format!("evicted by the kubelet under node pressure ({msg})"),
            );
            f.via = Via::KubeletPressure;
            out.push(f);
        }
    }
    out
}
