//! Fills an activity database with synthetic records for the activity page's benchmark
//! (`bench/ui-page.sh`): a week of a busy cluster's audit events and Events, in time order as
//! a pipeline stores them, through the `store` output's own writer (the same extraction of
//! columns, the same schema).
//!
//! ```text
//! cargo run --release -p kubetrail-ui --example fill_store -- PATH RECORDS
//! ```
//!
//! The mix, after what apiservers of busy clusters log: 70 % audit events, 30 % Events. Audit:
//! 30 % lease renewals (every node and the controllers, in `kube-node-lease` and
//! `kube-system`), 25 % pods, 10 % node status, 10 % configmaps, 5 % secrets (metadata only),
//! 8 % deployments and replicasets, 5 % endpointslices, 7 % Events created; 60 % reads (get,
//! list, watch) outside leases and node status; about 2 % refused or failed (403, 404, 409,
//! 500). Actors: 40 people (kubectl), 12 controllers, 50 nodes (kubelets). Events: 80 % about
//! pods, the rest about replicasets, deployments and nodes; 10 % Warnings. 100 namespaces of 20
//! workloads each, pods replaced over the week. Records are the raw audit events and Events
//! (what `format: raw` stores), which keeps the database as small as such a store gets.
//!
//! Bulk: the secondary indexes are dropped while the rows go in and built again at the end
//! from the schema's own statements (sorting once is much faster than ten million random
//! index insertions), and records are generated on a second thread. No `ANALYZE`: the
//! database ends as the `store` output leaves it.

use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use kubetrail_activity::{ActivityWriter, WriterOptions};
use kubetrail_core::Timestamp;

const NAMESPACES: usize = 100;
const WORKLOADS: usize = 20;
const NODES: usize = 50;
const BATCH: usize = 20_000;
const WEEK: i64 = 7 * 24 * 3600 * 1_000_000_000;
/// How many batches the generator may be ahead of the writer.
const AHEAD: usize = 4;

const PEOPLE: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "lena", "mallory", "nina", "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "ursula",
    "victor", "walter", "xena", "yusuf", "zoe", "amir", "bea", "chen", "dara", "eli", "fatima",
    "gus", "hana", "igor", "jun", "kofi", "lars", "mei", "nadia",
];
const CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "generic-garbage-collector",
    "node-controller",
    "statefulset-controller",
    "job-controller",
    "endpointslice-controller",
    "horizontal-pod-autoscaler",
    "daemon-set-controller",
    "namespace-controller",
    "cronjob-controller",
    "disruption-controller",
];
const READS: &[&str] = &["get", "list", "watch"];
const WRITES: &[&str] = &["create", "update", "patch", "delete"];
const REASONS: &[(&str, &str)] = &[
    ("Scheduled", "Successfully assigned {ns}/{pod} to {node}"),
    (
        "Pulled",
        "Container image \"nginx:1.26\" already present on machine",
    ),
    ("Created", "Created container web"),
    ("Started", "Started container web"),
    ("Killing", "Stopping container web"),
    ("SuccessfulCreate", "Created pod: {pod}"),
    ("ScalingReplicaSet", "Scaled up replica set web-7d9 to 3"),
];
const WARNINGS: &[(&str, &str)] = &[
    (
        "BackOff",
        "Back-off pulling image \"ghcr.io/shop/api:does-not-exist\"",
    ),
    (
        "FailedScheduling",
        "0/50 nodes are available: 50 Insufficient memory.",
    ),
    (
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    ),
    ("Evicted", "The node was low on resource: memory."),
];

