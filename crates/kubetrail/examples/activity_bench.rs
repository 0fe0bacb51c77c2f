//! Drives the activity store for `bench/activity-store.sh` (not part of kubetrail itself):
//!
//! ```text
//! activity_bench ingest PATH N [BATCH [SHARDS]]  N records into the `store` output at PATH
//!                                                 (a new store of SHARDS files, default 2)
//! activity_bench postgresql URL TABLE N [BATCH]  N records into the `postgresql` output's TABLE
//! activity_bench postgresql URL TABLE N BATCH --indexes-after
//!                                                 the same, the indexes built once at the end
//! activity_bench who (--store PATH | --postgres URL TABLE) NS KIND/NAME...
//! activity_bench names APP                        app APP's namespace, first pod, ReplicaSet, Deployment
//! ```
//!
//! The records are what a busy cluster's week looks like to kubetrail, encoded as kubetrail
//! encodes them, in the shapes of the shop scenario's records: 10,000 Deployments in 50
//! namespaces, their ReplicaSets and pods made and deleted by the controllers (with owner
//! references), bound by the scheduler, their status patched by kubelets on 200 nodes;
//! kubelets renewing Leases; controllers and people reading; six people patching
//! Deployments; Events (Scheduled, Pulled, Started, BackOff, SuccessfulCreate); refused
//! deletes. Record `i` happens at `i` × (one week / N) from a week before the run.
//! `ingest` and `postgresql` print records/s, the process's peak RSS and its file I/O
//! (records are made batch by batch outside the timed `deliver`, as a queue read hands them
//! over); `who` asks
//! about each object in namespace NS (any store: these records or others), prints the time
//! of each answer (the query alone, the store already open; the first, cold, answer apart;
//! `ACTIVITY_BENCH_RUNS` more, default 20), the start of the first object's story, and the
//! plans of its reads.

use std::time::{Duration, Instant};

use kubetrail::outputs::postgresql::PostgresqlOutput;
use kubetrail::outputs::store::{StoreConfig, StoreOutput};
use kubetrail::pipeline::Output;
use kubetrail_core::Timestamp;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_state::QueueItem;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// kubetrail's own allocator (see `src/main.rs`), so the figures are the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const NAMESPACES: u64 = 50;
const APPS: u64 = 10_000;
const PODS: u64 = 8;
const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "ci-deployer"];

/// A fast deterministic hash (splitmix64), for names and choices.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// App `app`'s ReplicaSet.
fn rs_name(app: u64) -> String {
    format!("app-{app}-{:010x}", mix(app) & 0xff_ffff_ffff)
}

/// App `app`'s pod `k` (of `PODS`).
fn pod_name(app: u64, k: u64) -> String {
    format!("{}-{:05x}", rs_name(app), mix(app * 31 + k) & 0xfffff)
}

struct Gen {
    n: u64,
    start: i64,
}

impl Gen {
    fn new(n: u64) -> Gen {
        let week = 7 * 86_400 * 1_000_000_000i64;
        Gen {
            n,
            start: Timestamp::now().unix_nanos() - week,
        }
    }

    fn time(&self, i: u64) -> String {
        let week = 7 * 86_400 * 1_000_000_000i64;
        let t = self.start + (week as i128 * i as i128 / self.n.max(1) as i128) as i64;
        Timestamp::from_unix_nanos(t - t.rem_euclid(1000)).to_rfc3339()
    }

