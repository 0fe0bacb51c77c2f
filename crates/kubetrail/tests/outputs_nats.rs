//! The `nats` output against a real nats-server with JetStream (started by `scripts/services`,
//! which `./scripts/test` runs): the stream made with the template's subjects, every message
//! acknowledged and stored once even when batches are published again, records too large
//! refused, a stopped server retried; and through the whole pipeline (the `kubetrail` binary,
//! Events from the emulator): `kill -9` a dozen times in the middle of delivery with no
//! message missing or repeated, and the server stopped for 60 seconds with everything
//! arriving after it returns while kubetrail's memory stays bounded.
//!
//! Authentication against servers the tests start with their own configuration: TLS with a
//! private CA, a client certificate and `tls.vhost`; an NKey seed; a credentials file of a
//! user JWT issued by an account of an operator (keys and JWTs made here with the nkeys
//! crate); wrong credentials refused.
//!
//! The tests need `KUBETRAIL_TEST_NATS_URL` (and `KUBETRAIL_TEST_SERVICES[_DIR]` to stop and
//! start the server); without them they fail, telling to run `./scripts/test`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use kubetrail::outputs::nats::NatsOutput;
use kubetrail::pipeline::{DeliveryError, Output};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_emulator::EventSpec;
use kubetrail_state::QueueItem;

/// The tests share one server, and some of them stop it: they take turns.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test, which starts PostgreSQL and NATS (scripts/services)")
    })
}

fn nats_url() -> String {
    env_var("KUBETRAIL_TEST_NATS_URL")
}

/// `nats-stop` or `nats-start` through scripts/services.
fn services(cmd: &str) {
    let status = std::process::Command::new(env_var("KUBETRAIL_TEST_SERVICES"))
        .arg(cmd)
        .arg(env_var("KUBETRAIL_TEST_SERVICES_DIR"))
        .status()
        .expect("run scripts/services");
    assert!(status.success(), "scripts/services {cmd} failed");
}

/// A stream name and subject prefix no other test uses (streams may not share subjects).
fn unique() -> (String, String) {
    let t = format!("{:016x}", fastrand::u64(..));
    (format!("T{t}"), format!("t{t}"))
}

fn output(stream: &str, prefix: &str, extra: &[(&str, &str)]) -> NatsOutput {
    let url = nats_url();
    let subject = format!("{prefix}.{{kind}}.{{namespace|object_ref.namespace}}");
    let mut pairs = vec![
        ("url", url.as_str()),
        ("stream", stream),
        ("subject", subject.as_str()),
    ];
    pairs.extend_from_slice(extra);
    let mut s = Section::from_pairs(SectionKind::Output, "nats", &pairs);
    let o = NatsOutput::from_section(&mut s).expect("valid options");
    s.finish().expect("no unknown keys");
    o
}

/// A JetStream context on the shared test server.
async fn js() -> jetstream::Context {
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to the test server");
    jetstream::new(client)
}

/// The stream's configuration and state (None if it does not exist).
async fn stream_info(stream: &str) -> Option<jetstream::stream::Info> {
    let s = js().await.get_stream(stream).await.ok()?;
    Some(s.cached_info().clone())
}

async fn message_count(stream: &str) -> u64 {
    stream_info(stream).await.map_or(0, |i| i.state.messages)
}

/// One stored message: subject, `Nats-Msg-Id`, body.
struct Stored {
    subject: String,
    msg_id: String,
    body: serde_json::Value,
}

/// Every message in the stream, in order.
async fn read_all(stream: &str) -> Vec<Stored> {
    let s = js().await.get_stream(stream).await.expect("the stream");
    let state = s.cached_info().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue; // deleted (never, with these streams)
        };
        out.push(Stored {
            subject: m.subject.to_string(),
            msg_id: m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
            body: serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null),
        });
    }
    out
}

