//! What the answers read from an object's body (a request or response object of an audit
//! event): replica counts, images, nodes, taints, conditions, RBAC rules and subjects.

use serde_json::Value;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// `spec.replicas` (a Scale's too).
pub fn replicas(b: &Value) -> Option<i64> {
    s(b, &["spec", "replicas"])?.as_i64()
}

/// The images of a workload's pod template, or of a pod.
pub fn images(b: &Value) -> Vec<String> {
    let spec = s(b, &["spec", "template", "spec"]).or_else(|| b.get("spec"));
    spec.and_then(|sp| sp.get("containers"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("image").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod template without the annotation `kubectl rollout restart` sets.
fn template_without_restart(b: &Value) -> Option<Value> {
    let mut t = s(b, &["spec", "template"])?.clone();
    if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/restartedAt");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
        if m.is_empty() {
            t.as_object_mut().map(|o| o.remove("metadata"));
        }
    }
    Some(t)
}

/// `kubectl.kubernetes.io/restartedAt` of the pod template.
pub fn restarted_at(b: &Value) -> Option<&str> {
    s(
        b,
        &[
            "spec",
            "template",
            "metadata",
            "annotations",
            "kubectl.kubernetes.io/restartedAt",
        ],
    )?
    .as_str()
}

/// A Deployment's revision annotation (also on its ReplicaSets).
pub fn revision(b: &Value) -> Option<&str> {
    s(
        b,
        &[
            "metadata",
            "annotations",
            "deployment.kubernetes.io/revision",
        ],
    )?
    .as_str()
}

/// The node a pod is bound to.
pub fn node_name(b: &Value) -> Option<&str> {
    s(b, &["spec", "nodeName"])?
        .as_str()
        .filter(|n| !n.is_empty())
}

/// A node's `spec.unschedulable`.
pub fn unschedulable(b: &Value) -> bool {
    s(b, &["spec", "unschedulable"])
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A node's taints as `key:Effect` (and `key=value:Effect`).
pub fn taints(b: &Value) -> Vec<String> {
    s(b, &["spec", "taints"])
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    let key = t.get("key")?.as_str()?;
                    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                    Some(
                        match t
                            .get("value")
                            .and_then(Value::as_str)
                            .filter(|v| !v.is_empty())
                        {
                            Some(v) => format!("{key}={v}:{effect}"),
                            None => format!("{key}:{effect}"),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A condition of `status.conditions`: `(status, reason, message)`.
pub fn condition<'a>(b: &'a Value, ty: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let c = s(b, &["status", "conditions"])?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))?;
    let get = |k| c.get(k).and_then(Value::as_str).unwrap_or("");
    Some((get("status"), get("reason"), get("message")))
}

/// How long a pod tolerates a NoExecute taint with this key, if it says.
pub fn toleration_seconds(pod: &Value, key: &str) -> Option<i64> {
    s(pod, &["spec", "tolerations"])?
        .as_array()?
        .iter()
        .find(|t| {
            t.get("effect")
                .and_then(Value::as_str)
                .is_none_or(|e| e == "NoExecute")
                && (t.get("key").and_then(Value::as_str) == Some(key)
                    || (t.get("key").is_none()
                        && t.get("operator").and_then(Value::as_str) == Some("Exists")))
        })?
        .get("tolerationSeconds")?
        .as_i64()
}

/// `metadata.deletionTimestamp` and `deletionGracePeriodSeconds`.
pub fn deletion(b: &Value) -> Option<(&str, Option<i64>)> {
    let m = b.get("metadata")?;
    let t = m.get("deletionTimestamp")?.as_str()?;
    Some((
        t,
        m.get("deletionGracePeriodSeconds").and_then(Value::as_i64),
    ))
}

/// A pod's `status.phase` and `status.reason`.
pub fn phase(b: &Value) -> (Option<&str>, Option<&str>) {
    (
        s(b, &["status", "phase"]).and_then(Value::as_str),
        s(b, &["status", "reason"]).and_then(Value::as_str),
    )
}

/// The keys of a ConfigMap's or Secret's data (never the values).
pub fn data_keys(b: &Value) -> Vec<String> {
    let mut keys: Vec<String> = ["data", "stringData", "binaryData"]
        .iter()
        .filter_map(|k| b.get(*k).and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A binding's role and subjects: `ClusterRole edit → User alice, User bob`.
pub fn binding(b: &Value) -> Option<String> {
    let r = b.get("roleRef")?;
    let role = format!(
        "{} {}",
        r.get("kind").and_then(Value::as_str).unwrap_or("?"),
        r.get("name").and_then(Value::as_str).unwrap_or("?")
    );
    let subjects: Vec<String> = b
        .get("subjects")
        .and_then(Value::as_array)
        .map(|ss| {
            ss.iter()
                .map(|x| {
                    let kind = x.get("kind").and_then(Value::as_str).unwrap_or("?");
                    let name = x.get("name").and_then(Value::as_str).unwrap_or("?");
                    match x.get("namespace").and_then(Value::as_str) {
                        Some(ns) if kind == "ServiceAccount" => format!("{kind} {ns}/{name}"),
                        _ => format!("{kind} {name}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(format!(
        "{role} → {}",
        if subjects.is_empty() {
            "no subjects".into()
        } else {
            subjects.join(", ")
        }
    ))
}

/// A role's rules: `nodes: get, list, watch, patch, update`.
pub fn rules(b: &Value) -> Option<String> {
    let rules = b.get("rules")?.as_array()?;
    let parts: Vec<String> = rules
        .iter()
        .map(|r| {
            let list = |k: &str| -> String {
                r.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let what = if r.get("nonResourceURLs").is_some() {
                list("nonResourceURLs")
            } else {
                list("resources")
            };
            format!("{what}: {}", list("verbs"))
        })
        .collect();
    Some(parts.join("; "))
}

/// What changed between two bodies of one object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub replicas: Option<(Option<i64>, Option<i64>)>,
    pub template: bool,
    pub restarted: bool,
    pub images: Option<(Vec<String>, Vec<String>)>,
    pub unschedulable: Option<bool>,
    pub taints_added: Vec<String>,
    pub taints_removed: Vec<String>,
    /// Any other change to `spec`.
    pub other_spec: bool,
    /// ConfigMap or Secret data keys changed (names of the keys added, removed or changed).
    pub data: Vec<String>,
    /// A binding's role or subjects, or a role's rules, changed.
    pub rbac: Option<String>,
    /// Labels or annotations changed.
    pub meta: bool,
}

impl Diff {
    pub fn between(old: &Value, new: &Value) -> Diff {
        let mut d = Diff::default();
        let (ro, rn) = (replicas(old), replicas(new));
        if ro != rn && rn.is_some() {
            d.replicas = Some((ro, rn));
        }
        let (to, tn) = (template_without_restart(old), template_without_restart(new));
        if to != tn && tn.is_some() {
            d.template = true;
            let (io, inew) = (images(old), images(new));
            if io != inew {
                d.images = Some((io, inew));
            }
        } else if restarted_at(old) != restarted_at(new) && restarted_at(new).is_some() {
            d.restarted = true;
        }
        if unschedulable(old) != unschedulable(new) {
            d.unschedulable = Some(unschedulable(new));
        }
        let (ta, tb) = (taints(old), taints(new));
        d.taints_added = tb.iter().filter(|t| !ta.contains(t)).cloned().collect();
        d.taints_removed = ta.iter().filter(|t| !tb.contains(t)).cloned().collect();
        // The rest of spec, without what is compared above.
        let rest = |b: &Value| -> Option<Value> {
            let mut sp = b.get("spec")?.clone();
            if let Some(m) = sp.as_object_mut() {
                for k in ["replicas", "template", "unschedulable", "taints"] {
                    m.remove(k);
                }
            }
            Some(sp)
        };
        d.other_spec = rest(old) != rest(new) && rest(new).is_some();
        for k in ["data", "stringData", "binaryData"] {
            let (a, b) = (
                old.get(k).and_then(Value::as_object),
                new.get(k).and_then(Value::as_object),
            );
            let keys: std::collections::BTreeSet<&String> =
                a.iter().chain(b.iter()).flat_map(|m| m.keys()).collect();
            for key in keys {
                if a.and_then(|m| m.get(key)) != b.and_then(|m| m.get(key)) {
                    d.data.push(key.clone());
                }
            }
        }
        if old.get("roleRef") != new.get("roleRef") || old.get("subjects") != new.get("subjects") {
            d.rbac = binding(new);
        } else if old.get("rules") != new.get("rules") {
            d.rbac = rules(new);
        }
        let meta = |b: &Value, k: &str| s(b, &["metadata", k]).cloned();
        d.meta = meta(old, "labels") != meta(new, "labels")
            || meta(old, "annotations") != meta(new, "annotations");
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs() {
        let a = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "nginx:1.25"}]}}}});
        let b = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"image": "nginx:1.25"}]}}}});
        let d = Diff::between(&a, &b);
        assert_eq!(d.replicas, Some((Some(3), Some(5))));
        assert!(!d.template && !d.other_spec);
        let c = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"image": "nginx:1.26"}]}}}});
        let d = Diff::between(&b, &c);
        assert!(d.template);
        assert_eq!(
            d.images,
            Some((vec!["nginx:1.25".into()], vec!["nginx:1.26".into()]))
        );
        let r = json!({"spec": {"replicas": 5, "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}}, "spec": {"containers": [{"image": "nginx:1.26"}]}}}});
        let d = Diff::between(&c, &r);
        assert!(d.restarted && !d.template);
        let n1 = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let n2 = json!({"spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "u", "effect": "NoExecute"}]}});
        let d = Diff::between(&n1, &n2);
        assert_eq!(d.unschedulable, Some(true));
        assert_eq!(d.taints_added, vec!["u:NoExecute"]);
        assert!(d.taints_removed.is_empty() && !d.other_spec);
    }

    #[test]
    fn readers() {
        let rb = json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"}]});
        assert_eq!(
            binding(&rb).unwrap(),
            "ClusterRole edit → User alice, User bob"
        );
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]});
        assert_eq!(rules(&role).unwrap(), "nodes: get, list");
        let pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}});
        assert_eq!(
            toleration_seconds(&pod, "node.kubernetes.io/unreachable"),
            Some(30)
        );
        assert_eq!(toleration_seconds(&pod, "other"), None);
        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status."}]}});
        assert_eq!(
            condition(&node, "Ready"),
            Some((
                "Unknown",
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status."
            ))
        );
        assert_eq!(
            data_keys(&json!({"data": {"b": "1", "a": "2"}})),
            vec!["a", "b"]
        );
    }
}