fn uuid() -> String {
    let h = format!("{:032x}", fastrand::u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn pick<T: Copy>(xs: &[T]) -> T {
    xs[fastrand::usize(..xs.len())]
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A workload's pod: workloads keep their pods for about an hour of the week.
fn pod(k: u64, total: u64) -> (String, String) {
    let ns = format!("ns-{}", fastrand::usize(..NAMESPACES));
    let generation = k * 168 / total.max(1);
    let name = format!(
        "web-{}-{generation:03}-{:05x}",
        fastrand::usize(..WORKLOADS),
        fastrand::u32(..0x10)
    );
    (ns, name)
}

struct Actor {
    user: String,
    groups: &'static str,
    agent: &'static str,
}

fn person() -> Actor {
    Actor {
        user: pick(PEOPLE).to_string(),
        groups: r#"["dev","system:authenticated"]"#,
        agent: "kubectl/v1.30.2 (linux/amd64) kubernetes/39683505",
    }
}

fn controller() -> Actor {
    Actor {
        user: format!("system:serviceaccount:kube-system:{}", pick(CONTROLLERS)),
        groups: r#"["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]"#,
        agent: "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/39683505/system:serviceaccount:kube-system:generic",
    }
}

fn node_actor(n: usize) -> Actor {
    Actor {
        user: format!("system:node:node-{n}"),
        groups: r#"["system:nodes","system:authenticated"]"#,
        agent: "kubelet/v1.30.2 (linux/amd64) kubernetes/39683505",
    }
}

/// People, controllers and (for pods) kubelets.
fn anyone() -> Actor {
    match fastrand::u8(..100) {
        0..35 => person(),
        35..80 => controller(),
        _ => node_actor(fastrand::usize(..NODES)),
    }
}

fn verb() -> &'static str {
    if fastrand::u8(..100) < 60 {
        pick(READS)
    } else {
        pick(WRITES)
    }
}

fn audit(t: &str, k: u64, total: u64) -> (String, String) {
    let node = fastrand::usize(..NODES);
    // (api group, resource, namespace, name, subresource, verb, actor)
    let (group, resource, ns, name, sub, verb, actor): (
        &str,
        &str,
        Option<String>,
        String,
        Option<&str>,
        &str,
        Actor,
    ) = match fastrand::u8(..100) {
        0..30 => {
            if fastrand::bool() {
                let v = if fastrand::bool() { "get" } else { "update" };
                let lease = format!("node-{node}");
                let ns = Some("kube-node-lease".to_string());
                (
                    "coordination.k8s.io",
                    "leases",
                    ns,
                    lease,
                    None,
                    v,
                    node_actor(node),
                )
            } else {
                let c = pick(CONTROLLERS);
                let v = if fastrand::bool() { "get" } else { "update" };
                let ns = Some("kube-system".to_string());
                let a = controller();
                (
                    "coordination.k8s.io",
                    "leases",
                    ns,
                    c.to_string(),
                    None,
                    v,
                    a,
                )
            }
        }
        30..55 => {
            let (ns, name) = pod(k, total);
            let a = anyone();
            let (sub, v) = if a.user.starts_with("system:node:") {
                (Some("status"), "patch")
            } else {
                (None, verb())
            };
            ("", "pods", Some(ns), name, sub, v, a)
        }
        55..65 => {
            if fastrand::u8(..10) < 8 {
                let a = node_actor(node);
                (
                    "",
                    "nodes",
                    None,
                    format!("node-{node}"),
                    Some("status"),
                    "patch",
                    a,
                )
            } else {
                (
                    "",
                    "nodes",
                    None,
                    format!("node-{node}"),
                    None,
                    verb(),
                    anyone(),
                )
            }
        }
        65..75 => {
            let (ns, _) = pod(k, total);
            let name = format!("web-{}-config", fastrand::usize(..WORKLOADS));
            ("", "configmaps", Some(ns), name, None, verb(), anyone())
        }
        75..80 => {
            let (ns, _) = pod(k, total);
            let name = format!("web-{}-tls", fastrand::usize(..WORKLOADS));
            let v = if fastrand::u8(..10) < 9 {
                "get"
            } else {
                verb()
            };
            ("", "secrets", Some(ns), name, None, v, anyone())
        }
        80..88 => {
            let (ns, _) = pod(k, total);
            let w = fastrand::usize(..WORKLOADS);
            let (res, name) = if fastrand::bool() {
                ("deployments", format!("web-{w}"))
            } else {
                (
                    "replicasets",
                    format!("web-{w}-{:03}", k * 168 / total.max(1)),
                )
            };
            let sub = (fastrand::u8(..10) == 0).then_some("scale");
            ("apps", res, Some(ns), name, sub, verb(), anyone())
        }
        88..93 => {
            let (ns, _) = pod(k, total);
            let name = format!(
                "web-{}-{:05x}",
                fastrand::usize(..WORKLOADS),
                fastrand::u32(..0x100)
            );
            let v = pick(&["get", "update", "watch"]);
            (
                "discovery.k8s.io",
                "endpointslices",
                Some(ns),
                name,
                None,
                v,
                controller(),
            )
        }
        _ => {
            let (ns, name) = pod(k, total);
            let name = format!("{name}.{:x}", fastrand::u64(..));
            (
                "",
                "events",
                Some(ns),
                name,
                None,
                "create",
                node_actor(node),
            )
        }
    };
    let code = match fastrand::u16(..1000) {
        0..10 => 403,
        10..18 => 404,
        18..20 if verb != "get" => 409,
        20 => 500,
        _ if verb == "create" => 201,
        _ => 200,
    };
    let id = uuid();
    let api_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/v1")
    };
    let ns_path = ns
        .as_ref()
        .map(|n| format!("/namespaces/{n}"))
        .unwrap_or_default();
    let sub_path = sub.map(|s| format!("/{s}")).unwrap_or_default();
    let uri = format!("{prefix}{ns_path}/{resource}/{name}{sub_path}");
    let ns_field = ns
        .as_ref()
        .map(|n| format!(r#""namespace":"{n}","#))
        .unwrap_or_default();
    let sub_field = sub
        .map(|s| format!(r#""subresource":"{s}","#))
        .unwrap_or_default();
    let status = if code >= 400 {
        format!(
            r#"{{"metadata":{{}},"status":"Failure","message":{},"code":{code}}}"#,
            js(&format!("{resource} \"{name}\" is forbidden or missing"))
        )
    } else {
        format!(r#"{{"metadata":{{}},"code":{code}}}"#)
    };
    let record = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":{uri},"verb":"{verb}","user":{{"username":{user},"groups":{groups}}},"sourceIPs":["10.0.{}.{}"],"userAgent":{agent},"objectRef":{{"resource":"{resource}",{ns_field}"name":"{name}",{sub_field}"apiGroup":"{group}","apiVersion":"{api_version}"}},"responseStatus":{status},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#,
        fastrand::u8(..),
        fastrand::u8(..),
        uri = js(&uri),
        user = js(&actor.user),
        groups = actor.groups,
        agent = js(actor.agent),
    );
    (format!("{id}/ResponseComplete"), record)
}

fn event(t: &str, k: u64, total: u64) -> (String, String) {
    let (ns, pod_name) = pod(k, total);
    let node = format!("node-{}", fastrand::usize(..NODES));
    let (reason, kind, message) = if fastrand::u8(..100) < 10 {
        let (r, m) = pick(WARNINGS);
        (r, "Warning", m.to_string())
    } else {
        let (r, m) = pick(REASONS);
        let m = m
            .replace("{ns}", &ns)
            .replace("{pod}", &pod_name)
            .replace("{node}", &node);
        (r, "Normal", m)
    };
    let (obj_kind, obj_api, obj_name, obj_ns) = match fastrand::u8(..100) {
        0..80 => ("Pod", "v1", pod_name.clone(), Some(ns.as_str())),
        80..90 => (
            "ReplicaSet",
            "apps/v1",
            format!(
                "web-{}-{:03}",
                fastrand::usize(..WORKLOADS),
                k * 168 / total.max(1)
            ),
            Some(ns.as_str()),
        ),
        90..95 => (
            "Deployment",
            "apps/v1",
            format!("web-{}", fastrand::usize(..WORKLOADS)),
            Some(ns.as_str()),
        ),
        _ => ("Node", "v1", node.clone(), None),
    };
    let ev_ns = obj_ns.unwrap_or("default");
    let obj_ns_field = obj_ns
        .map(|n| format!(r#","namespace":"{n}""#))
        .unwrap_or_default();
    let uid = uuid();
    let rv = k + 1000;
    let record = format!(
        r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"{obj_name}.{k:x}","namespace":"{ev_ns}","uid":"{uid}","resourceVersion":"{rv}"}},"involvedObject":{{"kind":"{obj_kind}","name":"{obj_name}"{obj_ns_field},"apiVersion":"{obj_api}"}},"reason":"{reason}","message":{message},"source":{{"component":"kubelet","host":"{node}"}},"firstTimestamp":"{t}","lastTimestamp":"{t}","count":1,"type":"{kind}","reportingComponent":"kubelet","reportingInstance":"{node}"}}"#,
        message = js(&message),
    );
    (format!("{uid}:{rv}"), record)
}

/// The secondary indexes' statements, dropped for the fill.
fn drop_indexes(path: &Path) -> rusqlite::Result<Vec<(String, String)>> {
    let c = rusqlite::Connection::open(path)?;
    let mut stmt = c.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' \
         AND sql IS NOT NULL AND name <> 'records_time_id'",
    )?;
    let indexes = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (name, _) in &indexes {
        c.execute_batch(&format!("DROP INDEX {name}"))?;
    }
    Ok(indexes)
}

fn create_indexes(path: &Path, indexes: &[(String, String)]) -> rusqlite::Result<()> {
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch("PRAGMA cache_size = -1048576; PRAGMA threads = 2; PRAGMA temp_store = FILE")?;
    for (name, sql) in indexes {
        // The writer's second open (after the drop) made its added indexes again: kept.
        let exists: bool = c.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            continue;
        }
        let t = Instant::now();
        c.execute_batch(sql)?;
        eprintln!(
            "fill_store: index {name} in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("fill_store: {e}");
    std::process::exit(1);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(total)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: fill_store PATH RECORDS");
        std::process::exit(2);
    };
    let path = Path::new(&path);
    let options = WriterOptions {
        synchronous_full: false,
        cache_kib: 512 * 1024,
        ..WriterOptions::default()
    };
    // The schema as the writer makes it, then without its secondary indexes.
    drop(ActivityWriter::open(path, &options).unwrap_or_else(|e| fail(e)));
    let indexes = drop_indexes(path).unwrap_or_else(|e| fail(e));
    let mut w = ActivityWriter::open(path, &options).unwrap_or_else(|e| fail(e));

    let now = Timestamp::now().unix_nanos();
    let (tx, rx) = sync_channel::<Vec<(String, String)>>(AHEAD);
    let generator = std::thread::spawn(move || {
        fastrand::seed(7);
        let start = now - WEEK;
        let step = WEEK / i64::try_from(total.max(1)).unwrap_or(i64::MAX);
        let mut k = 0u64;
        while k < total {
            let n = (total - k).min(BATCH as u64);
            let batch: Vec<(String, String)> = (k..k + n)
                .map(|k| {
                    let at = start + step * k as i64 + fastrand::i64(0..step.max(1));
                    let t = Timestamp::from_unix_nanos(at).to_rfc3339();
                    if fastrand::u8(..100) < 70 {
                        audit(&t, k, total)
                    } else {
                        event(&t, k, total)
                    }
                })
                .collect();
            k += n;
            if tx.send(batch).is_err() {
                return;
            }
        }
    });

    let began = Instant::now();
    let mut last_report = Instant::now();
    let mut n = 0u64;
    for batch in rx {
        n += batch.len() as u64;
        if let Err(e) = w.insert(batch.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), now) {
            fail(e);
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            let rate = n as f64 / began.elapsed().as_secs_f64();
            eprintln!("fill_store: {n} records ({rate:.0}/s)");
        }
    }
    if generator.join().is_err() {
        fail("the generator failed");
    }
    drop(w);
    eprintln!(
        "fill_store: {n} records in {:.0} s; building the indexes",
        began.elapsed().as_secs_f64()
    );
    create_indexes(path, &indexes).unwrap_or_else(|e| fail(e));
    // Opened once more as kubetrail opens it: the writer brings the planner's statistics up
    // to date (the indexes built above have none; without them a type's timeline is read
    // through `records_object` and sorted whole).
    drop(ActivityWriter::open(path, &options).unwrap_or_else(|e| fail(e)));
    eprintln!("fill_store: done in {:.0} s", began.elapsed().as_secs_f64());
}
