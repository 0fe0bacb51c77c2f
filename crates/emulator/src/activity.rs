//! A small cluster at work, told twice as a real one tells it: the audit events its API
//! server would write (JSON lines, `audit.k8s.io/v1`, as `--audit-log-path` writes them) and
//! the Events its controllers, scheduler and kubelets would record (into the emulator). People
//! deploy, scale, roll out, drain a node and delete; a viewer is refused; a kubelet evicts a
//! pod under memory pressure; the controllers react as Kubernetes' do (ReplicaSets, pods,
//! bindings, replacements, garbage collection), each reaction with its own actor.
//!
//! It is what `kubetrail demo` records, so that `kubetrail who` has a story to tell without a
//! cluster. Deterministic for a given seed, apart from the times.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;

use crate::Emulator;

/// How the activity runs.
#[derive(Clone, Debug)]
pub struct ActivityOptions {
    /// The audit log written (created, appended to).
    pub audit_log: PathBuf,
    /// The namespace of the workloads.
    pub namespace: String,
    /// Seed of names and choices.
    pub seed: u64,
    /// The pause between two requests of people (the controllers react in between).
    pub pause: Duration,
}

/// Who makes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    Alice,
    Bob,
    Carol,
    Viewer,
    Deployments,
    ReplicaSets,
    NodeLifecycle,
    GarbageCollector,
    Scheduler,
    Kubelet(usize),
}

const NODES: &[&str] = &["node-1", "node-2", "node-3"];
const APPS: &[&str] = &["checkout", "cart", "search", "catalog"];

