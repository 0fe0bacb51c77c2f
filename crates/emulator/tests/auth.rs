//! Authentication and authorization: tokens, client certificates, revocation, RBAC roles.

mod common;

use std::time::Duration;

use common::*;
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};

fn spec() -> EventSpec {
    EventSpec::simple("a", "Pod", "p", "Started", "m")
}

#[tokio::test]
async fn no_token_and_bad_token_get_401() {
    let emu = start().await;
    let c = Client::new(&emu);
    for r in [
        c.clone().token(None).get("/api/v1/events").await,
        c.clone().token(Some("wrong")).get("/api/v1/events").await,
        c.clone().token(None).get("/api/v1/events?watch=1").await,
        c.clone().token(None).get("/version").await,
    ] {
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["reason"], "Unauthorized");
        assert!(r.header("x-kubernetes-pf-flowschema-uid").is_none());
    }
    assert_eq!(c.get("/api/v1/events").await.status, 200);
    assert_eq!(emu.stats().unauthorized, 4);
}

#[tokio::test]
async fn added_tokens_work_and_anonymous_can_be_enabled() {
    let emu = start().await;
    emu.add_token("t2", "bob");
    let c = Client::new(&emu).token(Some("t2"));
    assert_eq!(c.get("/api/v1/events").await.status, 200);
    let anon = Emulator::start(EmulatorOptions {
        anonymous: true,
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(&anon).token(None);
    assert_eq!(c.get("/api/v1/events").await.status, 200);
}

#[tokio::test]
async fn client_certificate_authenticates_as_its_cn() {
    let emu = Emulator::start(EmulatorOptions {
        forbidden_users: vec!["mallory".into()],
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    emu.create_event(spec());
    let (cert, key) = emu.issue_client_cert("alice");
    let c = Client::new(&emu).client_cert(&emu.ca_pem(), &cert, &key);
    let r = c.get("/api/v1/namespaces/a/events").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    // The CN is the user RBAC sees.
    let (cert, key) = emu.issue_client_cert("mallory");
    let c = Client::new(&emu).client_cert(&emu.ca_pem(), &cert, &key);
    let r = c.get("/api/v1/namespaces/a/events").await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("User \"mallory\"")
    );
}

#[tokio::test]
async fn certificates_from_another_ca_fail() {
    let emu = start().await;
    // The client does not trust an unrelated CA: the handshake fails.
    let wrong = Client::new(&emu).trusting(&Emulator::generate_unrelated_ca_pem());
    let e = wrong.try_get("/api/v1/events").await.err().unwrap();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    // A client certificate from another emulator's CA is rejected by the server.
    let other = start().await;
    let (cert, key) = other.issue_client_cert("alice");
    let c = Client::new(&emu).client_cert(&emu.ca_pem(), &cert, &key);
    assert!(c.try_get("/api/v1/events").await.is_err());
    // and the server still works
    assert_eq!(Client::new(&emu).get("/api/v1/events").await.status, 200);
}

#[tokio::test]
async fn revoking_a_token_cuts_its_watches_and_rejects_it() {
    let emu = start().await;
    emu.add_token("short-lived", "bob");
    let bob = Client::new(&emu).token(Some("short-lived"));
    let admin = Client::new(&emu);
    let mut wb = bob.watch("/api/v1/events?watch=1").await;
    let mut wa = admin.watch("/api/v1/events?watch=1").await;
    emu.create_event(spec());
    assert_eq!(wb.frame().await["type"], "ADDED");
    assert_eq!(wa.frame().await["type"], "ADDED");
    emu.revoke_token("short-lived");
    assert!(matches!(
        wb.next(Duration::from_secs(10)).await,
        Next::Broken(_)
    ));
    // other watches keep going
    emu.create_event(EventSpec::simple("a", "Pod", "q", "Started", "m"));
    assert_eq!(wa.frame().await["type"], "ADDED");
    assert_eq!(bob.get("/api/v1/events").await.status, 401);
}

#[tokio::test]
async fn viewer_reads_events_only_and_forbidden_users_get_403() {
    let emu = Emulator::start(EmulatorOptions {
        tokens: vec![
            ("admin-token".into(), "admin".into()),
            ("v".into(), "viewer".into()),
            ("m".into(), "mallory".into()),
        ],
        viewer_users: vec!["viewer".into()],
        forbidden_users: vec!["mallory".into()],
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    let viewer = Client::new(&emu).token(Some("v"));
    assert_eq!(viewer.get("/api/v1/namespaces/fx/events").await.status, 200);
    assert_eq!(
        viewer
            .watch("/apis/events.k8s.io/v1/events?watch=1")
            .await
            .status,
        200
    );
    assert_eq!(viewer.get("/version").await.status, 200);
    let r = viewer.get("/api/v1/namespaces/fx/eventz").await;
    assert_eq!(r.status, 403, "RBAC runs before routing");
    let mallory = Client::new(&emu).token(Some("m"));
    let r = mallory.get("/api/v1/namespaces/fx/events").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "events is forbidden: User \"mallory\" cannot list resource \"events\" in API group \"\" in the namespace \"fx\""
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let r = mallory.get("/api/v1/events?watch=1").await;
    assert_eq!(r.status, 403, "403 is a plain response, not a watch frame");
    assert_eq!(emu.stats().status(403), 3);
}
