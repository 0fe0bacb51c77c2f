//! The `postgresql` output against a real PostgreSQL server (started by `scripts/services`,
//! which `./scripts/test` runs): rows with their columns, exactly once when batches are
//! delivered again, odd records stored, a stopped server retried; and through the whole
//! pipeline (the `kubetrail` binary, Events from the emulator): `kill -9` a dozen times in
//! the middle of delivery with no row missing or repeated, and the server stopped for 60
//! seconds with everything arriving after it returns while kubetrail's memory stays bounded.
//!
//! The tests need `KUBETRAIL_TEST_PG_URL` (and `KUBETRAIL_TEST_SERVICES[_DIR]` to stop and
//! start the server); without them they fail, telling to run `./scripts/test`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use kubetrail::outputs::postgresql::PostgresqlOutput;
use kubetrail::pipeline::{DeliveryError, Output};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_emulator::EventSpec;
use kubetrail_state::QueueItem;

/// The tests share one server, and one of them stops it: they take turns.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test, which starts PostgreSQL and NATS (scripts/services)")
    })
}

fn pg_url() -> String {
    env_var("KUBETRAIL_TEST_PG_URL")
}

/// `pg-stop` or `pg-start` through scripts/services.
fn services(cmd: &str) {
    let status = std::process::Command::new(env_var("KUBETRAIL_TEST_SERVICES"))
        .arg(cmd)
        .arg(env_var("KUBETRAIL_TEST_SERVICES_DIR"))
        .status()
        .expect("run scripts/services");
    assert!(status.success(), "scripts/services {cmd} failed");
}

fn unique_table() -> String {
    format!("t_{:016x}", fastrand::u64(..))
}