impl Who {
    fn user(self) -> (String, Vec<&'static str>, String, &'static str) {
        let sa = |n: &str| format!("system:serviceaccount:kube-system:{n}");
        let kcm = "kube-controller-manager/v1.28.7 (linux/amd64) kubernetes/97d04a8";
        let kubectl = "kubectl/v1.28.7 (linux/amd64) kubernetes/97d04a8";
        match self {
            Who::Admin => (
                "admin".into(),
                vec!["system:masters", "system:authenticated"],
                kubectl.into(),
                "10.0.0.2",
            ),
            Who::Alice => (
                "alice".into(),
                vec!["dev", "system:authenticated"],
                kubectl.into(),
                "10.0.0.7",
            ),
            Who::Bob => (
                "bob".into(),
                vec!["dev", "system:authenticated"],
                kubectl.into(),
                "10.0.0.8",
            ),
            Who::Carol => (
                "carol".into(),
                vec!["ops", "system:authenticated"],
                kubectl.into(),
                "10.0.0.9",
            ),
            Who::Viewer => (
                "viewer".into(),
                vec!["viewers", "system:authenticated"],
                kubectl.into(),
                "10.0.0.11",
            ),
            Who::Deployments => (
                sa("deployment-controller"),
                vec!["system:serviceaccounts", "system:authenticated"],
                kcm.into(),
                "10.0.0.1",
            ),
            Who::ReplicaSets => (
                sa("replicaset-controller"),
                vec!["system:serviceaccounts", "system:authenticated"],
                kcm.into(),
                "10.0.0.1",
            ),
            Who::NodeLifecycle => (
                sa("node-controller"),
                vec!["system:serviceaccounts", "system:authenticated"],
                kcm.into(),
                "10.0.0.1",
            ),
            Who::GarbageCollector => (
                sa("generic-garbage-collector"),
                vec!["system:serviceaccounts", "system:authenticated"],
                kcm.into(),
                "10.0.0.1",
            ),
            Who::Scheduler => (
                "system:kube-scheduler".into(),
                vec!["system:authenticated"],
                "kube-scheduler/v1.28.7 (linux/amd64) kubernetes/97d04a8/scheduler".into(),
                "10.0.0.1",
            ),
            Who::Kubelet(n) => (
                format!("system:node:{}", NODES[n]),
                vec!["system:nodes", "system:authenticated"],
                "kubelet/v1.28.7 (linux/amd64) kubernetes/97d04a8".into(),
                "10.0.1.1",
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Pod {
    name: String,
    uid: String,
    node: usize,
    image: String,
}

#[derive(Clone, Debug)]
struct ReplicaSet {
    name: String,
    uid: String,
    replicas: i64,
    image: String,
    revision: u32,
    pods: Vec<Pod>,
}

#[derive(Clone, Debug)]
struct Deployment {
    name: String,
    uid: String,
    replicas: i64,
    image: String,
    sets: Vec<ReplicaSet>,
}

/// The cluster's state and its two records.
struct Cluster {
    emu: Emulator,
    log: std::io::BufWriter<std::fs::File>,
    rng: fastrand::Rng,
    ns: String,
    cordoned: Vec<bool>,
    deployments: Vec<Deployment>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A time in whole seconds, as metav1.Time writes it.
fn secs(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn rfc(t: OffsetDateTime) -> String {
    let t = t
        .replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

impl Cluster {
    fn uid(&mut self) -> String {
        let a = self.rng.u128(..);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 96) as u32,
            (a >> 80) as u16,
            (a >> 64) as u16 & 0xfff,
            (a >> 48) as u16 & 0xfff,
            a as u64 & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..n)
            .map(|_| ALPHABET[self.rng.usize(..ALPHABET.len())] as char)
            .collect()
    }

    /// Writes one audit event (stage ResponseComplete) of a request made now.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &mut self,
        who: Who,
        verb: &str,
        (group, resource): (&str, &str),
        name: Option<&str>,
        sub: Option<&str>,
        code: u16,
        request: Value,
        response: Value,
        query: &str,
    ) {
        let (user, groups, ua, ip) = who.user();
        let received = now();
        let done = received + Duration::from_micros(u64::from(self.rng.u32(800..6000)));
        let version = if group.is_empty() {
            "v1".to_string()
        } else {
            format!("{group}/v1")
        };
        let namespaced = !matches!(resource, "nodes" | "namespaces");
        let mut uri = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{version}")
        };
        if namespaced {
            uri.push_str(&format!("/namespaces/{}", self.ns));
        }
        uri.push_str(&format!("/{resource}"));
        if let Some(n) = name {
            uri.push_str(&format!("/{n}"));
        }
        if let Some(s) = sub {
            uri.push_str(&format!("/{s}"));
        }
        uri.push_str(query);
        let mut object_ref = json!({"resource": resource, "apiVersion": "v1"});
        if !group.is_empty() {
            object_ref["apiGroup"] = json!(group);
        }
        if namespaced {
            object_ref["namespace"] = json!(self.ns);
        }
        if let Some(n) = name {
            object_ref["name"] = json!(n);
        }
        if let Some(s) = sub {
            object_ref["subresource"] = json!(s);
        }
        let mut status = json!({"metadata": {}, "code": code});
        let mut annotations =
            json!({"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""});
        if code == 403 {
            status["status"] = json!("Failure");
            status["reason"] = json!("Forbidden");
            status["message"] = json!(format!(
                "{resource} \"{}\" is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{}\"",
                name.unwrap_or(""),
                self.ns
            ));
            annotations = json!({"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""});
        }
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": self.uid(),
            "stage": "ResponseComplete",
            "requestURI": uri,
            "verb": verb,
            "user": {"username": user, "groups": groups},
            "sourceIPs": [ip],
            "userAgent": ua,
            "objectRef": object_ref,
            "responseStatus": status,
            "requestReceivedTimestamp": rfc(received),
            "stageTimestamp": rfc(done),
            "annotations": annotations,
        });
        if !request.is_null() {
            event["requestObject"] = request;
        }
        if !response.is_null() && code < 400 {
            event["responseObject"] = response;
        }
        let _ = writeln!(self.log, "{event}");
        let _ = self.log.flush();
    }

    /// Records an Event about an object, as its controller's recorder would.
    fn event(
        &mut self,
        (kind, group, name, uid): (&str, &str, &str, &str),
        reason: &str,
        message: String,
        component: &str,
        warning: bool,
    ) {
        let t = now();
        let namespaced = kind != "Node";
        let obj = json!({
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": format!("{name}.{:016x}", self.rng.u64(0x1000_0000_0000_0000..0x2000_0000_0000_0000)),
                "namespace": if namespaced { self.ns.clone() } else { "default".into() },
                "uid": self.uid(),
                "creationTimestamp": secs(t),
            },
            "involvedObject": {
                "kind": kind,
                "name": name,
                "uid": uid,
                "apiVersion": if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") },
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": secs(t),
            "lastTimestamp": secs(t),
            "count": 1,
            "type": if warning { "Warning" } else { "Normal" },
            "eventTime": null,
            "reportingComponent": component,
            "reportingInstance": "",
        });
        let mut obj = obj;
        if namespaced {
            obj["involvedObject"]["namespace"] = json!(self.ns);
        }
        if let Err(e) = self.emu.import_core_event_json(&obj.to_string()) {
            tracing::warn!(error = %e, "the activity could not record an Event");
        }
    }

    fn owner(kind: &str, name: &str, uid: &str) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
    }

    fn template(image: &str, app: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": app}},
            "spec": {
                "containers": [{"name": app, "image": image}],
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]
            }
        })
    }

    fn deployment_body(&self, d: &Deployment) -> Value {
        json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": d.name, "namespace": self.ns, "uid": d.uid},
            "spec": {"replicas": d.replicas, "selector": {"matchLabels": {"app": d.name}}, "template": Cluster::template(&d.image, &d.name)},
        })
    }

    fn rs_body(&self, d: &Deployment, rs: &ReplicaSet) -> Value {
        json!({
            "kind": "ReplicaSet", "apiVersion": "apps/v1",
            "metadata": {
                "name": rs.name, "namespace": self.ns, "uid": rs.uid,
                "annotations": {"deployment.kubernetes.io/revision": rs.revision.to_string()},
                "ownerReferences": Cluster::owner("Deployment", &d.name, &d.uid),
            },
            "spec": {"replicas": rs.replicas, "template": Cluster::template(&rs.image, &d.name)},
        })
    }

    fn pod_body(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        p: &Pod,
        bound: bool,
        deleting: Option<i64>,
    ) -> Value {
        let mut meta = json!({
            "name": p.name, "generateName": format!("{}-", rs.name), "namespace": self.ns, "uid": p.uid,
            "ownerReferences": Cluster::owner("ReplicaSet", &rs.name, &rs.uid),
        });
        if let Some(g) = deleting {
            meta["deletionTimestamp"] = json!(secs(now() + Duration::from_secs(g.max(0) as u64)));
            meta["deletionGracePeriodSeconds"] = json!(g);
        }
        let mut spec = Cluster::template(&p.image, &d.name)["spec"].clone();
        if bound {
            spec["nodeName"] = json!(NODES[p.node]);
        }
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {"phase": if bound { "Running" } else { "Pending" }}})
    }

    fn node_body(&self, n: usize, taints: Value) -> Value {
        json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": NODES[n], "uid": format!("00000000-0000-4000-8000-00000000000{n}")},
            "spec": {"unschedulable": self.cordoned[n], "taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]},
        })
    }

    async fn pause(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The replicaset-controller makes one pod and the scheduler binds it.
    async fn add_pod(&mut self, di: usize, ri: usize) {
        let suffix = self.suffix(5);
        let name = format!("{}-{suffix}", self.deployments[di].sets[ri].name);
        let uid = self.uid();
        let schedulable: Vec<usize> = (0..NODES.len()).filter(|n| !self.cordoned[*n]).collect();
        let node = if schedulable.is_empty() {
            0
        } else {
            schedulable[self.rng.usize(..schedulable.len())]
        };
        let pod = Pod {
            name: name.clone(),
            uid: uid.clone(),
            node,
            image: self.deployments[di].sets[ri].image.clone(),
        };
        let (d, rs) = (
            self.deployments[di].clone(),
            self.deployments[di].sets[ri].clone(),
        );
        let body = self.pod_body(&d, &rs, &pod, false, None);
        self.audit(
            Who::ReplicaSets,
            "create",
            ("", "pods"),
            None,
            None,
            201,
            body.clone(),
            body,
            "",
        );
        self.event(
            ("ReplicaSet", "apps", &rs.name, &rs.uid),
            "SuccessfulCreate",
            format!("Created pod: {name}"),
            "replicaset-controller",
            false,
        );
        self.pause(15).await;
        let binding = json!({"kind": "Binding", "apiVersion": "v1", "metadata": {"name": name, "namespace": self.ns, "uid": uid}, "target": {"kind": "Node", "name": NODES[node]}});
        self.audit(
            Who::Scheduler,
            "create",
            ("", "pods"),
            Some(&name),
            Some("binding"),
            201,
            binding,
            json!({"kind": "Status", "status": "Success", "code": 201}),
            "",
        );
        self.event(
            ("Pod", "", &name, &uid),
            "Scheduled",
            format!(
                "Successfully assigned {}/{name} to {}",
                self.ns, NODES[node]
            ),
            "default-scheduler",
            false,
        );
        self.deployments[di].sets[ri].pods.push(pod);
    }

    /// A pod's deletion asked by `who` (graceful), then its kubelet removing it.
    async fn remove_pod(&mut self, di: usize, ri: usize, pi: usize, who: Who, evict: bool) {
        let (d, rs) = (
            self.deployments[di].clone(),
            self.deployments[di].sets[ri].clone(),
        );
        let p = rs.pods[pi].clone();
        if evict {
            let req = json!({"kind": "Eviction", "apiVersion": "policy/v1", "metadata": {"name": p.name, "namespace": self.ns}});
            self.audit(
                who,
                "create",
                ("", "pods"),
                Some(&p.name),
                Some("eviction"),
                201,
                req,
                json!({"kind": "Status", "status": "Success", "code": 201}),
                "",
            );
        } else {
            let body = self.pod_body(&d, &rs, &p, true, Some(30));
            self.audit(who, "delete", ("", "pods"), Some(&p.name), None, 200, json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"}), body, "");
            if who == Who::ReplicaSets {
                self.event(
                    ("ReplicaSet", "apps", &rs.name, &rs.uid),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name),
                    "replicaset-controller",
                    false,
                );
            }
        }
        self.event(
            ("Pod", "", &p.name, &p.uid),
            "Killing",
            format!("Stopping container {}", d.name),
            "kubelet",
            false,
        );
        self.pause(40).await;
        let body = self.pod_body(&d, &rs, &p, true, Some(0));
        self.audit(
            Who::Kubelet(p.node),
            "delete",
            ("", "pods"),
            Some(&p.name),
            None,
            200,
            json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "gracePeriodSeconds": 0, "preconditions": {"uid": p.uid}}),
            body,
            "",
        );
        self.deployments[di].sets[ri].pods.remove(pi);
    }

    /// The replicaset-controller brings a ReplicaSet's pods to its count.
    async fn reconcile(&mut self, di: usize, ri: usize) {
        loop {
            let rs = &self.deployments[di].sets[ri];
            let have = rs.pods.len() as i64;
            if have < rs.replicas {
                self.add_pod(di, ri).await;
            } else if have > rs.replicas {
                let last = rs.pods.len() - 1;
                self.remove_pod(di, ri, last, Who::ReplicaSets, false).await;
            } else {
                return;
            }
            self.pause(20).await;
        }
    }

    /// The deployment-controller sets a ReplicaSet's count.
    async fn scale_rs(&mut self, di: usize, ri: usize, to: i64) {
        let from = self.deployments[di].sets[ri].replicas;
        self.deployments[di].sets[ri].replicas = to;
        let (d, rs) = (
            self.deployments[di].clone(),
            self.deployments[di].sets[ri].clone(),
        );
        let body = self.rs_body(&d, &rs);
        self.audit(
            Who::Deployments,
            "update",
            ("apps", "replicasets"),
            Some(&rs.name),
            None,
            200,
            body.clone(),
            body,
            "",
        );
        let (dir, tail) = if to > from {
            ("up", String::new())
        } else {
            ("down", format!(" from {from}"))
        };
        self.event(
            ("Deployment", "apps", &d.name, &d.uid),
            "ScalingReplicaSet",
            format!("Scaled {dir} replica set {} to {to}{tail}", rs.name),
            "deployment-controller",
            false,
        );
        self.pause(15).await;
        self.reconcile(di, ri).await;
    }

    /// The deployment-controller makes a ReplicaSet for the current template.
    async fn new_rs(&mut self, di: usize, replicas: i64) -> usize {
        let hash: String = (0..10)
            .map(|_| char::from_digit(self.rng.u32(0..16), 16).unwrap_or('0'))
            .collect();
        let d = self.deployments[di].clone();
        let rs = ReplicaSet {
            name: format!("{}-{hash}", d.name),
            uid: self.uid(),
            replicas,
            image: d.image.clone(),
            revision: d.sets.len() as u32 + 1,
            pods: Vec::new(),
        };
        let body = self.rs_body(&d, &rs);
        self.audit(
            Who::Deployments,
            "create",
            ("apps", "replicasets"),
            None,
            None,
            201,
            body.clone(),
            body,
            "",
        );
        self.event(
            ("Deployment", "apps", &d.name, &d.uid),
            "ScalingReplicaSet",
            format!("Scaled up replica set {} to {replicas}", rs.name),
            "deployment-controller",
            false,
        );
        self.deployments[di].sets.push(rs);
        let ri = self.deployments[di].sets.len() - 1;
        self.pause(15).await;
        self.reconcile(di, ri).await;
        ri
    }

    async fn create_deployment(&mut self, who: Who, app: &str) -> usize {
        let image = format!("registry.example/{app}:1.{}", self.rng.u32(0..9));
        let d = Deployment {
            name: app.to_string(),
            uid: self.uid(),
            replicas: 3,
            image,
            sets: Vec::new(),
        };
        let body = self.deployment_body(&d);
        self.audit(
            who,
            "create",
            ("apps", "deployments"),
            None,
            None,
            201,
            body.clone(),
            body,
            "?fieldManager=kubectl-client-side-apply",
        );
        self.deployments.push(d);
        let di = self.deployments.len() - 1;
        self.pause(20).await;
        self.new_rs(di, 3).await;
        di
    }

    async fn scale_deployment(&mut self, who: Who, di: usize, to: i64) {
        let from = self.deployments[di].replicas;
        self.deployments[di].replicas = to;
        let name = self.deployments[di].name.clone();
        let req = json!({"spec": {"replicas": to}});
        let resp = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": name, "namespace": self.ns, "uid": self.deployments[di].uid}, "spec": {"replicas": to}, "status": {"replicas": from}});
        self.audit(
            who,
            "patch",
            ("apps", "deployments"),
            Some(&name),
            Some("scale"),
            200,
            req,
            resp,
            "",
        );
        self.pause(20).await;
        let ri = self.deployments[di].sets.len() - 1;
        self.scale_rs(di, ri, to).await;
    }

    async fn set_image(&mut self, who: Who, di: usize) {
        let d = &self.deployments[di];
        let image = format!("registry.example/{}:2.{}", d.name, self.rng.u32(0..9));
        self.deployments[di].image = image.clone();
        let name = self.deployments[di].name.clone();
        let body = self.deployment_body(&self.deployments[di].clone());
        let req = json!({"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}});
        self.audit(
            who,
            "patch",
            ("apps", "deployments"),
            Some(&name),
            None,
            200,
            req,
            body,
            "?fieldManager=kubectl-set",
        );
        self.pause(20).await;
        // A rolling update: the new ReplicaSet up one, the old one down one.
        let old = self.deployments[di].sets.len() - 1;
        let want = self.deployments[di].replicas;
        let new = self.new_rs(di, 1).await;
        let mut up = 1;
        while self.deployments[di].sets[old].replicas > 0 {
            let down = self.deployments[di].sets[old].replicas - 1;
            self.scale_rs(di, old, down).await;
            if up < want {
                up += 1;
                self.scale_rs(di, new, up).await;
            }
        }
    }

    /// The node a drain takes: `preferred` if a pod runs on it, else the first node that has
    /// one (so a drain always evicts something to tell about).
    fn node_to_drain(&self, preferred: usize) -> usize {
        let busy = |n: usize| {
            self.deployments
                .iter()
                .flat_map(|d| d.sets.iter())
                .any(|s| s.pods.iter().any(|p| p.node == n))
        };
        if busy(preferred) {
            return preferred;
        }
        (0..NODES.len()).find(|&n| busy(n)).unwrap_or(preferred)
    }

    /// `kubectl drain`: cordon, then evict every pod of the node through the Eviction API.
    async fn drain(&mut self, who: Who, n: usize) {
        self.cordoned[n] = true;
        let body = self.node_body(n, json!([]));
        self.audit(
            who,
            "patch",
            ("", "nodes"),
            Some(NODES[n]),
            None,
            200,
            json!({"spec": {"unschedulable": true}}),
            body,
            "",
        );
        self.pause(15).await;
        let taints = json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": rfc(now())}]);
        let body = self.node_body(n, taints.clone());
        self.audit(
            Who::NodeLifecycle,
            "patch",
            ("", "nodes"),
            Some(NODES[n]),
            None,
            200,
            json!({"spec": {"taints": taints}}),
            body,
            "",
        );
        self.event(
            (
                "Node",
                "",
                NODES[n],
                &format!("00000000-0000-4000-8000-00000000000{n}"),
            ),
            "NodeNotSchedulable",
            format!("Node {} status is now: NodeNotSchedulable", NODES[n]),
            "kubelet",
            false,
        );
        for di in 0..self.deployments.len() {
            for ri in 0..self.deployments[di].sets.len() {
                while let Some(pi) = self.deployments[di].sets[ri]
                    .pods
                    .iter()
                    .position(|p| p.node == n)
                {
                    self.remove_pod(di, ri, pi, who, true).await;
                    self.reconcile(di, ri).await;
                }
            }
        }
    }

    async fn uncordon(&mut self, who: Who, n: usize) {
        self.cordoned[n] = false;
        // The taint stays until the node lifecycle controller sees the node schedulable.
        let tainted = self.node_body(
            n,
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        self.audit(
            who,
            "patch",
            ("", "nodes"),
            Some(NODES[n]),
            None,
            200,
            json!({"spec": {"unschedulable": null}}),
            tainted,
            "",
        );
        self.pause(15).await;
        let body = self.node_body(n, json!([]));
        self.audit(
            Who::NodeLifecycle,
            "patch",
            ("", "nodes"),
            Some(NODES[n]),
            None,
            200,
            json!({"spec": {"taints": null}}),
            body,
            "",
        );
    }

    /// The kubelet fails a pod under memory pressure; the ReplicaSet replaces it.
    async fn pressure(&mut self, di: usize) {
        let ri = self.deployments[di].sets.len() - 1;
        let Some(p) = self.deployments[di].sets[ri].pods.first().cloned() else {
            return;
        };
        let node = p.node;
        self.event(
            (
                "Node",
                "",
                NODES[node],
                &format!("00000000-0000-4000-8000-00000000000{node}"),
            ),
            "EvictionThresholdMet",
            "Attempting to reclaim memory".into(),
            "kubelet",
            true,
        );
        let (d, rs) = (
            self.deployments[di].clone(),
            self.deployments[di].sets[ri].clone(),
        );
        let mut body = self.pod_body(&d, &rs, &p, true, None);
        let message =
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 87436Ki.";
        body["status"] = json!({"phase": "Failed", "reason": "Evicted", "message": message});
        self.audit(
            Who::Kubelet(node),
            "patch",
            ("", "pods"),
            Some(&p.name),
            Some("status"),
            200,
            json!({"status": {"phase": "Failed", "reason": "Evicted"}}),
            body,
            "",
        );
        self.event(
            ("Pod", "", &p.name, &p.uid),
            "Evicted",
            message.to_string(),
            "kubelet",
            true,
        );
        self.pause(20).await;
        // A failed pod no longer counts: a replacement comes; the failed one stays until
        // someone cleans it up.
        self.deployments[di].sets[ri].pods.remove(0);
        self.reconcile(di, ri).await;
    }

    async fn forbidden(&mut self, di: usize) {
        let ri = self.deployments[di].sets.len() - 1;
        let Some(p) = self.deployments[di].sets[ri].pods.first().cloned() else {
            return;
        };
        self.audit(
            Who::Viewer,
            "delete",
            ("", "pods"),
            Some(&p.name),
            None,
            403,
            Value::Null,
            Value::Null,
            "",
        );
    }

    /// `kubectl delete deployment`: the garbage collector deletes what it made.
    async fn delete_deployment(&mut self, who: Who, di: usize) {
        let d = self.deployments.remove(di);
        self.audit(who, "delete", ("apps", "deployments"), Some(&d.name), None, 200, json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"}), json!({"kind": "Status", "status": "Success"}), "");
        self.pause(20).await;
        for rs in &d.sets {
            let body = self.rs_body(&d, rs);
            self.audit(Who::GarbageCollector, "delete", ("apps", "replicasets"), Some(&rs.name), None, 200, json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"}), body, "");
            self.pause(10).await;
            for p in &rs.pods {
                let body = self.pod_body(&d, rs, p, true, Some(30));
                self.audit(Who::GarbageCollector, "delete", ("", "pods"), Some(&p.name), None, 200, json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"}), body, "");
                self.pause(10).await;
                let body = self.pod_body(&d, rs, p, true, Some(0));
                self.audit(Who::Kubelet(p.node), "delete", ("", "pods"), Some(&p.name), None, 200, json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "gracePeriodSeconds": 0}), body, "");
            }
        }
    }
}

/// One round of the story, step by step (each step a person's request).
enum Step {
    Create(Who),
    Scale(Who, i64),
    SetImage(Who),
    Drain(Who),
    Forbidden,
    Pressure,
    Uncordon(Who),
    Delete(Who),
}

/// Runs the activity until the emulator shuts down.
pub fn spawn_activity(emu: Emulator, opts: ActivityOptions) -> JoinHandle<()> {
    tokio::spawn(async move {
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.audit_log)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %opts.audit_log.display(), error = %e, "cannot write the audit log");
                return;
            }
        };
        let mut c = Cluster {
            emu: emu.clone(),
            log: std::io::BufWriter::new(file),
            rng: fastrand::Rng::with_seed(opts.seed),
            ns: opts.namespace.clone(),
            cordoned: vec![false; NODES.len()],
            deployments: Vec::new(),
        };
        for n in 0..NODES.len() {
            let body = c.node_body(n, json!([]));
            c.audit(
                Who::Admin,
                "create",
                ("", "nodes"),
                None,
                None,
                201,
                body.clone(),
                body,
                "",
            );
        }
        let mut round = 0usize;
        while !emu.is_shut_down() {
            let app = if round < APPS.len() {
                APPS[round].to_string()
            } else {
                format!("{}-{round}", APPS[round % APPS.len()])
            };
            let mut drained = round % NODES.len();
            let mut steps: VecDeque<Step> = VecDeque::from([
                Step::Create(Who::Alice),
                Step::Scale(Who::Bob, 5),
                Step::SetImage(Who::Alice),
                Step::Drain(Who::Carol),
                Step::Forbidden,
                Step::Pressure,
                Step::Uncordon(Who::Carol),
                Step::Scale(Who::Bob, 2),
                Step::Delete(Who::Alice),
            ]);
            let mut di = 0;
            while let Some(step) = steps.pop_front() {
                if emu.is_shut_down() {
                    return;
                }
                match step {
                    Step::Create(w) => di = c.create_deployment(w, &app).await,
                    Step::Scale(w, n) => c.scale_deployment(w, di, n).await,
                    Step::SetImage(w) => c.set_image(w, di).await,
                    Step::Drain(w) => {
                        drained = c.node_to_drain(drained);
                        c.drain(w, drained).await
                    }
                    Step::Forbidden => c.forbidden(di).await,
                    Step::Pressure => c.pressure(di).await,
                    Step::Uncordon(w) => c.uncordon(w, drained).await,
                    Step::Delete(w) => c.delete_deployment(w, di).await,
                }
                tokio::time::sleep(opts.pause).await;
            }
            round += 1;
        }
    })
}