fn event(i: usize) -> QueueItem {
    let id = format!("uid-{i}:{}", 1000 + i);
    let data = format!(
        r#"{{"id":"{id}","time":"2026-11-27T00:30:51Z","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","namespace":"ns-{ns}","reason":"BackOff","involved_object":{{"kind":"Pod","name":"pod-{i}"}},"message":"{pad}","object":{{"kind":"Event"}}}}"#,
        ns = i % 3,
        pad = "x".repeat(i % 500),
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
        r#"{{"id":"{id}","time":"2026-11-27T00:31:00Z","kind":"k8s_audit","source":"audit_webhook.0","tag":"k8s.audit","verb":"get","object_ref":{{"resource":"pods","namespace":"kube system"}},"object":{{}}}}"#
    );
    QueueItem {
        seq: i as u64 + 1,
        id,
        data: data.into_bytes().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acknowledged_and_stored_once() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(&stream, &prefix, &[("max_in_flight", "64")]);
    o.open(None).await.unwrap();
    let batch: Vec<QueueItem> = (0..900).map(event).chain((0..100).map(audit)).collect();
    o.deliver(&batch[..700]).await.unwrap();
    // Delivered again (a lost acknowledgement), then overlapping the rest.
    o.deliver(&batch[..700]).await.unwrap();
    o.deliver(&batch[500..]).await.unwrap();

    let info = stream_info(&stream)
        .await
        .expect("the output made the stream");
    assert_eq!(info.config.subjects, vec![format!("{prefix}.*.*")]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.state.messages, 1000);
    let stored = read_all(&stream).await;
    assert_eq!(stored.len(), 1000);
    let mut ids = HashMap::new();
    for m in &stored {
        *ids.entry(m.msg_id.clone()).or_insert(0) += 1;
        assert_eq!(
            m.body["id"].as_str(),
            Some(m.msg_id.as_str()),
            "Nats-Msg-Id is the record id"
        );
    }
    assert_eq!(ids.len(), 1000, "no duplicate message");
    let by_id: HashMap<&str, &Stored> = stored.iter().map(|m| (m.msg_id.as_str(), m)).collect();
    assert_eq!(
        by_id["uid-4:1004"].subject,
        format!("{prefix}.k8s_event.ns-1")
    );
    assert_eq!(
        by_id["audit-3:ResponseComplete"].subject,
        format!("{prefix}.k8s_audit.kube_system")
    );
    assert_eq!(
        by_id["uid-4:1004"].body,
        serde_json::from_slice::<serde_json::Value>(&event(4).data).unwrap()
    );
    o.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_max_payload_are_refused_the_others_published() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(&stream, &prefix, &[]);
    o.open(None).await.unwrap();
    let mut big = event(5);
    big.id = "big".into();
    big.data = format!(
        r#"{{"id":"big","kind":"k8s_audit","pad":"{}"}}"#,
        "y".repeat(2 << 20)
    )
    .into_bytes()
    .into();
    match o.deliver(&[event(1), big, event(2)]).await {
        Err(DeliveryError::Rejected { message }) => assert!(
            message.contains("big") && message.contains("max_payload"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(message_count(&stream).await, 2);
    // With a dead-letter file (as in a pipeline), only that record goes there.
    let dl = tempfile::tempdir().unwrap();
    let writer = kubetrail::outputs::http_common::DeadLetterWriter::new(dl.path(), "nats.0");
    o.attach_dead_letters(writer.clone());
    let mut big = event(5);
    big.id = "big2".into();
    big.data = format!(
        r#"{{"id":"big2","kind":"k8s_audit","pad":"{}"}}"#,
        "y".repeat(2 << 20)
    )
    .into_bytes()
    .into();
    o.deliver(&[event(3), big, event(4)])
        .await
        .expect("the others are published");
    assert_eq!(message_count(&stream).await, 4);
    let letters = std::fs::read_to_string(writer.path()).unwrap();
    assert_eq!(letters.lines().count(), 1);
    assert!(
        letters.contains("\"id\":\"big2\"") && letters.contains("max_payload"),
        "{:.300}",
        letters
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_retried_and_reconnected() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(
        &stream,
        &prefix,
        &[("ack_timeout", "2s"), ("connect_timeout", "2s")],
    );
    o.open(None).await.unwrap();
    o.deliver(&[event(1)]).await.unwrap();
    services("nats-stop");
    let down = o.deliver(&[event(2)]).await;
    services("nats-start");
    assert!(
        matches!(down, Err(DeliveryError::Retryable { .. })),
        "{down:?}"
    );
    let mut ok = false;
    for _ in 0..40 {
        if o.deliver(&[event(1), event(2), event(3)]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "delivers after the server is back");
    assert_eq!(
        message_count(&stream).await,
        3,
        "event 1 published again was deduplicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_takes_is_retried_with_a_clear_message() {
    let _turn = SERVER.lock().await;
    let (_, prefix) = unique();
    // No stream management: nothing takes these subjects.
    let mut o = output("", &prefix, &[("ack_timeout", "2s")]);
    match o.deliver(&[event(1)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("no responders"), "{message}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_again_after_the_duplicate_window_repeats_nothing() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    // A one-second window, so the test can outlive it.
    let mut o = output(&stream, &prefix, &[("duplicate_window", "1s")]);
    o.open(None).await.unwrap();
    let first: Vec<QueueItem> = (0..300).map(event).collect();
    let state = o.deliver(&first).await.unwrap();
    assert_eq!(
        state.as_deref(),
        Some("300"),
        "the last acknowledged sequence is the committed state"
    );
    // The next batch was half published when kubetrail died (its acks never counted)...
    let second: Vec<QueueItem> = (300..600).map(event).collect();
    let mut lost = output(&stream, &prefix, &[("duplicate_window", "1s")]);
    lost.deliver(&second[..150]).await.unwrap();
    // ...and comes back after the window is over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut again = output(&stream, &prefix, &[("duplicate_window", "1s")]);
    again.open(state).await.unwrap();
    let state = again.deliver(&second).await.unwrap();
    assert_eq!(message_count(&stream).await, 600, "nothing stored twice");
    assert_eq!(state.as_deref(), Some("600"));
    let ids: HashSet<String> = read_all(&stream)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids.len(), 600);
    // Without that check (verify_limit 0 = never read back) the window alone would not do.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut blind = output(
        &stream,
        &prefix,
        &[("duplicate_window", "1s"), ("verify_limit", "0")],
    );
    blind.open(Some("450".into())).await.unwrap();
    blind.deliver(&second[150..160]).await.unwrap();
    assert_eq!(
        message_count(&stream).await,
        610,
        "the window is over: published again"
    );
}

/// A CA, and certificates it signed (PEM certificate, PEM key).
struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "kubetrail test CA");
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    fn leaf(&self, names: &[&str], purpose: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        p.extended_key_usages = vec![purpose];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A nats-server of the test's own, killed when dropped.
struct OwnServer(std::process::Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_a_client_certificate_and_a_vhost() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    // The certificate names the service, not the address the output connects to.
    let (srv_crt, srv_key) = ca.leaf(
        &["nats.kubetrail.test"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cli_crt, cli_key) = ca.leaf(&["kubetrail"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let path = |n: &str| dir.path().join(n).display().to_string();
    for (name, pem) in [
        ("ca.pem", &ca.pem),
        ("srv.pem", &srv_crt),
        ("srv.key", &srv_key),
        ("cli.pem", &cli_crt),
        ("cli.key", &cli_key),
    ] {
        std::fs::write(path(name), pem).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _server = OwnServer(
        std::process::Command::new(env_var("KUBETRAIL_TEST_NATS_SERVER"))
            .args(["-js", "-sd", &path("js"), "-a", "127.0.0.1", "-p", &port])
            .args([
                "--tls",
                "--tlscert",
                &path("srv.pem"),
                "--tlskey",
                &path("srv.key"),
                "--tlsverify",
                "--tlscacert",
                &path("ca.pem"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            &addr
        )
        .is_ok())
        .await,
        "nats-server with TLS listens"
    );
    let make = |pairs: &[(&str, &str)]| {
        let mut all = vec![
            ("subject", "tls.{kind}"),
            ("stream", "TLS"),
            ("ack_timeout", "3s"),
            ("connect_timeout", "3s"),
        ];
        all.extend_from_slice(pairs);
        let mut s = Section::from_pairs(SectionKind::Output, "nats", &all);
        let o = NatsOutput::from_section(&mut s).expect("valid options");
        s.finish().expect("no unknown keys");
        o
    };
    let (ca_file, crt, key) = (path("ca.pem"), path("cli.pem"), path("cli.key"));
    let tls_url = format!("tls://127.0.0.1:{port}");
    let vhost = ("tls.vhost", "nats.kubetrail.test");
    let mut o = make(&[
        ("url", &tls_url),
        ("tls.ca_file", &ca_file),
        ("tls.crt_file", &crt),
        ("tls.key_file", &key),
        vhost,
    ]);
    o.deliver(&[event(1), event(2)])
        .await
        .expect("published over TLS with a client certificate");
    // Without the vhost the certificate does not name 127.0.0.1.
    let mut o = make(&[
        ("url", &tls_url),
        ("tls.ca_file", &ca_file),
        ("tls.crt_file", &crt),
        ("tls.key_file", &key),
    ]);
    match o.deliver(&[event(3)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("not valid for name"), "{message}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }

    let plain_url = format!("nats://127.0.0.1:{port}");
    let mut o = make(&[("url", &plain_url)]);
    match o.deliver(&[event(3)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("requires TLS"), "{message}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // Without a client certificate the server refuses; with an unknown CA the client does.
    let mut o = make(&[("url", &tls_url), ("tls.ca_file", &ca_file), vhost]);
    assert!(o.deliver(&[event(3)]).await.is_err());
    let mut o = make(&[
        ("url", &tls_url),
        ("tls.crt_file", &crt),
        ("tls.key_file", &key),
    ]);
    match o.deliver(&[event(3)]).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(
                message.contains("certificate") || message.contains("UnknownIssuer"),
                "{message}"
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let mut o = make(&[
        ("url", &tls_url),
        ("tls.verify", "off"),
        ("tls.crt_file", &crt),
        ("tls.key_file", &key),
    ]);
    o.deliver(&[event(1), event(3)])
        .await
        .expect("verification off");
}

// ---- NKey and credentials-file authentication ----------------------------------------------

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a nats-server of the test's own with `config` (its `listen` filled in) and waits
/// until it accepts connections.
async fn own_server(dir: &std::path::Path, config: &str) -> (OwnServer, String) {
    let port = free_port();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{config}",
            dir.join("js").display().to_string()
        ),
    )
    .unwrap();
    let log = dir.join("server.log");
    let server = OwnServer(
        std::process::Command::new(env_var("KUBETRAIL_TEST_NATS_SERVER"))
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start nats-server"),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            &addr
        )
        .is_ok())
        .await,
        "nats-server listens\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (server, format!("nats://{addr}"))
}

fn auth_output(url: &str, pairs: &[(&str, &str)]) -> NatsOutput {
    let mut all = vec![
        ("url", url),
        ("subject", "auth.{kind}"),
        ("stream", "AUTH"),
        ("ack_timeout", "3s"),
        ("connect_timeout", "3s"),
    ];
    all.extend_from_slice(pairs);
    let mut s = Section::from_pairs(SectionKind::Output, "nats", &all);
    let o = NatsOutput::from_section(&mut s).expect("valid options");
    s.finish().expect("no unknown keys");
    o
}

/// A refused connection: retried, with the server's refusal in the message.
async fn assert_refused(o: &mut NatsOutput) {
    match o.deliver(&[event(9)]).await {
        Err(DeliveryError::Retryable { message, .. }) => assert!(
            message.to_lowercase().contains("authorization violation"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let (_server, url) = own_server(
        dir.path(),
        &format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .await;
    let seed_file = dir.path().join("kubetrail.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let seed_path = seed_file.display().to_string();
    let mut o = auth_output(&url, &[("nkey_seed_file", &seed_path)]);
    o.preflight().expect("the seed file reads");
    o.deliver(&[event(1), event(2)])
        .await
        .expect("published with the NKey seed");

    // Another user's seed: the server does not know its public key.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let stranger = stranger.display().to_string();
    assert_refused(&mut auth_output(&url, &[("nkey_seed_file", &stranger)])).await;
    // No credentials at all.
    assert_refused(&mut auth_output(&url, &[])).await;

    let mut o = auth_output(&url, &[("nkey_seed", &user.seed().unwrap())]);
    o.deliver(&[event(1), event(3)])
        .await
        .expect("the seed written inline works too");
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::new()
            .nkey(user.seed().unwrap())
            .connect(&url)
            .await
            .unwrap(),
    );
    let info = js.get_stream("AUTH").await.unwrap().cached_info().clone();
    assert_eq!(info.state.messages, 3, "event 1 once, 2 and 3");
}

/// A JWT as nsc makes them: header, claims, signed by `issuer` (base64url without padding).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{:026X}", fastrand::u128(..)),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64.encode(claims.to_string())
    );
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(sig))
}

/// An account JWT signed by the operator, with JetStream allowed or not (the system account
/// may not have it).
fn account_jwt(
    operator: &nkeys::KeyPair,
    account: &nkeys::KeyPair,
    name: &str,
    jetstream: bool,
) -> String {
    let mut limits = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    });
    if jetstream {
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[k] = serde_json::json!(-1);
        }
    }
    jwt(
        operator,
        &account.public_key(),
        name,
        serde_json::json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    )
}

/// A user JWT signed by its account, and the `.creds` file holding it and the user's seed.
fn creds(account: &nkeys::KeyPair, user: &nkeys::KeyPair) -> String {
    let token = jwt(
        account,
        &user.public_key(),
        "kubetrail",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_with_an_operator_and_an_account() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "kubetrail-test",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let (_server, url) = own_server(
        dir.path(),
        &format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {sys_jwt}\n  {acc}: {acc_jwt}\n}}\n",
            sys = system.public_key(),
            sys_jwt = account_jwt(&operator, &system, "SYS", false),
            acc = account.public_key(),
            acc_jwt = account_jwt(&operator, &account, "KUBETRAIL", true),
        ),
    )
    .await;
    let user = nkeys::KeyPair::new_user();
    let good = dir.path().join("kubetrail.creds");
    std::fs::write(&good, creds(&account, &user)).unwrap();
    let good = good.display().to_string();
    let mut o = auth_output(&url, &[("credentials_file", &good)]);
    o.preflight().expect("the credentials file reads");
    o.deliver(&[event(1), event(2)])
        .await
        .expect("published with the credentials file");

    // A user of an account the operator never signed.
    let rogue = nkeys::KeyPair::new_account();
    let bad = dir.path().join("rogue.creds");
    std::fs::write(&bad, creds(&rogue, &nkeys::KeyPair::new_user())).unwrap();
    assert_refused(&mut auth_output(
        &url,
        &[("credentials_file", &bad.display().to_string())],
    ))
    .await;
    // The right JWT with another user's seed: the nonce's signature does not match.
    let text = creds(&account, &user).replace(
        &user.seed().unwrap(),
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );
    let stolen = dir.path().join("stolen.creds");
    std::fs::write(&stolen, text).unwrap();
    assert_refused(&mut auth_output(
        &url,
        &[("credentials_file", &stolen.display().to_string())],
    ))
    .await;

    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::new()
            .credentials_file(&good)
            .await
            .unwrap()
            .connect(&url)
            .await
            .unwrap(),
    );
    let info = js.get_stream("AUTH").await.unwrap().cached_info().clone();
    assert_eq!(
        info.state.messages, 2,
        "only the accepted connection published"
    );
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

fn pipeline_config(
    env: &Env,
    stream: &str,
    prefix: &str,
    output_extra: &str,
) -> std::path::PathBuf {
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
    - name: nats
      match: '*'
      url: {nats}
      stream: {stream}
      subject: '{prefix}.{{kind}}.{{namespace}}'
      ack_timeout: 3s
      connect_timeout: 2s
      retry_max_backoff: 2s
      retry_base_backoff: 100ms
{output_extra}
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        nats = nats_url(),
    ))
}

/// Every Event occurrence in the stream, and how many messages hold one.
async fn stored_events(stream: &str) -> (HashSet<(String, String)>, usize) {
    let all = read_all(stream).await;
    let events: Vec<_> = all
        .iter()
        .filter(|m| m.body["kind"] == "k8s_event")
        .collect();
    let set = events
        .iter()
        .map(|m| {
            (
                m.body["uid"].as_str().unwrap_or("").to_string(),
                m.body["resource_version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    (set, events.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_delivery_loses_and_repeats_no_message() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let (stream, prefix) = unique();
    let config = pipeline_config(&env, &stream, &prefix, "      batch.records: 100");
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
        let before = message_count(&stream).await;
        let t = Instant::now();
        while message_count(&stream).await == before && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        // Killed right after seeing the count move: in the middle of delivering.
        let c1 = message_count(&stream).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let c2 = message_count(&stream).await;
        signal(&child, "KILL");
        let _ = child.wait();
        if c2 > c1 {
            kills_mid_delivery += 1;
        }
    }
    expected.extend(writer.await.unwrap());
    assert!(
        kills_mid_delivery >= 10,
        "only {kills_mid_delivery} kills while messages were being published"
    );
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let t = Instant::now();
    while (message_count(&stream).await as usize) < expected.len()
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let (seen, n) = stored_events(&stream).await;
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        diagnostics(&env)
    );
    assert_eq!(n, seen.len(), "an Event occurrence is in two messages");
    assert_eq!(n, expected.len(), "messages that were never made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_60_seconds_then_everything_arrives_with_bounded_memory() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let (stream, prefix) = unique();
    let config = pipeline_config(&env, &stream, &prefix, "");
    let mut expected = HashSet::new();
    for i in 0..500 {
        let e = env.emu.create_event(spec(i));
        expected.insert((e.uid, e.resource_version));
    }
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let t = Instant::now();
    while message_count(&stream).await < 500 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(message_count(&stream).await, 500, "first Events delivered");
    let rss_before = rss_kib(child.id()).unwrap_or(0);

    services("nats-stop");
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
    services("nats-start");
    let t = Instant::now();
    while (message_count(&stream).await as usize) < expected.len()
        && t.elapsed() < Duration::from_secs(120)
    {
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let (seen, n) = stored_events(&stream).await;
    let missing = expected.difference(&seen).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} Events missing after the server came back, e.g. {:?}\n{}",
        expected.len(),
        expected.difference(&seen).next(),
        diagnostics(&env)
    );
    assert_eq!(n, expected.len());
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