    fn record(&self, i: u64) -> QueueItem {
        let h = mix(i);
        let app = h % APPS;
        let ns = app % NAMESPACES;
        let rs = rs_name(app);
        let pod = pod_name(app, (h >> 20) % PODS);
        let pod_uid = format!("{:016x}-pod", mix(app * 31 + (h >> 20) % PODS));
        let rs_uid = format!("{:016x}-rs", mix(app));
        let dep_uid = format!("{:016x}-dep", mix(app + 1));
        let t = self.time(i);
        let node = format!("node-{}", (h >> 40) % 200);
        let kind = (h >> 8) % 100;
        let id_audit = format!("{:016x}-{:016x}/ResponseComplete", h, mix(h));
        let owner = |k: &str, n: &str, u: &str| {
            format!(
                r#"[{{"apiVersion":"apps/v1","kind":"{k}","name":"{n}","uid":"{u}","controller":true}}]"#
            )
        };
        let audit = |user: &str,
                     verb: &str,
                     res: &str,
                     group: &str,
                     name: &str,
                     sub: &str,
                     code: u16,
                     body: &str| {
            let groups = if user.starts_with("system:serviceaccount") {
                r#"["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]"#
            } else if user.starts_with("system:node") {
                r#"["system:nodes","system:authenticated"]"#
            } else {
                r#"["dev","system:authenticated"]"#
            };
            let sub_json = if sub.is_empty() {
                String::new()
            } else {
                format!(r#","subresource":"{sub}""#)
            };
            let name_json = if name.is_empty() {
                String::new()
            } else {
                format!(r#","name":"{name}""#)
            };
            let group_json = if group.is_empty() {
                String::new()
            } else {
                format!(r#","api_group":"{group}""#)
            };
            let ua = if user.starts_with("system:serviceaccount") {
                "kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/39683505"
            } else if user.starts_with("system:node") {
                "kubelet/v1.30.2 (linux/amd64) kubernetes/39683505"
            } else {
                "kubectl/v1.30.2 (linux/amd64) kubernetes/39683505"
            };
            format!(
                concat!(
                    r#"{{"id":"{id}","time":"{t}","kind":"k8s_audit","source":"audit_webhook.0","tag":"k8s.audit","audit_id":"{aid}","stage":"ResponseComplete","#,
                    r#""level":"{level}","verb":"{verb}","user":{{"groups":{groups},"username":"{user}"}},"source_ips":["10.0.{a}.{b}"],"user_agent":"{ua}","#,
                    r#""request_uri":"/api/v1/namespaces/ns-{ns}/{res}","object_ref":{{"api_version":"v1","namespace":"ns-{ns}","resource":"{res}"{name_json}{group_json}{sub_json}}},"#,
                    r#""response_code":{code},"decision":"{decision}","reason":"RBAC: allowed by ClusterRoleBinding","#,
                    r#""object":{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"{aid}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns-{ns}/{res}","verb":"{verb}","#,
                    r#""user":{{"username":"{user}","groups":{groups}}},"sourceIPs":["10.0.{a}.{b}"],"userAgent":"{ua}","objectRef":{{"resource":"{res}","namespace":"ns-{ns}"{name_json2}}},"#,
                    r#""responseStatus":{{"metadata":{{}},"code":{code}}}{body},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}}}"#
                ),
                id = id_audit,
                aid = &id_audit[..33],
                t = t,
                level = if body.is_empty() {
                    "Metadata"
                } else {
                    "RequestResponse"
                },
                verb = verb,
                groups = groups,
                user = user,
                a = h % 250,
                b = (h >> 3) % 250,
                ua = ua,
                ns = ns,
                res = res,
                name_json = name_json,
                name_json2 = name_json,
                group_json = group_json,
                sub_json = sub_json,
                code = code,
                decision = if code == 403 { "forbid" } else { "allow" },
                body = body,
            )
        };
        let pod_body = |extra: &str| {
            format!(
                r#","responseObject":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{pod}","generateName":"{rs}-","namespace":"ns-{ns}","uid":"{pod_uid}","ownerReferences":{}}},"spec":{{"nodeName":"{node}","containers":[{{"name":"app","image":"registry.example/app-{app}:1.{}"}}]}},"status":{{"phase":"Running"{extra}}}}}"#,
                owner("ReplicaSet", &rs, &rs_uid),
                app % 7
            )
        };
        let event = |reason: &str,
                     typ: &str,
                     obj_kind: &str,
                     obj: &str,
                     uid: &str,
                     comp: &str,
                     msg: &str| {
            let id = format!("{:016x}-ev:{}", mix(h ^ 7), i);
            format!(
                concat!(
                    r#"{{"id":"{id}","time":"{t}","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","namespace":"ns-{ns}","name":"{obj}.{h:016x}","#,
                    r#""uid":"{h:016x}","resource_version":"{i}","api":"events.k8s.io/v1","observed":"ADDED","reason":"{reason}","type":"{typ}","message":"{msg}","#,
                    r#""involved_object":{{"kind":"{obj_kind}","name":"{obj}","namespace":"ns-{ns}","uid":"{uid}","api_version":"v1"}},"reporting_controller":"{comp}","count":1,"#,
                    r#""object":{{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{{"name":"{obj}.{h:016x}","namespace":"ns-{ns}","uid":"{h:016x}","resourceVersion":"{i}"}},"#,
                    r#""regarding":{{"kind":"{obj_kind}","name":"{obj}","namespace":"ns-{ns}","uid":"{uid}"}},"reason":"{reason}","note":"{msg}","type":"{typ}","reportingController":"{comp}","eventTime":"{t}"}}}}"#
                ),
                id = id,
                t = t,
                ns = ns,
                obj = obj,
                h = h,
                i = i,
                reason = reason,
                typ = typ,
                msg = msg,
                obj_kind = obj_kind,
                uid = uid,
                comp = comp,
            )
        };
        let sa = |n: &str| format!("system:serviceaccount:kube-system:{n}");
        let user = USERS[((h >> 33) % USERS.len() as u64) as usize];
        let data = match kind {
            // Controllers and people reading.
            0..=34 => {
                let verb = ["get", "list", "watch"][((h >> 12) % 3) as usize];
                let who = if (h >> 14).is_multiple_of(3) {
                    user.to_string()
                } else {
                    sa("replicaset-controller")
                };
                audit(
                    &who,
                    verb,
                    "pods",
                    "",
                    if verb == "get" { &pod } else { "" },
                    "",
                    200,
                    "",
                )
            }
            // Kubelets renewing their Leases.
            35..=54 => audit(
                &format!("system:node:{node}"),
                "update",
                "leases",
                "coordination.k8s.io",
                &node,
                "",
                200,
                "",
            ),
            // Kubelets patching their pods' status.
            55..=69 => audit(
                &format!("system:node:{node}"),
                "patch",
                "pods",
                "",
                &pod,
                "status",
                200,
                &pod_body(""),
            ),
            // Events.
            70..=84 => match (h >> 16) % 5 {
                0 => event(
                    "Scheduled",
                    "Normal",
                    "Pod",
                    &pod,
                    &pod_uid,
                    "default-scheduler",
                    &format!("Successfully assigned ns-{ns}/{pod} to {node}"),
                ),
                1 => event(
                    "Pulled",
                    "Normal",
                    "Pod",
                    &pod,
                    &pod_uid,
                    "kubelet",
                    "Container image already present on machine",
                ),
                2 => event(
                    "Started",
                    "Normal",
                    "Pod",
                    &pod,
                    &pod_uid,
                    "kubelet",
                    "Started container app",
                ),
                3 => event(
                    "BackOff",
                    "Warning",
                    "Pod",
                    &pod,
                    &pod_uid,
                    "kubelet",
                    "Back-off restarting failed container app",
                ),
                _ => event(
                    "SuccessfulCreate",
                    "Normal",
                    "ReplicaSet",
                    &rs,
                    &rs_uid,
                    "replicaset-controller",
                    &format!("Created pod: {pod}"),
                ),
            },
            // The replicaset-controller making pods.
            85..=89 => audit(
                &sa("replicaset-controller"),
                "create",
                "pods",
                "",
                "",
                "",
                201,
                &pod_body(""),
            ),
            // The scheduler binding them.
            90..=91 => audit(
                "system:kube-scheduler",
                "create",
                "pods",
                "",
                &pod,
                "binding",
                201,
                "",
            ),
            // The deployment-controller scaling ReplicaSets.
            92..=94 => {
                let body = format!(
                    r#","responseObject":{{"kind":"ReplicaSet","apiVersion":"apps/v1","metadata":{{"name":"{rs}","namespace":"ns-{ns}","uid":"{rs_uid}","ownerReferences":{}}},"spec":{{"replicas":{},"template":{{"spec":{{"containers":[{{"name":"app","image":"registry.example/app-{app}:1.{}"}}]}}}}}}}}"#,
                    owner("Deployment", &format!("app-{app}"), &dep_uid),
                    2 + (h >> 24) % 6,
                    app % 7
                );
                audit(
                    &sa("deployment-controller"),
                    "update",
                    "replicasets",
                    "apps",
                    &rs,
                    "",
                    200,
                    &body,
                )
            }
            // People changing Deployments.
            95..=96 => {
                let body = format!(
                    r#","responseObject":{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"app-{app}","namespace":"ns-{ns}","uid":"{dep_uid}"}},"spec":{{"replicas":{},"template":{{"spec":{{"containers":[{{"name":"app","image":"registry.example/app-{app}:1.{}"}}]}}}}}}}}"#,
                    2 + (h >> 24) % 6,
                    (h >> 28) % 7
                );
                audit(
                    user,
                    "patch",
                    "deployments",
                    "apps",
                    &format!("app-{app}"),
                    "",
                    200,
                    &body,
                )
            }
            // Pods deleted by the replicaset-controller.
            97..=98 => audit(
                &sa("replicaset-controller"),
                "delete",
                "pods",
                "",
                &pod,
                "",
                200,
                &pod_body(""),
            ),
            // Refused.
            _ => audit(user, "delete", "pods", "", &pod, "", 403, ""),
        };
        let id = serde_json::from_str::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .unwrap_or_default();
        QueueItem {
            seq: i + 1,
            id,
            data: data.into_bytes().into(),
        }
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |k| k / 1024.0)
}

/// The bytes this process read and wrote through system calls (`rchar`, `wchar`), MiB.
fn io_mib() -> Option<(f64, f64)> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let get = |key: &str| -> Option<f64> {
        let v = io.lines().find_map(|l| l.strip_prefix(key))?.trim();
        Some(v.parse::<f64>().ok()? / 1048576.0)
    };
    Some((get("rchar:")?, get("wchar:")?))
}

async fn ingest(mut output: Box<dyn Output>, what: &str, n: u64, batch: u64) -> Result<(), Error> {
    output.open(None).await.map_err(|e| e.to_string())?;
    let g = Gen::new(n);
    let mut bytes = 0usize;
    let mut busy = Duration::ZERO;
    let mut from = 0u64;
    let mut last_report = Instant::now();
    while from < n {
        // Made batch by batch outside the timing, as a queue read hands them over.
        let chunk: Vec<QueueItem> = (from..n.min(from + batch)).map(|i| g.record(i)).collect();
        bytes += chunk.iter().map(|r| r.data.len()).sum::<usize>();
        from += chunk.len() as u64;
        let start = Instant::now();
        output.deliver(&chunk).await.map_err(|e| e.to_string())?;
        busy += start.elapsed();
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  … {from} records, {:.0} records/s so far",
                from as f64 / busy.as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    output.close().await.map_err(|e| e.to_string())?;
    let secs = busy.as_secs_f64();
    println!(
        "{what}: {n} records of {} bytes on average, batches of {batch}",
        bytes / n.max(1) as usize
    );
    println!("  time in deliver: {secs:.1} s");
    println!(
        "  throughput:  {:.0} records/s ({:.1} MiB/s)",
        n as f64 / secs,
        bytes as f64 / secs / 1048576.0
    );
    println!("  peak RSS:    {:.1} MiB (this process)", peak_rss_mib());
    if let Some((read, written)) = io_mib() {
        println!(
            "  file I/O:    {written:.0} MiB written, {read:.0} MiB read (this process, page cache included)"
        );
    }
    Ok(())
}

/// Fills a big table the fast way (`postgresql URL TABLE N BATCH --indexes-after`): the first
/// batch through `first` makes the table and its indexes; every index but the primary key's is
/// then dropped, the records but the last batch go in through `first`, and the last batch
/// through `second`, a new output, whose first write makes the dropped indexes again (the
/// output's own `CREATE INDEX IF NOT EXISTS`), built over the whole table at once. The rows
/// and the indexes are those an output filling the table batch by batch would leave; only
/// the index pages are packed tighter than years of inserts would leave them.
async fn fill_indexes_after(
    mut first: PostgresqlOutput,
    mut second: PostgresqlOutput,
    url: &str,
    table: &str,
    n: u64,
    batch: u64,
) -> Result<(), Error> {
    let g = Gen::new(n);
    let batch = batch.max(1);
    let chunk = |from: u64| -> Vec<QueueItem> {
        (from..n.min(from + batch)).map(|i| g.record(i)).collect()
    };
    let last = n.saturating_sub(1) / batch * batch;
    first.open(None).await.map_err(|e| e.to_string())?;
    first.deliver(&chunk(0)).await.map_err(|e| e.to_string())?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i \
             WHERE i.indrelid = $1::text::regclass AND NOT i.indisprimary",
            &[&table],
        )
        .await?;
    for r in &rows {
        let name: String = r.get(0);
        client.batch_execute(&format!("DROP INDEX {name}")).await?;
    }
    eprintln!("  dropped {} indexes; filling", rows.len());
    let began = Instant::now();
    let mut from = batch;
    while from < last {
        first
            .deliver(&chunk(from))
            .await
            .map_err(|e| e.to_string())?;
        from += batch;
        if from.is_multiple_of(batch * 100) {
            eprintln!(
                "  … {from} records, {:.0} records/s",
                from as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    first.close().await.map_err(|e| e.to_string())?;
    eprintln!(
        "  {from} records in {:.0} s; building the indexes",
        began.elapsed().as_secs_f64()
    );
    let built = Instant::now();
    if last > 0 {
        second.open(None).await.map_err(|e| e.to_string())?;
        second
            .deliver(&chunk(last))
            .await
            .map_err(|e| e.to_string())?;
        second.close().await.map_err(|e| e.to_string())?;
    }
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    println!(
        "postgresql output, indexes built after: {count} records; indexes built in {:.0} s",
        built.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn who(
    store: kubetrail_query::Store,
    ns: &str,
    objects: &[String],
    runs: usize,
) -> Result<(), Error> {
    for object in objects {
        let q = kubetrail_query::WhoQuery {
            object: Some(object.parse()?),
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut story = None;
        let first = Instant::now();
        store.who(&q).await?;
        let cold = first.elapsed();
        for _ in 0..runs {
            let t = Instant::now();
            let s = store.who(&q).await?;
            times.push(t.elapsed());
            story = Some(s);
        }
        let s = story.ok_or("no runs")?;
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "who {object} -n {ns}: {} records, {} changes, {} children; first answer {:.1} ms, then {} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
            s.steps.len(),
            s.changes.len(),
            s.children.len(),
            ms(cold),
            runs,
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
        );
        if object == &objects[0] {
            let text = kubetrail_query::render::story(&s);
            let lines: Vec<&str> = text.lines().collect();
            for line in lines.iter().take(14) {
                println!("    | {line}");
            }
            if lines.len() > 14 {
                println!("    | … ({} more lines)", lines.len() - 14);
            }
        }
    }
    let q = kubetrail_query::WhoQuery {
        object: Some(objects.first().ok_or("no object")?.parse()?),
        namespace: Some(ns.to_string()),
        ..Default::default()
    };
    println!("the plans of the reads `who {}` runs:", objects[0]);
    for line in store.explain(&q).await? {
        println!("  {line}");
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or("missing argument (see the file's header)")
    };
    match arg(1)? {
        "ingest" => {
            let path = arg(2)?;
            let n: u64 = arg(3)?.parse()?;
            let batch: u64 = args.get(4).map(|b| b.parse()).transpose()?.unwrap_or(2000);
            let shards = args.get(5).map(String::as_str).unwrap_or("2");
            let mut s = Section::from_pairs(
                SectionKind::Output,
                "store",
                &[
                    ("path", path),
                    ("shards", shards),
                    ("retention.max_age", "0"),
                    ("retention.max_size", "0"),
                ],
            );
            let cfg = StoreConfig::from_section(&mut s, std::path::Path::new("."))?;
            ingest(Box::new(StoreOutput::new(cfg)), "store output", n, batch).await
        }
        "postgresql" => {
            let (url, table) = (arg(2)?, arg(3)?);
            let n: u64 = arg(4)?.parse()?;
            let batch: u64 = args.get(5).map(|b| b.parse()).transpose()?.unwrap_or(2000);
            let output = || {
                let mut s = Section::from_pairs(
                    SectionKind::Output,
                    "postgresql",
                    &[("url", url), ("table", table), ("timeout", "3600s")],
                );
                PostgresqlOutput::from_section(&mut s)
            };
            if args.get(6).map(String::as_str) == Some("--indexes-after") {
                return fill_indexes_after(output()?, output()?, url, table, n, batch).await;
            }
            ingest(Box::new(output()?), "postgresql output", n, batch).await
        }
        "who" => {
            let (store, rest) = match arg(2)? {
                "--store" => (kubetrail_query::Store::sqlite(arg(3)?)?, 4),
                "--postgres" => {
                    let (client, conn) =
                        tokio_postgres::connect(arg(3)?, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    (
                        kubetrail_query::Store::postgres(client, arg(4)?, Duration::from_secs(60))
                            .await?,
                        5,
                    )
                }
                other => return Err(format!("unknown store '{other}'").into()),
            };
            let ns = arg(rest)?;
            let objects = args.get(rest + 1..).unwrap_or_default();
            if objects.is_empty() {
                return Err("who needs at least one KIND/NAME".into());
            }
            let runs: usize = std::env::var("ACTIVITY_BENCH_RUNS")
                .ok()
                .map(|r| r.parse())
                .transpose()?
                .unwrap_or(20);
            who(store, ns, objects, runs.max(1)).await
        }
        "names" => {
            let app = arg(2)?.parse::<u64>()? % APPS;
            println!(
                "ns-{} pod/{} replicaset/{} deployment/app-{app}",
                app % NAMESPACES,
                pod_name(app, 0),
                rs_name(app)
            );
            Ok(())
        }
        other => Err(format!("unknown command '{other}'").into()),
    }
}
