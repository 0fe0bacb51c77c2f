//! `who`: one object's story, its changes and their causes, what it made, and what evidence
//! is missing. The object's records are read in the window asked for (a cause may be older
//! than the window); the objects its causes lead to, around the changes they explain (see
//! `evidence`); the objects a workload made, up to the window's end.

use futures_util::{StreamExt, TryStreamExt};
use kubetrail_core::Timestamp;

use crate::QueryError;
use crate::backend::{Backend, ObjectKey, Row, Window};
use crate::causes::chain;
use crate::evidence::{Evidence, Need, RELATED_LIMIT, Span};
use crate::history::{Fact, History};
use crate::model::{Change, ChangeKind, Child, EndState, Story, WhoQuery};
use crate::rec::Rec;
use crate::spec::rfc3339;

/// Records read per object at most (the newest are kept).
pub(crate) const OBJECT_LIMIT: usize = 5000;
/// Objects one owner made, at most.
const OWNED_LIMIT: usize = 1000;
/// Rounds of fetching what the rules need.
const ROUNDS: usize = 12;
/// Workload kinds whose story lists what they made.
const WORKLOADS: &[&str] = &[
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
];

pub(crate) fn window(q: &WhoQuery, now: Timestamp) -> Window {
    Window {
        since: q.since.map(|s| s.resolve(now).unix_nanos()),
        until: q.until.map(|s| s.resolve(now).unix_nanos()),
    }
}

/// Resolves the object of a `who` query to the key the store uses.
pub(crate) async fn resolve(
    backend: &dyn Backend,
    q: &WhoQuery,
    w: Window,
) -> Result<ObjectKey, QueryError> {
    let spec = q.object.as_ref().ok_or_else(|| {
        QueryError::BadQuery("who needs an object: KIND/NAME (e.g. pod/web-0)".into())
    })?;
    let name = spec.name.clone().ok_or_else(|| {
        QueryError::BadQuery(format!(
            "who needs KIND/NAME, not a kind alone ('{}')",
            spec.text
        ))
    })?;
    let resource = spec.ty.resource.clone();
    let namespace = match (&q.namespace, spec.ty.namespaced) {
        // Like kubectl, a namespace given for a cluster-scoped kind is ignored.
        (_, Some(false)) => Some(None),
        (Some(ns), _) => Some(Some(ns.clone())),
        (None, _) => {
            let found = backend.namespaces(&resource, &name, w).await?;
            match found.len() {
                0 => {
                    return Err(QueryError::NotFound(spec.text.clone(), window_words(w)));
                }
                1 => Some(found.into_iter().next().flatten()),
                _ => {
                    let names: Vec<String> = found
                        .iter()
                        .map(|n| n.clone().unwrap_or_else(|| "(cluster)".into()))
                        .collect();
                    return Err(QueryError::Ambiguous {
                        object: spec.text.clone(),
                        namespaces: names.join(", "),
                    });
                }
            }
        }
    };
    Ok(ObjectKey {
        resource,
        name,
        namespace,
    })
}

fn window_words(w: Window) -> String {
    match (w.since, w.until) {
        (None, None) => String::new(),
        (s, u) => format!(
            " between {} and {}",
            s.map_or("the beginning".into(), rfc3339),
            u.map_or("now".into(), rfc3339)
        ),
    }
}

async fn history(
    backend: &dyn Backend,
    key: &ObjectKey,
    w: Window,
) -> Result<(History, bool), QueryError> {
    let rows = backend.object_rows(key, w, OBJECT_LIMIT).await?;
    let truncated = rows.len() >= OBJECT_LIMIT;
    let recs: Vec<Rec> = rows.into_iter().map(Rec::from_row).collect();
    Ok((History::build(key.clone(), recs), truncated))
}

/// Reads in flight at once within a round: the PostgreSQL connection pipelines them, the
/// SQLite backend runs them on its pool of reader connections (as many).
const READS_IN_FLIGHT: usize = 4;

/// What one need's read returned.
enum Got {
    Object(ObjectKey, Vec<Row>),
    Around {
        key: ObjectKey,
        from: i64,
        until: i64,
        rows: Vec<Row>,
    },
    Owned(String, Vec<ObjectKey>),
    Uid(String, Vec<Row>),
}

