//! Unit tests of the webhook's configuration. The HTTP behaviour is tested end to end in
//! `tests/audit_webhook_http.rs`.

use std::time::Duration;

use kubetrail_core::config::{Config, Section, SectionKind};

use super::*;

fn section(pairs: &[(&str, &str)]) -> Section {
    Section::from_pairs(SectionKind::Input, "audit_webhook", pairs)
}

fn from_yaml(yaml: &str) -> Result<WebhookOptions, String> {
    let text = format!(
        "pipeline:\n  inputs:\n    - name: audit_webhook\n{yaml}  outputs:\n    - name: stdout\n      match: '*'\n"
    );
    let cfg = Config::parse(&text, std::path::Path::new("t.yaml")).map_err(|e| e.to_string())?;
    let mut s = cfg.inputs.into_iter().next().ok_or("no input")?;
    let o = WebhookOptions::from_section(&mut s).map_err(|e| e.to_string())?;
    s.get_str("name").map_err(|e| e.to_string())?;
    s.finish().map_err(|e| e.to_string())?;
    Ok(o)
}

#[test]
fn defaults_with_tls_and_a_token_file() {
    let mut s = section(&[
        ("tls.crt_file", "/c"),
        ("tls.key_file", "/k"),
        ("token_file", "/t"),
    ]);
    let o = WebhookOptions::from_section(&mut s).unwrap();
    s.finish().unwrap();
    assert_eq!(o.listen, "0.0.0.0:9443".parse().unwrap());
    assert_eq!(o.path, "/audit");
    assert_eq!(
        o.tls,
        Some(ServerTls {
            crt_file: "/c".into(),
            key_file: "/k".into(),
            client_ca_file: None
        })
    );
    assert_eq!(o.token_file, Some("/t".into()));
    assert!(o.auth_required);
    assert_eq!(o.max_body_size, 12 << 20);
    assert!(!o.raw_format);
    assert_eq!(o.dedup_retention, Duration::from_secs(3600));
    assert_eq!(o.max_connections, 64);
}

#[test]
fn all_options() {
    let mut s = section(&[
        ("listen", "127.0.0.1:8443"),
        ("path", "/k8s/audit"),
        ("tls.crt_file", "/c"),
        ("tls.key_file", "/k"),
        ("tls.client_ca_file", "/ca"),
        ("max_body_size", "1M"),
        ("format", "raw"),
        ("dedup_retention", "2h"),
        ("max_connections", "3"),
    ]);
    let o = WebhookOptions::from_section(&mut s).unwrap();
    s.finish().unwrap();
    assert_eq!(o.listen.port(), 8443);
    assert_eq!(o.path, "/k8s/audit");
    assert_eq!(o.tls.unwrap().client_ca_file, Some("/ca".into()));
    assert_eq!(o.token_file, None);
    assert_eq!(o.max_body_size, 1 << 20);
    assert!(o.raw_format);
    assert_eq!(o.dedup_retention, Duration::from_secs(7200));
    assert_eq!(o.max_connections, 3);
}

#[test]
fn authentication_is_required_unless_auth_none_is_written() {
    let err = WebhookOptions::from_section(&mut section(&[
        ("tls.crt_file", "/c"),
        ("tls.key_file", "/k"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("requires client authentication"), "{err}");
    let o = WebhookOptions::from_section(&mut section(&[
        ("tls.crt_file", "/c"),
        ("tls.key_file", "/k"),
        ("auth", "none"),
    ]))
    .unwrap();
    assert!(!o.auth_required);
    let err = WebhookOptions::from_section(&mut section(&[
        ("tls.crt_file", "/c"),
        ("tls.key_file", "/k"),
        ("auth", "none"),
        ("token_file", "/t"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("token_file"), "{err}");
}

#[test]
fn tls_is_required_unless_tls_off_is_written() {
    let err = WebhookOptions::from_section(&mut section(&[("token_file", "/t")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.crt_file"), "{err}");
    let err = WebhookOptions::from_section(&mut section(&[
        ("token_file", "/t"),
        ("tls.crt_file", "/c"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls.key_file"), "{err}");
    let o = from_yaml("      tls: off\n      token_file: /t\n").unwrap();
    assert_eq!(o.tls, None);
    let err =
        from_yaml("      tls: off\n      auth: none\n      tls.client_ca_file: /ca\n").unwrap_err();
    assert!(err.contains("tls"), "{err}");
}

#[test]
fn yaml_tls_map_and_typos_inside_it() {
    let o = from_yaml(
        "      tls:\n        crt_file: /c\n        key_file: /k\n        client_ca_file: /ca\n",
    )
    .unwrap();
    assert_eq!(o.tls.unwrap().client_ca_file, Some("/ca".into()));
    let err = from_yaml(
        "      tls:\n        crt_file: /c\n        key_file: /k\n        client_ca_fil: /ca\n      token_file: /t\n",
    )
    .unwrap_err();
    assert!(
        err.contains("client_ca_fil") && err.contains("did you mean"),
        "{err}"
    );
    let err = from_yaml("      tls:\n        crt_fil: /c\n      token_file: /t\n").unwrap_err();
    assert!(err.contains("tls.crt_file"), "{err}");
    let err = from_yaml("      tls: off\n      auth: none\n      max_body_siz: 1M\n").unwrap_err();
    assert!(err.contains("max_body_size"), "{err}");
}

#[test]
fn bad_values() {
    for (k, v) in [
        ("listen", "nope"),
        ("path", "audit"),
        ("max_body_size", "0"),
        ("max_body_size", "lots"),
        ("format", "xml"),
        ("dedup_retention", "soon"),
        ("max_connections", "0"),
        ("auth", "maybe"),
    ] {
        let mut s = section(&[("tls", "off"), ("auth", "none"), (k, v)]);
        let err = WebhookOptions::from_section(&mut s)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(k)),
            "{k}={v}: {err:?}"
        );
    }
}

#[test]
fn the_component_reads_its_section() {
    let mut s = section(&[("tls", "off"), ("auth", "none"), ("path", "/x")]);
    let w = AuditWebhook::from_section(&mut s).unwrap();
    assert_eq!(w.options().path, "/x");
}
