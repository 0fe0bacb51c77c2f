//! The ground truth of the recorded "shop" scenario (`$KUBETRAIL_FIXTURES/scenarios/shop`,
//! GROUND-TRUTH.md's 38 questions), answered by `kubetrail who` and `kubetrail activity` from
//! what kubetrail stored, on the SQLite `store` and on PostgreSQL.
//!
//! The records come through the real inputs: the recorded audit log is tailed by `audit_file`,
//! and the recorded Events are replayed by the emulator into the watch of `kubernetes_events`,
//! both into a `store` and a `postgresql` output of one `kubetrail run`. Needs
//! `KUBETRAIL_TEST_PG_URL` (`./scripts/test` starts PostgreSQL).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn shop() -> PathBuf {
    PathBuf::from(
        std::env::var("KUBETRAIL_FIXTURES")
            .expect("KUBETRAIL_FIXTURES is set (run ./scripts/test)"),
    )
    .join("scenarios/shop")
}

fn pg_url() -> String {
    std::env::var("KUBETRAIL_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("KUBETRAIL_TEST_PG_URL is not set: run the tests with ./scripts/test, which starts PostgreSQL (scripts/services)")
    })
}

/// Where the answers are read from.
#[derive(Clone)]
enum Src {
    Sqlite(PathBuf),
    Postgres(String, String),
}

impl Src {
    fn args(&self) -> Vec<String> {
        match self {
            Src::Sqlite(p) => vec!["--store".into(), p.display().to_string()],
            Src::Postgres(url, table) => vec![
                "--postgres".into(),
                url.clone(),
                "--table".into(),
                table.clone(),
            ],
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Src::Sqlite(_) => "sqlite",
            Src::Postgres(..) => "postgresql",
        }
    }
}