/// Reads what one need asks for.
async fn read(backend: &dyn Backend, need: Need, w: Window) -> Result<Got, QueryError> {
    Ok(match need {
        Need::Object(k) => {
            let rows = backend.object_rows(&k, w, OBJECT_LIMIT).await?;
            Got::Object(k, rows)
        }
        Need::Around { key, from, to } => {
            // Never past the end of the window asked for.
            let until = w.until.map_or(to, |u| u.min(to));
            let win = Window {
                since: Some(from),
                until: Some(until),
            };
            let rows = backend.object_rows(&key, win, RELATED_LIMIT).await?;
            Got::Around {
                key,
                from,
                until,
                rows,
            }
        }
        Need::Owned(uid) => {
            let keys = backend.owned_keys(&uid, w, OWNED_LIMIT).await?;
            Got::Owned(uid, keys)
        }
        Need::Uid(uid) => {
            let rows = backend.uid_rows(&uid, w, 1).await?;
            Got::Uid(uid, rows)
        }
    })
}

/// Fetches what the rules asked for: the reads of one round go out together (at most
/// [`READS_IN_FLIGHT`] at a time) and are applied in the order they were asked, so the
/// answer does not depend on which read came back first.
async fn fetch(
    backend: &dyn Backend,
    ev: &mut Evidence,
    needs: Vec<Need>,
    w: Window,
) -> Result<(), QueryError> {
    let mut reads = Vec::new();
    for need in needs {
        let fresh = match &need {
            Need::Object(k) => ev.asked.insert((k.clone(), i64::MIN, i64::MAX)),
            Need::Around { key, from, to } => ev.asked.insert((key.clone(), *from, *to)),
            Need::Owned(_) | Need::Uid(_) => true,
        };
        if fresh {
            reads.push(read(backend, need, w));
        }
    }
    let got: Vec<Got> = futures_util::stream::iter(reads)
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await?;
    for g in got {
        match g {
            Got::Object(k, rows) => {
                let since = if rows.len() >= OBJECT_LIMIT {
                    rows.iter().map(|r| r.time).min()
                } else {
                    w.since
                };
                let recs = rows.into_iter().map(Rec::from_row).collect();
                ev.add(
                    &k,
                    Span {
                        since,
                        until: w.until,
                    },
                    recs,
                );
            }
            Got::Around {
                key,
                from,
                until,
                rows,
            } => {
                let since = if rows.len() >= RELATED_LIMIT {
                    rows.iter().map(|r| r.time).min()
                } else {
                    Some(from)
                };
                let recs = rows.into_iter().map(Rec::from_row).collect();
                ev.add(
                    &key,
                    Span {
                        since,
                        until: Some(until),
                    },
                    recs,
                );
            }
            Got::Owned(uid, keys) => {
                ev.owned.insert(uid, keys);
            }
            Got::Uid(uid, rows) => {
                let key = rows.into_iter().next().map(Rec::from_row).and_then(|r| {
                    Some(ObjectKey {
                        resource: r.a.resource.clone()?,
                        name: r.a.name.clone()?,
                        namespace: Some(r.a.namespace.clone()),
                    })
                });
                ev.uids.insert(uid, key);
            }
        }
    }
    Ok(())
}

/// The answer to a `who` query.
pub(crate) async fn who(
    backend: &dyn Backend,
    q: &WhoQuery,
    now: Timestamp,
) -> Result<Story, QueryError> {
    let w = window(q, now);
    let key = resolve(backend, q, w).await?;
    let (h, truncated) = history(backend, &key, w).await?;
    if h.recs.is_empty() {
        let text = q
            .object
            .as_ref()
            .map(|o| o.text.clone())
            .unwrap_or_default();
        let ns = key
            .namespace
            .clone()
            .flatten()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        return Err(QueryError::NotFound(format!("{text}{ns}"), window_words(w)));
    }
    let mut ev = Evidence::default();
    ev.histories.insert(key.clone(), h);
    // What the causes and the children need is read up to the end of the window, however old.
    let related = Window {
        since: None,
        until: w.until,
    };
    let mut story = assemble(&ev, &key);
    for _ in 0..ROUNDS {
        let needs = ev.take_needs();
        if needs.is_empty() {
            break;
        }
        fetch(backend, &mut ev, needs, related).await?;
        story = assemble(&ev, &key);
    }
    story.since = w.since.map(rfc3339);
    story.until = w.until.map(rfc3339);
    story.truncated = truncated;
    story.missing = missing(backend, &ev.histories[&key], w, truncated, q).await?;
    Ok(story)
}