async fn client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn count(table: &str) -> i64 {
    client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn output(table: &str, extra: &[(&str, &str)]) -> PostgresqlOutput {
    let url = pg_url();
    let mut pairs = vec![("url", url.as_str()), ("table", table)];
    pairs.extend_from_slice(extra);
    let mut s = Section::from_pairs(SectionKind::Output, "postgresql", &pairs);
    let o = PostgresqlOutput::from_section(&mut s).expect("valid options");
    s.finish().expect("no unknown keys");
    o
}

fn event(i: usize) -> QueueItem {
    let id = format!("uid-{i}:{}", 1000 + i);
    let data = format!(
        concat!(
            r#"{{"id":"{id}","time":"2026-11-27T00:30:{s:02}.{i:06}Z","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","#,
            r#""namespace":"ns-{ns}","name":"pod-{i}.18ebbf","uid":"uid-{i}","resource_version":"{rv}","reason":"BackOff","type":"Warning","#,
            r#""message":"Back-off pulling image {pad}","involved_object":{{"kind":"Pod","name":"pod-{i}","namespace":"ns-{ns}"}},"count":1,"#,
            r#""object":{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"pod-{i}.18ebbf","namespace":"ns-{ns}"}}}}}}"#
        ),
        id = id,
        s = i % 60,
        i = i,
        ns = i % 5,
        rv = 1000 + i,
        pad = "x".repeat(i % 300),
    );
    QueueItem {
        seq: i as u64 + 1,
        id,
        data: data.into_bytes().into(),
    }
}

fn audit(i: usize) -> QueueItem {
    let id = format!("audit-{i}:ResponseComplete");
    let data = format!(
        r#"{{"id":"{id}","time":"2026-11-27T00:31:00Z","kind":"k8s_audit","source":"audit_webhook.0","tag":"k8s.audit","audit_id":"audit-{i}","stage":"ResponseComplete","verb":"update","user":{{"username":"system:admin"}},"object_ref":{{"resource":"configmaps","namespace":"kube-system","name":"cm-{i}"}},"reason":"RBAC: allowed","object":{{"auditID":"audit-{i}"}}}}"#
    );
    QueueItem {
        seq: i as u64 + 1,
        id,
        data: data.into_bytes().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_have_their_columns_and_redelivery_inserts_nothing_twice() {
    let _turn = SERVER.lock().await;
    let table = unique_table();
    let mut o = output(&table, &[]);
    o.open(None).await.unwrap();
    let batch: Vec<QueueItem> = (0..600).map(event).chain((0..400).map(audit)).collect();
    o.deliver(&batch[..700]).await.unwrap();
    // Delivered again (a lost acknowledgement) and overlapping the next batch.
    o.deliver(&batch[..700]).await.unwrap();
    o.deliver(&batch[500..]).await.unwrap();
    assert_eq!(count(&table).await, 1000);
    let c = client().await;
    let dup: i64 = c
        .query_one(
            &format!("SELECT count(*) - count(DISTINCT id) FROM {table}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);

    let row = c
        .query_one(
            &format!("SELECT kind, namespace, object_kind, object_name, username, verb, reason, source, tag, time = '2026-11-27T00:30:07.000007Z'::timestamptz, record = $1::text::jsonb FROM {table} WHERE id = 'uid-7:1007'"),
            &[&std::str::from_utf8(&event(7).data).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), Some("k8s_event"));
    assert_eq!(row.get::<_, Option<&str>>(1), Some("ns-2"));
    assert_eq!(row.get::<_, Option<&str>>(2), Some("Pod"));
    assert_eq!(row.get::<_, Option<&str>>(3), Some("pod-7"));
    assert_eq!(row.get::<_, Option<&str>>(4), None);
    assert_eq!(row.get::<_, Option<&str>>(6), Some("BackOff"));
    assert_eq!(row.get::<_, Option<&str>>(7), Some("kubernetes_events.0"));
    assert_eq!(row.get::<_, Option<&str>>(8), Some("k8s.events"));
    assert!(row.get::<_, bool>(9), "time column");
    assert!(row.get::<_, bool>(10), "the record is stored whole");

    let row = c
        .query_one(&format!("SELECT namespace, object_kind, object_name, username, verb, reason FROM {table} WHERE id = 'audit-3:ResponseComplete'"), &[])
        .await
        .unwrap();
    let cols: Vec<Option<&str>> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(
        cols,
        vec![
            Some("kube-system"),
            Some("configmaps"),
            Some("cm-3"),
            Some("system:admin"),
            Some("update"),
            Some("RBAC: allowed")
        ]
    );

    // The indexes exist (and so the table was made by the output).
    let idx: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        idx as usize,
        8 + kubetrail_activity::pg::INDEXES.len(),
        "primary key + 7 indexes + the activity indexes"
    );
    o.close().await.unwrap();
}

/// A table made by a kubetrail from before the activity columns, with rows in it: the output
/// adds the columns and indexes, fills the old rows in the background, and `who` answers
/// from old and new rows alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_table_is_migrated_and_its_old_rows_filled() {
    let _turn = SERVER.lock().await;
    let table = unique_table();
    let c = client().await;
    // The table and the insert as the output wrote them before the activity columns.
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, time timestamptz, kind text, namespace text, object_kind text, \
         object_name text, username text, verb text, reason text, source text, tag text, record jsonb NOT NULL)"
    ))
    .await
    .unwrap();
    let old = [
        (
            "d1/ResponseComplete",
            r#"{"id":"d1/ResponseComplete","time":"2026-12-06T23:04:47.6Z","kind":"k8s_audit","source":"audit_file.0","tag":"k8s.audit","stage":"ResponseComplete","verb":"delete","user":{"username":"alice","groups":["dev"]},"object_ref":{"resource":"deployments","api_group":"apps","namespace":"shop","name":"web"},"response_code":200,"object":{"requestReceivedTimestamp":"2026-12-06T23:04:47.582Z","responseObject":{"kind":"Status"}}}"#,
        ),
        (
            "c1/ResponseComplete",
            r#"{"id":"c1/ResponseComplete","time":"2026-12-06T23:01:06.71Z","kind":"k8s_audit","source":"audit_file.0","tag":"k8s.audit","stage":"ResponseComplete","verb":"create","user":{"username":"alice","groups":["dev"]},"object_ref":{"resource":"deployments","api_group":"apps","namespace":"shop"},"response_code":201,"object":{"requestReceivedTimestamp":"2026-12-06T23:01:06.7Z","responseObject":{"kind":"Deployment","metadata":{"name":"web","namespace":"shop","uid":"d-uid"},"spec":{"replicas":3}}}}"#,
        ),
    ];
    for (id, rec) in old {
        c.execute(
            &format!("INSERT INTO {table} (id, time, kind, verb, record) VALUES ($1, now(), 'k8s_audit', 'x', $2::text::jsonb)"),
            &[&id, &rec],
        )
        .await
        .unwrap();
    }
    // A new kubetrail delivers a new row: the table is migrated, the old rows filled.
    let mut o = output(&table, &[]);
    o.open(None).await.unwrap();
    o.deliver(&[audit(1)]).await.unwrap();
    let mut filled = 0i64;
    for _ in 0..200 {
        filled = c
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE activity_version IS NOT NULL"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if filled == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(filled, 3, "the old rows are filled");
    let row = c
        .query_one(&format!("SELECT resource, obj_name, obj_uid, user_groups, seq FROM {table} WHERE id = 'c1/ResponseComplete'"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), Some("deployments"));
    assert_eq!(
        row.get::<_, Option<&str>>(1),
        Some("web"),
        "the name the create's response gave"
    );
    assert_eq!(row.get::<_, Option<&str>>(2), Some("d-uid"));
    assert_eq!(
        row.get::<_, Option<Vec<String>>>(3),
        Some(vec!["dev".to_string()])
    );
    assert!(row.get::<_, i64>(4) > 0, "old rows are numbered too");
    // Migrating again changes nothing.
    o.close().await.unwrap();
    let mut o = output(&table, &[]);
    o.open(None).await.unwrap();
    o.deliver(&[audit(2)]).await.unwrap();
    o.close().await.unwrap();
    // `who` reads the old rows like new ones.
    let (qc, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let store = kubetrail_query::Store::postgres(qc, &table, Duration::from_secs(10))
        .await
        .unwrap();
    let story = store
        .who(&kubetrail_query::WhoQuery {
            object: Some("deploy/web".parse().unwrap()),
            namespace: Some("shop".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let whats: Vec<(kubetrail_query::ChangeKind, Option<String>)> = story
        .changes
        .iter()
        .map(|c| (c.what, c.actor.as_ref().and_then(|a| a.user.clone())))
        .collect();
    assert_eq!(
        whats,
        vec![
            (
                kubetrail_query::ChangeKind::Created,
                Some("alice".to_string())
            ),
            (
                kubetrail_query::ChangeKind::Deleted,
                Some("alice".to_string())
            )
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_records_are_stored_not_refused() {
    let _turn = SERVER.lock().await;
    let table = unique_table();
    let mut o = output(&table, &[]);
    o.open(None).await.unwrap();
    let odd = [
        r#"{"id":"nul","kind":"k8s_audit","source":"s","tag":"t","verb":"get\u0000x","object":{"a":"\u0000"}}"#.as_bytes().to_vec(),
        r#"{"id":"lone","kind":"k8s_event","source":"s","tag":"t","reason":"\ud800","object":{"b":"\udfff\ud83d\ude00"}}"#.as_bytes().to_vec(),
        b"not json at all \xff".to_vec(),
        br#"{"id":"types","kind":7,"namespace":{"x":1},"time":"never","source":"s","tag":"t"}"#.to_vec(),
        br#"{"kind":"Event","apiVersion":"v1","metadata":{"namespace":"raw-ns"},"involvedObject":{"kind":"Node","name":"n1"},"reason":"Rebooted"}"#.to_vec(),
    ];
    let batch: Vec<QueueItem> = odd
        .iter()
        .enumerate()
        .map(|(i, d)| QueueItem {
            seq: i as u64,
            id: format!("odd-{i}"),
            data: d.clone().into(),
        })
        .collect();
    o.deliver(&batch).await.expect("odd records are stored");
    assert_eq!(count(&table).await, 5);
    let c = client().await;
    let r = c
        .query_one(
            &format!("SELECT verb, record->'object'->>'a' FROM {table} WHERE id = 'odd-0'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<&str>>(0), Some("get\u{fffd}x"));
    assert_eq!(r.get::<_, Option<&str>>(1), Some("\u{fffd}"));
    let r = c
        .query_one(
            &format!("SELECT namespace, object_kind, reason, kind FROM {table} WHERE id = 'odd-4'"),
            &[],
        )
        .await
        .unwrap();
    let cols: Vec<Option<&str>> = (0..4).map(|i| r.get(i)).collect();
    assert_eq!(
        cols,
        vec![
            Some("raw-ns"),
            Some("Node"),
            Some("Rebooted"),
            Some("k8s_event")
        ]
    );
    let r = c
        .query_one(
            &format!("SELECT record #>> '{{}}' FROM {table} WHERE id = 'odd-2'"),
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, &str>(0).starts_with("not json at all"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_errors_are_refused_and_server_errors_retried() {
    let _turn = SERVER.lock().await;
    let table = unique_table();
    let mut o = output(&table, &[("timeout", "5s")]);
    o.open(None).await.unwrap();
    o.deliver(&[event(1)]).await.unwrap();
    let c = client().await;
    // A constraint the operator added refuses a record: that batch is the problem.
    c.batch_execute(&format!("ALTER TABLE {table} ADD CONSTRAINT no_secrets CHECK (object_kind IS DISTINCT FROM 'secrets')")).await.unwrap();
    let mut secret = audit(9);
    secret.data = String::from_utf8(secret.data.to_vec())
        .unwrap()
        .replace("configmaps", "secrets")
        .into_bytes()
        .into();
    match o.deliver(&[event(2), secret.clone()]).await {
        Err(DeliveryError::Rejected { message }) => {
            assert!(message.contains("no_secrets"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // With a dead-letter file (as in a pipeline), only the refused record goes there.
    let dl = tempfile::tempdir().unwrap();
    let writer = kubetrail::outputs::http_common::DeadLetterWriter::new(dl.path(), "postgresql.0");
    o.attach_dead_letters(writer.clone());
    o.deliver(&[event(2), secret, event(6)])
        .await
        .expect("the others are written");
    assert_eq!(count(&table).await, 3);
    let letters = std::fs::read_to_string(writer.path()).unwrap();
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(
        letters.contains("audit-9:ResponseComplete") && letters.contains("no_secrets"),
        "{letters}"
    );
    // A table whose columns do not match is the operator's to fix: retried, nothing lost.
    c.batch_execute(&format!("ALTER TABLE {table} DROP COLUMN verb"))
        .await
        .unwrap();
    match o.deliver(&[event(3)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("verb"), "{message}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // A dropped table is made again.
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert!(o.deliver(&[event(4)]).await.is_err());
    o.deliver(&[event(4)]).await.expect("table made again");
    assert_eq!(count(&table).await, 1);
    // Wrong password: retried, and the message says what failed without the password.
    let url = pg_url();
    let bad = url.replacen("kubetrail:", "kubetrail:x", 1);
    let mut s = Section::from_pairs(
        SectionKind::Output,
        "postgresql",
        &[("url", &bad), ("table", &table)],
    );
    let mut o = PostgresqlOutput::from_section(&mut s).unwrap();
    match o.deliver(&[event(5)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(
                message.contains("password") || message.contains("authentication"),
                "{message}"
            );
            let pw = bad.split(':').nth(2).unwrap().split('@').next().unwrap();
            assert!(!message.contains(pw), "the password is never in a message");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_retried_and_reconnected() {
    let _turn = SERVER.lock().await;
    let table = unique_table();
    let mut o = output(&table, &[("timeout", "5s")]);
    o.open(None).await.unwrap();
    o.deliver(&[event(1)]).await.unwrap();
    services("pg-stop");
    let down = o.deliver(&[event(2)]).await;
    services("pg-start");
    assert!(
        matches!(down, Err(DeliveryError::Retryable { .. })),
        "{down:?}"
    );
    // The next attempt reconnects.
    let mut ok = false;
    for _ in 0..20 {
        if o.deliver(&[event(2), event(3)]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "delivers after the server is back");
    assert_eq!(count(&table).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let _turn = SERVER.lock().await;
    let ca = env_var("KUBETRAIL_TEST_PG_CA_FILE");
    let table = unique_table();
    let mut o = output(
        &table,
        &[("tls", "on"), ("tls.ca_file", &ca), ("timeout", "5s")],
    );
    o.deliver(&[event(1)])
        .await
        .expect("TLS connection with the test CA");
    // The output's own session is encrypted.
    let c = client().await;
    let ssl: bool = c
        .query_one("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'kubetrail'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    o.close().await.unwrap();
    // An unknown CA (the public roots) is refused, and says so.
    let mut o = output(&table, &[("tls", "on"), ("timeout", "5s")]);
    match o.deliver(&[event(2)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(
                message.contains("certificate") || message.contains("UnknownIssuer"),
                "{message}"
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // A name the certificate does not hold is refused; tls.verify off accepts anything.
    let mut o = output(
        &table,
        &[
            ("tls", "on"),
            ("tls.ca_file", &ca),
            ("tls.vhost", "db.example"),
            ("timeout", "5s"),
        ],
    );
    assert!(o.deliver(&[event(2)]).await.is_err());
    let mut o = output(
        &table,
        &[("tls", "on"), ("tls.verify", "off"), ("timeout", "5s")],
    );
    o.deliver(&[event(2)]).await.expect("verification off");
    assert_eq!(count(&table).await, 2);
}

// ---- through the pipeline -----------------------------------------------------------------

fn spec(i: usize) -> EventSpec {
    let kinds = ["Pod", "Deployment", "ReplicaSet", "Node"];
    EventSpec::simple(
        ["a", "b", "c"][i % 3],
        kinds[i % 4],
        format!("obj-{i}"),
        "BackOff",
        format!("message {i} {}", "m".repeat(i % 400)),
    )
}

fn pipeline_config(env: &Env, table: &str, output_extra: &str) -> std::path::PathBuf {
    env.write_config(&format!(
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
      kube_request_limit: 250
  outputs:
    - name: postgresql
      match: '*'
      url: {pg}
      table: {table}
      retry_max_backoff: 2s
      retry_base_backoff: 100ms
{output_extra}
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        pg = pg_url(),
    ))
}

/// Every (uid, resourceVersion) in the table, and how many rows there are.
async fn stored(table: &str) -> (HashSet<(String, String)>, usize) {
    let rows = client()
        .await
        .query(&format!("SELECT record->>'uid', record->>'resource_version' FROM {table} WHERE kind = 'k8s_event'"), &[])
        .await
        .unwrap_or_default();
    let n = rows.len();
    (
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect(),
        n,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_delivery_loses_and_repeats_no_row() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let table = unique_table();
    let config = pipeline_config(&env, &table, "      batch.records: 100");
    // A backlog big enough that the output is busy whenever it is killed.
    let mut expected = HashSet::new();
    for i in 0..30_000 {
        let e = env.emu.create_event(spec(i));
        expected.insert((e.uid, e.resource_version));
    }
    // More Events keep coming while kubetrail is killed and started again.
    let emu = env.emu.clone();
    let writer = tokio::spawn(async move {
        let mut made = Vec::new();
        for i in 0..120 {
            for j in 0..25 {
                let e = emu.create_event(spec(100_000 + i * 25 + j));
                made.push((e.uid, e.resource_version));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        made
    });
    let mut kills_mid_delivery = 0;
    let mut run = 0;
    while kills_mid_delivery < 12 && run < 30 {
        run += 1;
        let mut child = spawn_kubetrail(&config, env.dir.path(), run);
        let before = count(&table).await;
        let t = Instant::now();
        while count(&table).await == before && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        // Killed right after seeing the count move: in the middle of delivering.
        let c1 = count(&table).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let c2 = count(&table).await;
        signal(&child, "KILL");
        let _ = child.wait();
        if c2 > c1 {
            kills_mid_delivery += 1;
        }
    }
    expected.extend(writer.await.unwrap());
    assert!(
        kills_mid_delivery >= 10,
        "only {kills_mid_delivery} kills while rows were being written"
    );
    // A last, clean run delivers the rest.
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let t = Instant::now();
    while stored(&table).await.1 < expected.len() && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let (seen, rows) = stored(&table).await;
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        diagnostics(&env)
    );
    assert_eq!(rows, seen.len(), "an Event occurrence is in two rows");
    assert_eq!(rows, expected.len(), "rows that were never made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_60_seconds_then_everything_arrives_with_bounded_memory() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let table = unique_table();
    let config = pipeline_config(&env, &table, "");
    let mut expected = HashSet::new();
    for i in 0..500 {
        let e = env.emu.create_event(spec(i));
        expected.insert((e.uid, e.resource_version));
    }
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let t = Instant::now();
    while stored(&table).await.1 < 500 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored(&table).await.1, 500, "first Events delivered");
    let rss_before = rss_kib(child.id()).unwrap_or(0);

    services("pg-stop");
    // 60 seconds down, 6,000 Events meanwhile (they queue on disk, not in memory).
    let mut peak = rss_before;
    let down = Instant::now();
    let mut i = 500;
    while down.elapsed() < Duration::from_secs(60) {
        for _ in 0..50 {
            let e = env.emu.create_event(spec(i));
            expected.insert((e.uid, e.resource_version));
            i += 1;
        }
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    services("pg-start");
    let t = Instant::now();
    while stored(&table).await.1 < expected.len() && t.elapsed() < Duration::from_secs(120) {
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let (seen, rows) = stored(&table).await;
    let missing = expected.difference(&seen).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} Events missing after the server came back, e.g. {:?}\n{}",
        expected.len(),
        expected.difference(&seen).next(),
        diagnostics(&env)
    );
    assert_eq!(rows, expected.len());
    assert!(status.success());
    eprintln!(
        "kubetrail RSS: {} KiB before the outage, peak {} KiB",
        rss_before, peak
    );
    assert!(
        peak < 160 * 1024,
        "kubetrail's memory grew to {peak} KiB while the server was down"
    );
}