fn kubetrail(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(args)
        .output()
        .expect("run kubetrail");
    assert!(
        out.status.success(),
        "kubetrail {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `kubetrail who OBJECT [-n NS] -o json`.
fn who(src: &Src, object: &str, ns: Option<&str>) -> Value {
    let mut args: Vec<String> = vec!["who".into(), object.into(), "-o".into(), "json".into()];
    if let Some(ns) = ns {
        args.extend(["-n".into(), ns.into()]);
    }
    args.extend(src.args());
    serde_json::from_str(&kubetrail(&args)).expect("who -o json is JSON")
}

/// `kubetrail activity ARGS --all -o json`: one entry per line.
fn activity(src: &Src, extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = vec![
        "activity".into(),
        "--all".into(),
        "-o".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(src.args());
    kubetrail(&args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// `23:01:31.443` of an RFC 3339 time (the precision of GROUND-TRUTH.md).
fn ms(t: &Value) -> String {
    let t = t.as_str().expect("a time");
    let hms = &t[11..19];
    let frac = t.get(20..23).unwrap_or("000");
    format!("{hms}.{frac}")
}

fn user(v: &Value) -> &str {
    v["actor"]["user"].as_str().unwrap_or("")
}

const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";
const DEPLOY_CONTROLLER: &str = "system:serviceaccount:kube-system:deployment-controller";
const NODE_CONTROLLER: &str = "system:serviceaccount:kube-system:node-controller";
const GC: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
const KUBELET_1: &str = "system:node:node-1";

/// The changes of a story of one kind.
fn changes<'a>(story: &'a Value, what: &str) -> Vec<&'a Value> {
    story["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["what"] == what)
        .collect()
}

/// The one change of a kind.
fn change<'a>(story: &'a Value, what: &str) -> &'a Value {
    let c = changes(story, what);
    assert_eq!(c.len(), 1, "one {what} change in {}", story["object"]);
    c[0]
}

/// Every step of a chain names records, and the records exist in the store.
fn causes(c: &Value) -> &Vec<Value> {
    let list = c["causes"].as_array().expect("causes");
    for step in list {
        assert!(
            !step["record_ids"]
                .as_array()
                .expect("record ids")
                .is_empty(),
            "{step}"
        );
    }
    list
}

/// The root of a change's chain (its last cause).
fn root(c: &Value) -> &Value {
    causes(c).last().unwrap_or_else(|| panic!("no causes: {c}"))
}

struct Fixture {
    _env: Env,
    sqlite: Src,
    pg: Src,
}

async fn run_pipeline() -> Fixture {
    let env = Env::new().await;
    let audit_dir = env.dir.path().join("audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    std::fs::copy(shop().join("audit.log"), audit_dir.join("audit.log")).unwrap();
    let table = format!("shop_{:016x}", fastrand::u64(..));
    let store = env.data_dir.join("activity.db");
    let yaml = format!(
        r#"service:
  data_dir: {data}
  log_level: info
  grace: 5s
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
    - name: audit_file
      tag: k8s.audit
      path: {audit}/audit*.log
      refresh_interval: 100ms
  outputs:
    - name: store
      match: '*'
      retention.max_age: 0
    - name: postgresql
      match: '*'
      url: {pg}
      table: {table}
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        audit = audit_dir.display(),
        pg = pg_url(),
    );
    let config = env.write_config(&yaml);
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    // The Events are replayed once kubetrail watches, as the recorder's watch saw them.
    assert!(
        wait_until(Duration::from_secs(60), || env.emu.stats().open_watches
            >= 1)
        .await,
        "kubetrail did not start watching: {}",
        diagnostics(&env)
    );
    let frames = env
        .emu
        .replay_watch_file(&shop().join("events-watch.jsonl"))
        .unwrap();
    assert_eq!(frames, 76);
    let want = 1026 + 76;
    // The store's records, in all its files (the default: two).
    let count_sqlite = || store_records(&store) as i64;
    let stored = wait_until(Duration::from_secs(120), || count_sqlite() >= want).await;
    assert!(
        stored,
        "the store holds {} of {want} records: {}",
        count_sqlite(),
        diagnostics(&env)
    );
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut n = 0i64;
    for _ in 0..1200 {
        n = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, want, "PostgreSQL rows: {}", diagnostics(&env));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "kubetrail exited with {status}: {}",
        diagnostics(&env)
    );
    assert_eq!(count_sqlite(), want, "nothing stored twice");
    Fixture {
        _env: env,
        sqlite: Src::Sqlite(store),
        pg: Src::Postgres(pg_url(), table),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ground_truth_answer_from_sqlite_and_postgresql() {
    let f = run_pipeline().await;
    for src in [&f.sqlite, &f.pg] {
        eprintln!("asking {}", src.name());
        access_and_nodes(src);
        deployment_and_rollout(src);
        drain_and_direct_delete(src);
        node_2_and_taint_manager(src);
        configs_and_refusals(src);
        cascade_and_end(src);
    }
}

/// Q1-Q4: the namespace, the RBAC objects and the nodes.
fn access_and_nodes(src: &Src) {
    // Q1
    let ns = who(src, "namespace/shop", None);
    let c = change(&ns, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("admin", "23:00:43.363")
    );
    // Q2
    let rb = who(src, "rolebinding/dev-edit", Some("shop"));
    let c = change(&rb, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("admin", "23:00:46.762")
    );
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("ClusterRole edit → User alice, User bob"),
        "{c}"
    );
    // Q3
    let crb = who(src, "clusterrolebinding/carol-admin", None);
    let c = change(&crb, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("admin", "23:00:49.983")
    );
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("ClusterRole admin → User carol"),
        "{c}"
    );
    let crb = who(src, "clusterrolebinding/ops-node-maintainer", None);
    let c = change(&crb, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("admin", "23:01:54.639")
    );
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("ClusterRole node-maintainer → Group ops"),
        "{c}"
    );
    let role = who(src, "clusterrole/node-maintainer", None);
    let c = change(&role, "created");
    assert_eq!(user(c), "admin");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("nodes: get, list, watch, patch, update"),
        "{c}"
    );
    // Q4
    for (node, t) in [
        ("node/node-1", "23:00:56.478"),
        ("node/node-2", "23:02:28.312"),
    ] {
        let s = who(src, node, None);
        let c = change(&s, "created");
        assert_eq!((user(c), ms(&c["time"]).as_str()), ("admin", t), "{node}");
    }
}