/// The story as far as what is loaded tells it (noting what else it needs).
pub(crate) fn assemble(ev: &Evidence, key: &ObjectKey) -> Story {
    let h = &ev.histories[key];
    let mut steps: Vec<&Rec> = crate::rec::collapse_stages(h.recs.iter().collect());
    steps.sort_by_key(|r| (r.at.saturating_add(r.late), r.seq));
    let changes = h
        .facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let c = chain(ev, h, i);
            Change {
                what: f.what,
                time: rfc3339(f.at),
                actor: f.actor.clone(),
                summary: f.summary.clone(),
                record_ids: h.ids(f),
                causes: c.causes,
                missing: c.missing,
            }
        })
        .collect();
    Story {
        object: h.object_ref(),
        uids: h.uids.clone(),
        since: None,
        until: None,
        steps: steps.into_iter().map(Rec::entry).collect(),
        changes,
        state: end_state(h),
        children: if WORKLOADS.contains(&key.resource.as_str()) {
            children(ev, h, 2)
        } else {
            Vec::new()
        },
        missing: Vec::new(),
        truncated: false,
    }
}

fn actor_words(f: &Fact) -> String {
    f.actor
        .as_ref()
        .map_or_else(|| "an unknown actor".into(), |a| a.display.clone())
}

/// What the records say about the object at the end.
pub(crate) fn end_state(h: &History) -> EndState {
    if let Some(d) = h.deleted {
        let f = &h.facts[d];
        return EndState {
            state: "deleted".into(),
            since: Some(rfc3339(f.at)),
            detail: format!("deleted at {} by {}", rfc3339(f.at), actor_words(f)),
            record_ids: h.ids(f),
        };
    }
    if let Some(t) = h.terminating {
        let f = &h.facts[t];
        return EndState {
            state: "terminating".into(),
            since: Some(rfc3339(f.at)),
            detail: format!(
                "terminating since {} ({} by {}); no record shows it removed",
                rfc3339(f.at),
                f.what.word(),
                actor_words(f)
            ),
            record_ids: h.ids(f),
        };
    }
    // A pod its kubelet failed (evicted under node pressure) stays, failed, until removed.
    if let Some(f) = h.facts.iter().rev().find(|f| f.what != ChangeKind::Updated)
        && f.what == ChangeKind::Evicted
        && f.via == crate::history::Via::KubeletPressure
    {
        return EndState {
            state: "failed".into(),
            since: Some(rfc3339(f.at)),
            detail: format!(
                "failed since {} (evicted by its kubelet under node pressure); no record shows it deleted",
                rfc3339(f.at)
            ),
            record_ids: h.ids(f),
        };
    }
    let own: Vec<&Rec> = h.recs.iter().filter(|r| h.own(r)).collect();
    let Some(last) = own.iter().max_by_key(|r| r.at) else {
        return EndState {
            state: "unknown".into(),
            since: None,
            detail: "only Events naming it are in the records".into(),
            record_ids: Vec::new(),
        };
    };
    let created = h.facts.iter().rev().find(|f| f.what == ChangeKind::Created);
    EndState {
        state: "exists".into(),
        since: created.map(|f| rfc3339(f.at)),
        detail: match created {
            Some(f) => format!(
                "exists: created at {} by {}, no record shows it deleted (last record {})",
                rfc3339(f.at),
                actor_words(f),
                rfc3339(last.at)
            ),
            None => format!(
                "exists: no record shows it deleted (last record {})",
                rfc3339(last.at)
            ),
        },
        record_ids: vec![last.id.clone()],
    }
}

/// What a workload made (and what those made), oldest first.
fn children(ev: &Evidence, h: &History, depth: usize) -> Vec<Child> {
    if depth == 0 {
        return Vec::new();
    }
    let mut out: Vec<(i64, Child)> = Vec::new();
    for uid in &h.uids {
        let Some(keys) = ev.children(uid) else {
            continue;
        };
        for k in keys {
            if k.resource == h.key.resource && k.name == h.key.name {
                continue;
            }
            let Some(c) = ev.history(k) else { continue };
            let created = c.facts.iter().find(|f| f.what == ChangeKind::Created);
            out.push((
                created.map_or(i64::MAX, |f| f.at),
                Child {
                    object: c.object_ref(),
                    created: created.map(|f| rfc3339(f.at)),
                    state: end_state(c),
                    children: if WORKLOADS.contains(&k.resource.as_str()) {
                        children(ev, c, depth - 1)
                    } else {
                        Vec::new()
                    },
                },
            ));
        }
    }
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.object.name.cmp(&b.1.object.name))
    });
    out.into_iter().map(|(_, c)| c).collect()
}

/// The evidence an answer needed and the store does not hold.
async fn missing(
    backend: &dyn Backend,
    h: &History,
    w: Window,
    truncated: bool,
    q: &WhoQuery,
) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    if truncated {
        out.push(format!("the object has more than {OBJECT_LIMIT} records in the window: the oldest are left out (narrow it with --since/--until)"));
    }
    if !backend.any_of_kind("k8s_audit", w).await? {
        out.push("the store holds no audit events in this window: who asked for each change is not known (add the audit_webhook or audit_file input)".into());
    }
    if !backend.any_of_kind("k8s_event", w).await? {
        out.push("the store holds no Kubernetes Events in this window".into());
    }
    if !h.facts.iter().any(|f| f.what == ChangeKind::Created) {
        out.push(match q.since {
            Some(s) => format!("its creation is not in the window (since {s})"),
            None => "its creation is not in the records (older than the store's records, or not audited)".into(),
        });
    }
    for g in backend.gaps(w, 20).await? {
        let r = Rec::from_row(g);
        let get = |k: &str| {
            r.v.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        out.push(format!(
            "kubetrail lost records of stream {} ({}: {}), gap record {}",
            get("stream"),
            get("reason"),
            get("message"),
            r.id
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::backend::memory::Memory;
    use crate::evidence::{AROUND, BEFORE};

    const T0: i64 = 1_800_000_000_000_000_000;
    const S: i64 = 1_000_000_000;

    fn audit(
        i: usize,
        t: i64,
        user: &str,
        verb: &str,
        object: (&str, Option<&str>, &str, Option<&str>),
        response: Value,
    ) -> String {
        let (resource, ns, name, sub) = object;
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": format!("a{i}"),
            "stage": "ResponseComplete", "verb": verb,
            "user": {"username": user, "groups": ["g"]},
            "objectRef": {"resource": resource, "apiGroup": "", "namespace": ns, "name": name, "subresource": sub},
            "responseStatus": {"code": if verb == "create" { 201 } else { 200 }},
            "responseObject": response,
            "requestReceivedTimestamp": rfc3339(t),
            "stageTimestamp": rfc3339(t + 1_000_000),
        })
        .to_string()
    }

    fn node(taint: Option<&str>, ready: &str) -> Value {
        let taints: Vec<Value> = taint
            .map(|k| json!({"key": k, "effect": "NoExecute"}))
            .into_iter()
            .collect();
        json!({"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "n1", "uid": "uid-n1"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}})
    }

    /// Pod `shop/p` on node n1, as a response body.
    fn pod_p() -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "shop", "uid": "uid-p"},
            "spec": {"nodeName": "n1", "containers": [{"image": "img:1"}]}})
    }

    /// The story of pod `shop/p` told by `recs` (originals) in a store held in memory.
    async fn who_pod_p(recs: Vec<String>) -> (Memory, Story) {
        let backend = Memory::new(recs);
        let q = WhoQuery {
            object: Some("pod/p".parse().unwrap()),
            namespace: Some("shop".into()),
            since: None,
            until: None,
        };
        let story = who(&backend, &q, kubetrail_core::Timestamp::now())
            .await
            .unwrap();
        (backend, story)
    }

    /// A pod evicted by the taint manager from a node that was tainted before the eviction
    /// and stayed busy for long after it (more status patches than a whole read keeps), and
    /// was tainted NoExecute again later. The eviction's cause is the taint before it, read
    /// from the node's records around the eviction: none of the node's later records is read.
    #[tokio::test]
    async fn a_cause_is_read_before_the_change_it_explains_not_after() {
        let unreachable = "node.kubernetes.io/unreachable";
        let mut recs: Vec<String> = Vec::new();
        let push = |recs: &mut Vec<String>, t: i64, user: &str, verb: &str, obj, body: Value| {
            let i = recs.len();
            recs.push(audit(i, t, user, verb, obj, body));
        };
        let nc = "system:serviceaccount:kube-system:node-controller";
        let node_obj = ("nodes", None, "n1", None);
        let pod = pod_p();
        push(
            &mut recs,
            T0,
            "system:node:n1",
            "create",
            node_obj,
            node(None, "True"),
        );
        push(
            &mut recs,
            T0 + S,
            "alice",
            "create",
            ("pods", Some("shop"), "p", None),
            pod.clone(),
        );
        // The taint the eviction follows.
        push(
            &mut recs,
            T0 + 100 * S,
            nc,
            "update",
            node_obj,
            node(Some(unreachable), "Unknown"),
        );
        let evicted = T0 + 130 * S;
        push(
            &mut recs,
            evicted,
            nc,
            "delete",
            ("pods", Some("shop"), "p", None),
            Value::Null,
        );
        recs.push(
            json!({"kind": "Event", "apiVersion": "v1",
                "metadata": {"name": "p.1", "namespace": "shop", "uid": "e1", "resourceVersion": "1"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "shop", "uid": "uid-p", "apiVersion": "v1"},
                "reason": "TaintManagerEviction", "message": "Marking for deletion Pod shop/p",
                "type": "Normal", "source": {"component": "taint-controller"},
                "lastTimestamp": rfc3339(evicted)})
            .to_string(),
        );
        // Later: the taint removed, then put back; the node's kubelet busy for long after.
        let mut t = evicted + 60 * S;
        push(&mut recs, t, nc, "update", node_obj, node(None, "True"));
        t += S;
        push(
            &mut recs,
            t,
            nc,
            "update",
            node_obj,
            node(Some(unreachable), "Unknown"),
        );
        for _ in 0..(OBJECT_LIMIT + 100) {
            t += S;
            let obj = ("nodes", None, "n1", Some("status"));
            push(
                &mut recs,
                t,
                "system:node:n1",
                "patch",
                obj,
                node(Some(unreachable), "True"),
            );
        }
        let (backend, story) = who_pod_p(recs).await;
        let eviction = story
            .changes
            .iter()
            .find(|c| c.what == ChangeKind::Evicted)
            .expect("the eviction is a change");
        let cause = eviction.causes.first().unwrap_or_else(|| {
            panic!("the eviction has a cause: {:?}", eviction.missing);
        });
        assert_eq!(cause.object.name, "n1");
        assert_eq!(cause.what, ChangeKind::Tainted);
        assert_eq!(cause.time, rfc3339(T0 + 100 * S));
        assert_eq!(cause.record_ids, vec!["r2".to_string()]);
        // The node was read around the eviction only.
        let reads = backend.reads.lock().unwrap();
        let node_reads: Vec<&Window> = reads
            .iter()
            .filter(|(k, _)| k.resource == "nodes")
            .map(|(_, w)| w)
            .collect();
        assert!(!node_reads.is_empty());
        for w in node_reads {
            assert_eq!(w.since, Some(evicted - BEFORE));
            assert_eq!(w.until, Some(evicted + AROUND));
        }
    }

    /// Events with whole-second times (legacy Events) are listed after the requests of the
    /// same second, which they report on: the kubelet's `Killing` at 12:00:02 after the
    /// eviction asked for at 12:00:02.738. An Event with a precise time keeps its place.
    #[tokio::test]
    async fn a_whole_second_event_follows_the_requests_of_its_second() {
        let pod = pod_p();
        let p = ("pods", Some("shop"), "p", None);
        let evicted = T0 + 2 * S + 738_000_000;
        let involved = json!({"kind": "Pod", "name": "p", "namespace": "shop", "uid": "uid-p", "apiVersion": "v1"});
        let recs = vec![
            audit(0, T0, "alice", "create", p, pod),
            // A legacy Event: its time has whole seconds, the second of the eviction.
            json!({"kind": "Event", "apiVersion": "v1",
                "metadata": {"name": "p.1", "namespace": "shop", "uid": "e1", "resourceVersion": "1"},
                "involvedObject": involved,
                "reason": "Killing", "message": "Stopping container app",
                "type": "Normal", "source": {"component": "kubelet"},
                "lastTimestamp": rfc3339(T0 + 2 * S), "eventTime": null})
            .to_string(),
            // An events.k8s.io Event with microseconds, before the eviction in that second.
            json!({"kind": "Event", "apiVersion": "events.k8s.io/v1",
                "metadata": {"name": "p.2", "namespace": "shop", "uid": "e2", "resourceVersion": "2"},
                "regarding": involved,
                "reason": "Pulled", "note": "Container image already present",
                "type": "Normal", "reportingController": "kubelet",
                "eventTime": rfc3339(T0 + 2 * S + 100_000_000)})
            .to_string(),
            audit(
                3,
                evicted,
                "carol",
                "create",
                ("pods", Some("shop"), "p", Some("eviction")),
                Value::Null,
            ),
        ];
        let (_, story) = who_pod_p(recs).await;
        let order: Vec<(&str, Option<&str>)> = story
            .steps
            .iter()
            .map(|e| (e.time.as_str(), e.reason.as_deref()))
            .collect();
        let t = |ns: i64| rfc3339(ns);
        let (t0, pulled, killing, eviction) = (
            t(T0),
            t(T0 + 2 * S + 100_000_000),
            t(T0 + 2 * S),
            t(evicted),
        );
        assert_eq!(
            order,
            vec![
                (t0.as_str(), None),
                (pulled.as_str(), Some("Pulled")),
                (eviction.as_str(), None),
                (killing.as_str(), Some("Killing")),
            ]
        );
    }

    /// Records dated at the edges of what a timestamp can say (years 1677 and 2262) are
    /// answered about like any other, without overflowing the answers' time arithmetic.
    #[tokio::test]
    async fn records_at_the_edges_of_time_are_answered() {
        let pod = pod_p();
        let p = ("pods", Some("shop"), "p", None);
        let mut first = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a0",
            "stage": "ResponseComplete", "verb": "create", "user": {"username": "alice"},
            "objectRef": {"resource": "pods", "namespace": "shop", "name": "p"},
            "responseStatus": {"code": 201}, "responseObject": pod,
            "requestReceivedTimestamp": "1677-09-21T00:12:43.145224192Z",
            "stageTimestamp": "2262-04-11T23:47:16.854775807Z"});
        let recs = vec![
            first.to_string(),
            {
                first["auditID"] = json!("a1");
                first["verb"] = json!("delete");
                first["requestReceivedTimestamp"] = json!("2262-04-11T23:47:16.854775807Z");
                first.to_string()
            },
            json!({"kind": "Event", "apiVersion": "v1",
                "metadata": {"name": "p.1", "namespace": "shop", "uid": "e1", "resourceVersion": "1"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "shop", "uid": "uid-p", "apiVersion": "v1"},
                "reason": "Killing", "message": "Stopping container app",
                "type": "Normal", "source": {"component": "kubelet"},
                "lastTimestamp": "2262-04-11T23:47:16Z"})
            .to_string(),
            audit(3, T0, "bob", "patch", p, Value::Null),
        ];
        let (_, story) = who_pod_p(recs).await;
        assert_eq!(story.steps.len(), 4);
    }
}