/// Q5-Q14: the Deployment, its scale and its rollout, down to its pods.
fn deployment_and_rollout(src: &Src) {
    let d = who(src, "deploy/web", Some("shop"));
    // Q5
    let c = change(&d, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("alice", "23:01:06.700")
    );
    assert!(
        c["actor"]["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl/")
    );
    // Q9: through the scale subresource.
    let c = change(&d, "scaled");
    assert_eq!((user(c), ms(&c["time"]).as_str()), ("bob", "23:01:18.493"));
    assert!(c["summary"].as_str().unwrap().contains("3→5"), "{c}");
    let id = c["record_ids"][0].as_str().unwrap();
    let step = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap();
    assert_eq!(
        (step["subresource"].as_str(), step["code"].as_i64()),
        (Some("scale"), Some(200))
    );
    // Q11
    let c = change(&d, "rolled_out");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("alice", "23:01:31.443")
    );
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("nginx:1.25 → nginx:1.26"),
        "{c}"
    );

    // Q6
    let rs1 = who(src, "rs/web-6b4996b7f9", Some("shop"));
    let c = change(&rs1, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        (DEPLOY_CONTROLLER, "23:01:06.718")
    );
    let r = root(c);
    assert_eq!(
        (r["object"]["name"].as_str(), r["what"].as_str(), user(r)),
        (Some("web"), Some("created"), "alice")
    );
    // Q12
    let rs2 = who(src, "rs/web-7d8bcd4698", Some("shop"));
    let c = change(&rs2, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        (DEPLOY_CONTROLLER, "23:01:31.544")
    );
    let r = root(c);
    assert_eq!(
        (r["what"].as_str(), user(r), ms(&r["time"]).as_str()),
        (Some("rolled_out"), "alice", "23:01:31.443")
    );
    // Q13: 5→4→3→2→1→0 by the deployment-controller, for alice's rollout.
    let downs: Vec<&Value> = changes(&rs1, "scaled")
        .into_iter()
        .filter(|c| ms(&c["time"]).as_str() >= "23:01:31")
        .collect();
    let words: Vec<&str> = downs
        .iter()
        .map(|c| c["summary"].as_str().unwrap())
        .collect();
    assert_eq!(
        words,
        [
            "scaled 5→4",
            "scaled 4→3",
            "scaled 3→2",
            "scaled 2→1",
            "scaled 1→0"
        ]
    );
    assert_eq!(ms(&downs[0]["time"]), "23:01:31.580");
    assert_eq!(ms(&downs[4]["time"]), "23:01:34.708");
    for c in &downs {
        assert_eq!(user(c), DEPLOY_CONTROLLER);
        let r = root(c);
        assert_eq!(
            (r["what"].as_str(), user(r)),
            (Some("rolled_out"), "alice"),
            "{c}"
        );
    }
    // Q10: the scale to 5 by bob, through the ReplicaSet.
    let up = changes(&rs1, "scaled")
        .into_iter()
        .find(|c| c["summary"] == "scaled 3→5")
        .expect("3→5");
    assert_eq!(
        (user(up), ms(&up["time"]).as_str()),
        (DEPLOY_CONTROLLER, "23:01:18.499")
    );
    assert_eq!(
        (root(up)["what"].as_str(), user(root(up))),
        (Some("scaled"), "bob")
    );

    // Q7, Q8: the first three pods; Q10: the two of the scale-up; Q14: their deletions.
    for (pod, created, bound, first_cause, root_user, deleted, removed) in [
        (
            "vdfpw",
            "23:01:06.742",
            "23:01:06.757",
            "created",
            "alice",
            "23:01:33.443",
            "23:01:35.049",
        ),
        (
            "sv49h",
            "23:01:06.765",
            "23:01:06.782",
            "created",
            "alice",
            "23:01:33.843",
            "23:01:36.007",
        ),
        (
            "6rs47",
            "23:01:06.767",
            "23:01:06.783",
            "created",
            "alice",
            "23:01:34.713",
            "23:01:37.085",
        ),
        (
            "gglct",
            "23:01:18.517",
            "23:01:18.527",
            "scaled",
            "bob",
            "23:01:32.745",
            "23:01:34.821",
        ),
        (
            "bfst8",
            "23:01:18.525",
            "23:01:18.544",
            "scaled",
            "bob",
            "23:01:31.605",
            "23:01:33.290",
        ),
    ] {
        let p = who(src, &format!("pod/web-6b4996b7f9-{pod}"), Some("shop"));
        let c = change(&p, "created");
        assert_eq!(
            (user(c), ms(&c["time"]).as_str()),
            (RS_CONTROLLER, created),
            "{pod}"
        );
        let chain = causes(c);
        assert_eq!(chain[0]["object"]["name"], "web-6b4996b7f9", "{pod}");
        assert_eq!(chain[0]["what"].as_str(), Some(first_cause), "{pod}");
        assert_eq!(user(root(c)), root_user, "{pod}");
        let b = change(&p, "bound");
        assert_eq!(
            (user(b), ms(&b["time"]).as_str()),
            ("system:kube-scheduler", bound),
            "{pod}"
        );
        assert!(b["summary"].as_str().unwrap().ends_with("node-1"), "{b}");
        let d = change(&p, "deletion_requested");
        assert_eq!(
            (user(d), ms(&d["time"]).as_str()),
            (RS_CONTROLLER, deleted),
            "{pod}"
        );
        assert_eq!(causes(d)[0]["object"]["name"], "web-6b4996b7f9");
        assert_eq!(
            (root(d)["what"].as_str(), user(root(d))),
            (Some("rolled_out"), "alice"),
            "{pod}"
        );
        // Q37: removed for good by node-1's kubelet.
        let r = change(&p, "deleted");
        assert_eq!(
            (user(r), ms(&r["time"]).as_str()),
            (KUBELET_1, removed),
            "{pod}"
        );
        assert!(
            r["summary"]
                .as_str()
                .unwrap()
                .contains("gracePeriodSeconds 0"),
            "{r}"
        );
        assert_eq!(p["state"]["state"], "deleted");
    }
    // Q8: nobody but the scheduler bound pods.
    let bindings = activity(src, &["--subresource", "binding"]);
    assert_eq!(bindings.len(), 15);
    assert!(
        bindings
            .iter()
            .all(|e| user(e) == "system:kube-scheduler" && e["code"] == 201)
    );
}

/// Q15-Q21: carol's refused drain, her cordon and evictions, bob's delete.
fn drain_and_direct_delete(src: &Src) {
    // Q15: the first drain only got a 403 and changed nothing.
    let window = [
        "--user",
        "carol",
        "--since",
        "2026-12-06T23:01:40Z",
        "--until",
        "2026-12-06T23:01:55Z",
    ];
    let first: Vec<Value> = activity(src, &window)
        .into_iter()
        .filter(|e| e["object"].is_object())
        .collect();
    assert_eq!(
        first.len(),
        1,
        "only kubectl's discovery besides: {first:?}"
    );
    assert_eq!(
        (first[0]["code"].as_i64(), first[0]["failed"].as_bool()),
        (Some(403), Some(true))
    );
    assert_eq!(ms(&first[0]["time"]), "23:01:48.286");
    assert_eq!(
        (
            first[0]["verb"].as_str(),
            first[0]["object"]["name"].as_str()
        ),
        (Some("get"), Some("node-1"))
    );
    assert!(
        activity(src, &[&window[..], &["--writes"]].concat()).is_empty(),
        "nothing changed"
    );
    // Q16: the cordon, and the taint that followed it.
    let n1 = who(src, "node/node-1", None);
    let c = change(&n1, "cordoned");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("carol", "23:02:01.155")
    );
    let t = change(&n1, "tainted");
    assert_eq!(
        (user(t), ms(&t["time"]).as_str()),
        (NODE_CONTROLLER, "23:02:01.171")
    );
    assert!(
        t["summary"]
            .as_str()
            .unwrap()
            .contains("node.kubernetes.io/unschedulable:NoSchedule")
    );
    assert_eq!(
        (causes(t)[0]["what"].as_str(), user(&causes(t)[0])),
        (Some("cordoned"), "carol")
    );
    // Q36: node-1 never went NotReady; its kubelet renewed its Lease to the end.
    assert!(changes(&n1, "not_ready").is_empty());
    let lease = who(src, "lease/node-1", Some("kube-node-lease"));
    let renewals: Vec<&Value> = lease["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| user(s) == KUBELET_1 && s["verb"] == "update")
        .collect();
    assert!(renewals.len() >= 20, "{}", renewals.len());
    // Every 10 s, never missing one, from its start to the end of the recording.
    let secs = |s: &Value| -> f64 {
        let t = ms(&s["time"]);
        let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    for w in renewals.windows(2) {
        assert!(
            secs(w[1]) - secs(w[0]) < 15.0,
            "a renewal missing after {}",
            w[0]["time"]
        );
    }
    assert!(ms(&renewals.last().unwrap()["time"]).as_str() >= "23:05:15.000");
    assert!(ms(&renewals[0]["time"]).as_str() <= "23:01:10.000");
    // Q17, Q18: five evictions through the Eviction API, by carol.
    let evictions = activity(src, &["--user", "carol", "--subresource", "eviction"]);
    let evicted: BTreeSet<String> = evictions
        .iter()
        .map(|e| e["object"]["name"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = ["b5l86", "8sr6z", "brtz2", "f5p5g", "h8g4j"]
        .iter()
        .map(|p| format!("web-7d8bcd4698-{p}"))
        .collect();
    assert_eq!(evicted, want);
    assert!(
        evictions
            .iter()
            .all(|e| e["code"] == 201 && e["verb"] == "create")
    );
    for (pod, at, removed) in [
        ("8sr6z", "23:02:01.185", "23:02:03.088"),
        ("b5l86", "23:02:01.184", "23:02:02.968"),
        ("brtz2", "23:02:01.186", "23:02:03.245"),
        ("f5p5g", "23:02:01.186", "23:02:03.119"),
        ("h8g4j", "23:02:01.191", "23:02:03.014"),
    ] {
        let p = who(src, &format!("pod/web-7d8bcd4698-{pod}"), Some("shop"));
        let e = change(&p, "evicted");
        assert_eq!((user(e), ms(&e["time"]).as_str()), ("carol", at), "{pod}");
        assert!(
            e["summary"].as_str().unwrap().contains("Eviction API"),
            "{e}"
        );
        assert!(causes(e).is_empty(), "carol is where the chain ends");
        // Q37
        let r = change(&p, "deleted");
        assert_eq!(
            (user(r), ms(&r["time"]).as_str()),
            (KUBELET_1, removed),
            "{pod}"
        );
        assert_eq!(
            (causes(r)[0]["what"].as_str(), user(&causes(r)[0])),
            (Some("evicted"), "carol")
        );
        // Created by the rollout (alice).
        assert_eq!(user(root(change(&p, "created"))), "alice", "{pod}");
    }
    // Q19: five replacements, one per evicted pod.
    let mut replaced = BTreeSet::new();
    for pod in ["t9626", "fz74z", "lg79t", "6729k", "fg9sj"] {
        let p = who(src, &format!("pod/web-7d8bcd4698-{pod}"), Some("shop"));
        let c = change(&p, "created");
        assert_eq!(user(c), RS_CONTROLLER);
        assert!(ms(&c["time"]).starts_with("23:02:01."), "{c}");
        let first = &causes(c)[0];
        assert_eq!(
            (first["what"].as_str(), user(first)),
            (Some("evicted"), "carol"),
            "{pod}"
        );
        assert!(
            first["link"].as_str().unwrap().contains("replacement"),
            "{first}"
        );
        replaced.insert(first["object"]["name"].as_str().unwrap().to_string());
        let waits = p["steps"].as_array().unwrap().iter().any(|s| {
            s["reason"] == "FailedScheduling"
                && s["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("1 node(s) were unschedulable")
        });
        assert!(waits, "{pod} waited: FailedScheduling");
    }
    assert_eq!(replaced, want);
    // Q20: bob's direct delete of a Pending pod: gone at once.
    let p = who(src, "pod/web-7d8bcd4698-6729k", Some("shop"));
    let d = change(&p, "deleted");
    assert_eq!((user(d), ms(&d["time"]).as_str()), ("bob", "23:02:15.218"));
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("gracePeriodSeconds 0"),
        "{d}"
    );
    assert!(changes(&p, "bound").is_empty(), "never bound");
    assert_eq!(p["state"]["state"], "deleted");
    // Q21: its replacement.
    let p = who(src, "pod/web-7d8bcd4698-7g9jt", Some("shop"));
    let c = change(&p, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        (RS_CONTROLLER, "23:02:15.232")
    );
    let first = &causes(c)[0];
    assert_eq!(
        (
            first["object"]["name"].as_str(),
            first["what"].as_str(),
            user(first)
        ),
        (Some("web-7d8bcd4698-6729k"), Some("deleted"), "bob")
    );
}

/// Q22-Q27: node-2 without a kubelet, the taint manager's evictions and their replacements.
fn node_2_and_taint_manager(src: &Src) {
    // Q23, Q24
    let n2 = who(src, "node/node-2", None);
    let nr = change(&n2, "not_ready");
    assert_eq!(
        (user(nr), ms(&nr["time"]).as_str()),
        (NODE_CONTROLLER, "23:03:28.364")
    );
    assert!(
        nr["summary"]
            .as_str()
            .unwrap()
            .contains("NodeStatusNeverUpdated"),
        "{nr}"
    );
    let id = nr["record_ids"][0].as_str().unwrap();
    let step = n2["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap();
    assert_eq!(
        (step["verb"].as_str(), step["subresource"].as_str()),
        (Some("update"), Some("status"))
    );
    assert_eq!(
        (root(nr)["what"].as_str(), user(root(nr))),
        (Some("created"), "admin")
    );
    let taints: Vec<(String, String)> = changes(&n2, "tainted")
        .iter()
        .map(|c| (ms(&c["time"]), c["summary"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        taints,
        [
            (
                "23:03:28.372".to_string(),
                "tainted node.kubernetes.io/unreachable:NoSchedule".to_string()
            ),
            (
                "23:03:28.464".to_string(),
                "tainted node.kubernetes.io/unreachable:NoExecute".to_string()
            ),
        ]
    );
    for c in changes(&n2, "tainted") {
        assert_eq!(user(c), NODE_CONTROLLER);
        assert_eq!(causes(c)[0]["what"], "not_ready");
    }
    // Q22, Q25, Q26
    let mut evicted = BTreeSet::new();
    for (pod, bound, deleted) in [
        ("t9626", "23:02:28.490", "23:03:58.574"),
        ("fz74z", "23:02:28.493", "23:03:58.573"),
        ("lg79t", "23:02:28.491", "23:03:58.575"),
        ("fg9sj", "23:02:28.494", "23:03:58.574"),
        ("7g9jt", "23:02:28.495", "23:03:58.565"),
    ] {
        let name = format!("web-7d8bcd4698-{pod}");
        let p = who(src, &format!("pod/{name}"), Some("shop"));
        let b = change(&p, "bound");
        assert_eq!(
            (user(b), ms(&b["time"]).as_str()),
            ("system:kube-scheduler", bound),
            "{pod}"
        );
        let bc = &causes(b)[0];
        assert_eq!(
            (bc["object"]["name"].as_str(), bc["what"].as_str(), user(bc)),
            (Some("node-2"), Some("created"), "admin"),
            "{pod}: bound once node-2 was created"
        );
        let e = change(&p, "evicted");
        assert_eq!(
            (user(e), ms(&e["time"]).as_str()),
            (NODE_CONTROLLER, deleted),
            "{pod}"
        );
        assert!(
            e["summary"].as_str().unwrap().contains("taint manager"),
            "{e}"
        );
        // The DELETE, the DisruptionTarget condition and the TaintManagerEviction Event.
        let ids: BTreeSet<&str> = e["record_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap())
            .collect();
        let shown: Vec<&Value> = p["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| ids.contains(s["id"].as_str().unwrap()))
            .collect();
        assert!(
            shown
                .iter()
                .any(|s| s["verb"] == "delete" && s["code"] == 200),
            "{pod}"
        );
        assert!(
            shown.iter().any(|s| s["reason"] == "TaintManagerEviction"
                && s["actor"]["component"] == "taint-controller"),
            "{pod}"
        );
        let chain: Vec<(&str, &str, String)> = causes(e)
            .iter()
            .map(|c| {
                (
                    c["object"]["name"].as_str().unwrap(),
                    c["what"].as_str().unwrap(),
                    user(c).to_string(),
                )
            })
            .collect();
        assert_eq!(
            chain,
            [
                ("node-2", "tainted", NODE_CONTROLLER.to_string()),
                ("node-2", "not_ready", NODE_CONTROLLER.to_string()),
                ("node-2", "created", "admin".to_string()),
            ],
            "{pod}"
        );
        assert!(
            causes(e)[0]["summary"]
                .as_str()
                .unwrap()
                .contains("NoExecute")
        );
        assert!(
            causes(e)[0]["link"]
                .as_str()
                .unwrap()
                .contains("tolerated for 30 s")
        );
        // Q26: still there, terminating.
        assert_eq!(p["state"]["state"], "terminating", "{pod}");
        assert_eq!(ms(&p["state"]["since"]), deleted);
        evicted.insert(name);
    }
    // Q27: their replacements.
    let mut replaced = BTreeSet::new();
    for pod in ["t6m9s", "867z7", "4vt6j", "nrrvj", "p2jr2"] {
        let p = who(src, &format!("pod/web-7d8bcd4698-{pod}"), Some("shop"));
        let c = change(&p, "created");
        assert_eq!(user(c), RS_CONTROLLER);
        assert!(
            ms(&c["time"]).as_str() >= "23:03:58.580" && ms(&c["time"]).as_str() <= "23:03:58.710",
            "{c}"
        );
        let first = &causes(c)[0];
        assert_eq!(
            (first["what"].as_str(), user(first)),
            (Some("evicted"), NODE_CONTROLLER),
            "{pod}"
        );
        replaced.insert(first["object"]["name"].as_str().unwrap().to_string());
        assert_eq!(
            (root(c)["object"]["name"].as_str(), user(root(c))),
            (Some("node-2"), "admin")
        );
    }
    assert_eq!(replaced, evicted);
}

/// Q28-Q31: the ConfigMap, the Secret, the refused delete and the failed exec.
fn configs_and_refusals(src: &Src) {
    // Q28
    let cm = who(src, "cm/web-config", Some("shop"));
    let c = change(&cm, "created");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("alice", "23:04:21.146")
    );
    let u = change(&cm, "updated");
    assert_eq!((user(u), ms(&u["time"]).as_str()), ("bob", "23:04:30.081"));
    assert!(u["summary"].as_str().unwrap().contains("no body"), "{u}");
    // Q29
    let s = who(src, "secret/db-pass", Some("shop"));
    let c = change(&s, "created");
    assert_eq!((user(c), ms(&c["time"]).as_str()), ("bob", "23:04:25.912"));
    // Q30
    let refused = activity(src, &["--verb", "delete", "--failed"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let r = &refused[0];
    assert_eq!(
        (user(r), r["code"].as_i64(), ms(&r["time"]).as_str()),
        ("viewer", Some(403), "23:04:34.840")
    );
    assert_eq!(r["object"]["name"], "web-7d8bcd4698-4vt6j");
    let p = who(src, "pod/web-7d8bcd4698-4vt6j", Some("shop"));
    assert!(
        p["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| user(s) == "viewer" && s["failed"] == true)
    );
    let d = change(&p, "deleted");
    assert_eq!((user(d), ms(&d["time"]).as_str()), (GC, "23:04:47.703"));
    // Q31: one exec attempt (its two stages shown once), failed.
    let exec = activity(src, &["--user", "bob", "--subresource", "exec"]);
    assert_eq!(exec.len(), 1, "{exec:?}");
    let e = &exec[0];
    assert_eq!(
        (
            e["verb"].as_str(),
            e["code"].as_i64(),
            ms(&e["time"]).as_str()
        ),
        (Some("create"), Some(500), "23:04:39.424")
    );
    assert_eq!(e["object"]["name"], "web-7d8bcd4698-7g9jt");
    assert!(
        e["status_message"]
            .as_str()
            .unwrap()
            .contains("no preferred addresses found")
    );
    assert!(
        e["summary"]
            .as_str()
            .unwrap()
            .contains("cat /etc/nginx/conf.d/default.conf"),
        "{e}"
    );
}

/// Q32-Q35, Q38: the cascading delete and what was left.
fn cascade_and_end(src: &Src) {
    let d = who(src, "deploy/web", Some("shop"));
    // Q32
    let c = change(&d, "deleted");
    assert_eq!(
        (user(c), ms(&c["time"]).as_str()),
        ("alice", "23:04:47.582")
    );
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("propagationPolicy Background")
    );
    // Q33
    for (rs, t) in [
        ("web-7d8bcd4698", "23:04:47.607"),
        ("web-6b4996b7f9", "23:04:47.609"),
    ] {
        let s = who(src, &format!("rs/{rs}"), Some("shop"));
        let c = change(&s, "deleted");
        assert_eq!((user(c), ms(&c["time"]).as_str()), (GC, t), "{rs}");
        let r = root(c);
        assert_eq!(
            (r["object"]["name"].as_str(), r["what"].as_str(), user(r)),
            (Some("web"), Some("deleted"), "alice")
        );
    }
    // Q34
    for (pod, t) in [
        ("t6m9s", "23:04:47.704"),
        ("867z7", "23:04:47.704"),
        ("4vt6j", "23:04:47.703"),
        ("nrrvj", "23:04:47.702"),
        ("p2jr2", "23:04:47.705"),
    ] {
        let p = who(src, &format!("pod/web-7d8bcd4698-{pod}"), Some("shop"));
        let c = change(&p, "deleted");
        assert_eq!((user(c), ms(&c["time"]).as_str()), (GC, t), "{pod}");
        let chain: Vec<(&str, &str)> = causes(c)
            .iter()
            .map(|x| {
                (
                    x["object"]["name"].as_str().unwrap(),
                    x["what"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            chain,
            [("web-7d8bcd4698", "deleted"), ("web", "deleted")],
            "{pod}"
        );
        assert_eq!(user(root(c)), "alice");
    }
    // Q35, Q38: what the Deployment made, and what is left of it.
    let children = d["children"].as_array().unwrap();
    let per_rs: Vec<(&str, usize)> = children
        .iter()
        .map(|c| {
            (
                c["object"]["name"].as_str().unwrap(),
                c["children"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(per_rs, [("web-6b4996b7f9", 5), ("web-7d8bcd4698", 16)]);
    let left: BTreeSet<String> = children
        .iter()
        .flat_map(|c| c["children"].as_array().unwrap().iter())
        .filter(|p| p["state"]["state"] != "deleted")
        .map(|p| {
            assert_eq!(p["state"]["state"], "terminating", "{p}");
            p["object"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    let want: BTreeSet<String> = ["t9626", "fz74z", "lg79t", "fg9sj", "7g9jt"]
        .iter()
        .map(|p| format!("web-7d8bcd4698-{p}"))
        .collect();
    assert_eq!(left, want);
    assert!(children.iter().all(|c| c["state"]["state"] == "deleted"));
}
