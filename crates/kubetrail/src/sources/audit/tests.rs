//! Unit tests of audit parsing and normalization on small events written here (the shared
//! fixtures are exercised by `tests/audit_webhook_fixtures.rs`).

use std::sync::Arc;

use kubetrail_core::{Original, RecordKind, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const V1: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/fx/secrets/s?x=1\u0026y=2","verb":"get","user":{"username":"admin","uid":"uid-admin","groups":["system:masters","system:authenticated"],"extra":{"k":["v"]}},"impersonatedUser":{"username":"bob","groups":["g"]},"sourceIPs":["10.0.0.1","::1"],"userAgent":"kubectl/v1.28","objectRef":{"resource":"secrets","subresource":"status","namespace":"fx","name":"s","apiGroup":"","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-27T00:32:55.740518Z","stageTimestamp":"2026-11-27T00:32:55.741000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed","other":"x"}}"#;

fn src() -> (Arc<str>, Arc<str>) {
    (Arc::from("audit_webhook.0"), Arc::from("k8s.audit"))
}

fn event(id: &str, stage: &str) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"{id}","stage":"{stage}","verb":"list","user":{{}},"stageTimestamp":"2026-11-27T00:00:01Z"}}"#
    )
}

#[test]
fn a_v1_line_becomes_a_normalized_record_with_exact_bytes() {
    let item = parse_line(format!("{V1}\r\n").as_bytes()).unwrap();
    let (s, t) = src();
    let r = normalize(item, &s, &t, false);
    assert_eq!(r.id, "a-1/ResponseComplete");
    assert_eq!(r.kind, RecordKind::K8sAudit);
    assert_eq!(
        r.time,
        Timestamp::parse_rfc3339("2026-11-27T00:32:55.741Z").unwrap()
    );
    let d = r.dedup.as_ref().unwrap();
    assert_eq!(
        (&*d.scope, d.key.as_str(), d.value.as_str()),
        ("audit", "01795739575741000000/a-1/ResponseComplete", ""),
        "the dedup key leads with the event's time (nanoseconds, zero-padded) so keys arrive in order"
    );
    match &r.original {
        Some(Original::Raw(raw)) => assert_eq!(raw.get(), V1),
        other => panic!("original {other:?}"),
    }
    let f = Value::Object((*r.fields).clone());
    assert_eq!(
        f,
        json!({
            "audit_id": "a-1", "stage": "ResponseComplete", "level": "Metadata", "verb": "get",
            "user": {"username": "admin", "uid": "uid-admin", "groups": ["system:masters", "system:authenticated"]},
            "impersonated_user": {"username": "bob", "groups": ["g"]},
            "source_ips": ["10.0.0.1", "::1"], "user_agent": "kubectl/v1.28",
            "object_ref": {"resource": "secrets", "subresource": "status", "namespace": "fx", "name": "s", "api_group": "", "api_version": "v1"},
            "response_code": 200, "request_uri": "/api/v1/namespaces/fx/secrets/s?x=1&y=2",
            "decision": "allow", "reason": "RBAC: allowed", "api_version": "audit.k8s.io/v1"
        })
    );
    let line = String::from_utf8(r.encode()).unwrap();
    assert!(line.ends_with(&format!(",\"object\":{V1}}}")), "{line}");
}

#[test]
fn raw_format_encodes_the_original_alone() {
    let (s, t) = src();
    let r = normalize(parse_line(V1.as_bytes()).unwrap(), &s, &t, true);
    assert_eq!(r.encode(), V1.as_bytes());
}

#[test]
fn time_falls_back_to_request_received_then_v1beta1_timestamp() {
    let a = r#"{"auditID":"x","stage":"RequestReceived","stageTimestamp":"bogus","requestReceivedTimestamp":"2020-01-01T00:00:00Z"}"#;
    assert_eq!(
        parse_line(a.as_bytes()).unwrap().time,
        Timestamp::parse_rfc3339("2020-01-01T00:00:00Z")
    );
    let b = r#"{"apiVersion":"audit.k8s.io/v1beta1","auditID":"x","stage":"ResponseComplete","timestamp":"2018-10-26T13:42:46Z"}"#;
    let item = parse_line(b.as_bytes()).unwrap();
    assert_eq!(item.time, Timestamp::parse_rfc3339("2018-10-26T13:42:46Z"));
    assert_eq!(item.fields["api_version"], "audit.k8s.io/v1beta1");
    let c = r#"{"auditID":"x","stage":"Panic"}"#;
    let item = parse_line(c.as_bytes()).unwrap();
    assert_eq!(item.time, None);
    let before = Timestamp::now();
    let (s, t) = src();
    assert!(normalize(item, &s, &t, false).time >= before);
}

#[test]
fn an_event_list_is_split_into_items_that_inherit_its_api_version() {
    let body = format!(
        r#" {{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}, {} ,{}]}} "#,
        event("a", "RequestReceived"),
        event("a", "ResponseComplete"),
        event("b", "ResponseStarted")
    );
    let items = parse_body(body.as_bytes()).unwrap();
    let ids: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i.as_ref().unwrap().audit_id(),
                i.as_ref().unwrap().stage()
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "a/RequestReceived",
            "a/ResponseComplete",
            "b/ResponseStarted"
        ]
    );
    for i in &items {
        assert_eq!(i.as_ref().unwrap().fields["api_version"], "audit.k8s.io/v1");
    }
    assert_eq!(
        items[1].as_ref().unwrap().raw.get(),
        event("a", "ResponseComplete")
    );
}

#[test]
fn arrays_single_events_and_lists_without_kind() {
    let arr = format!(
        "[{},{}]",
        event("a", "RequestReceived"),
        event("b", "RequestReceived")
    );
    assert_eq!(parse_body(arr.as_bytes()).unwrap().len(), 2);
    let single = parse_body(event("c", "ResponseComplete").as_bytes()).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].as_ref().unwrap().audit_id(), "c");
    let no_kind = format!(r#"{{"items":[{}]}}"#, event("d", "RequestReceived"));
    assert_eq!(
        parse_body(no_kind.as_bytes()).unwrap()[0]
            .as_ref()
            .unwrap()
            .audit_id(),
        "d"
    );
    for empty in [
        r#"{"kind":"EventList","items":null}"#,
        r#"{"kind":"EventList"}"#,
        "[]",
        r#"{"items":[]}"#,
    ] {
        assert!(parse_body(empty.as_bytes()).unwrap().is_empty(), "{empty}");
    }
}

#[test]
fn bad_items_become_item_errors_and_good_ones_are_kept() {
    let body = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{},{{"kind":0}},{{"stage":"x"}},{{"auditID":"q"}},{{"auditID":5,"stage":"x"}},{{"kind":"Pod","auditID":"q","stage":"s"}},{{"apiVersion":"v1","auditID":"q","stage":"s"}},"str",[1],{{"auditID":"q","stage":"s","user":{{"groups":"notalist"}}}},{}]}}"#,
        event("good1", "RequestReceived"),
        event("good2", "RequestReceived")
    );
    let items = parse_body(body.as_bytes()).unwrap();
    assert_eq!(items.len(), 11);
    assert!(items[0].is_ok() && items[10].is_ok());
    let errs: Vec<&ItemError> = items[1..10]
        .iter()
        .map(|i| i.as_ref().unwrap_err())
        .collect();
    assert_eq!(errs[0].raw.get(), r#"{"kind":0}"#);
    assert!(
        errs[0].reason.contains("invalid type"),
        "{}",
        errs[0].reason
    );
    assert_eq!(errs[1].reason, "no auditID");
    assert_eq!(errs[2].reason, "no stage");
    assert!(errs[3].reason.contains("invalid type"));
    assert!(errs[4].reason.contains("'Pod'"));
    assert!(errs[5].reason.contains("apiVersion 'v1'"));
    assert_eq!(errs[6].raw.get(), r#""str""#);
    assert_eq!(errs[7].raw.get(), "[1]");
    assert!(errs[8].reason.contains("invalid type"));
}

#[test]
fn error_records_keep_the_item_and_the_reason() {
    let (s, t) = src();
    let err = parse_line(br#"{"kind": 0}"#).unwrap_err();
    let AuditParseError::NotAnEvent(item) = err else {
        panic!("{err}")
    };
    let r = error_record(item.clone(), &s, &t);
    assert_eq!(r.kind, RecordKind::Error);
    assert_eq!(r.fields["source_kind"], "audit");
    assert_eq!(r.fields["error"], Value::String(item.reason.clone()));
    assert!(r.id.starts_with("error/"));
    let again = error_record(item, &s, &t);
    assert_eq!(r.id, again.id, "same bytes, same id");
    let v: Value = serde_json::from_slice(&r.encode()).unwrap();
    assert_eq!(v["object"], json!({"kind": 0}));
    let bad = invalid_input_record(b"{\"trunc", "not valid JSON", &s, &t);
    let v: Value = serde_json::from_slice(&bad.encode()).unwrap();
    assert_eq!(v["object"], "{\"trunc");
    assert_eq!(v["kind"], "error");
}

#[test]
fn a_body_that_is_not_json_is_an_error() {
    for body in [
        &b""[..],
        b"   ",
        b"{",
        b"not json",
        b"{\"items\":[1,]}",
        b"[] []",
        b"\xff\xfe",
        b"{\"kind\":\"EventList\",\"items\":[\"\xff\"]}",
    ] {
        assert!(
            matches!(parse_body(body), Err(BodyParseError::Json(_))),
            "{body:?}"
        );
    }
    assert!(matches!(
        parse_line(b"{\"auditID\":"),
        Err(AuditParseError::Json(_))
    ));
}

#[test]
fn a_body_holds_at_most_max_body_items() {
    let list = |n: usize| vec!["{}"; n].join(",");
    for n in [MAX_BODY_ITEMS, MAX_BODY_ITEMS + 1] {
        for body in [
            format!("[{}]", list(n)),
            format!(r#"{{"kind":"EventList","items":[{}]}}"#, list(n)),
        ] {
            let careful = parse::parse_body_split(body.as_bytes());
            match parse_body(body.as_bytes()) {
                Ok(items) => {
                    assert_eq!(n, MAX_BODY_ITEMS);
                    assert_eq!(items.len(), n);
                    assert!(parse::parse_body_one_pass(&body).is_some());
                    assert_eq!(careful.map(|v| v.len()).ok(), Some(n));
                }
                Err(e) => {
                    assert_eq!(n, MAX_BODY_ITEMS + 1, "{e}");
                    assert!(
                        matches!(e, BodyParseError::TooManyItems { max } if max == MAX_BODY_ITEMS)
                    );
                    assert!(parse::parse_body_one_pass(&body).is_none());
                    assert!(matches!(careful, Err(BodyParseError::TooManyItems { .. })));
                }
            }
        }
    }
    // Past the cap the rest must still be JSON: a broken body stays a 400.
    let broken = format!("[{},]", list(MAX_BODY_ITEMS + 1));
    assert!(matches!(
        parse_body(broken.as_bytes()),
        Err(BodyParseError::Json(_))
    ));
}

#[test]
fn deep_nesting_neither_overflows_the_stack_nor_hides_the_good_items() {
    // serde_json skips unneeded values iteratively, so depth is not limited by the stack.
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let items = parse_body(deep.as_bytes()).unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
    let nested = format!(
        r#"{{"auditID":"d","stage":"s","requestObject":{}1{}}}"#,
        "{\"a\":[".repeat(50_000),
        "]}".repeat(50_000)
    );
    let body = format!("[{nested},{}]", event("ok", "RequestReceived"));
    let items = parse_body(body.as_bytes()).unwrap();
    assert_eq!(items[0].as_ref().unwrap().audit_id(), "d");
    assert_eq!(items[1].as_ref().unwrap().audit_id(), "ok");
    assert!(parse_line(nested.as_bytes()).is_ok());
}

#[test]
fn duplicate_envelope_keys_take_the_last() {
    let body = format!(
        r#"{{"items":"x","items":[{}]}}"#,
        event("z", "RequestReceived")
    );
    assert_eq!(
        parse_body(body.as_bytes()).unwrap()[0]
            .as_ref()
            .unwrap()
            .audit_id(),
        "z"
    );
}

#[test]
fn usual_bodies_are_read_in_one_pass() {
    let items = [
        V1.to_string(),
        event("o-1", "ResponseComplete"),
        "17".to_string(),
    ]
    .join(",");
    for body in [
        format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{items}]}}"#
        ),
        format!(r#" {{ "items" : [ {items} ] , "apiVersion" : "audit.k8s.io/v1" }} "#),
        format!("[{items}]\n"),
    ] {
        let fast = parse::parse_body_one_pass(&body).expect("read in one pass");
        assert_eq!(fast.len(), 3);
        assert_eq!(fast[1].as_ref().unwrap().audit_id(), "o-1");
        assert_eq!(fast[2].as_ref().unwrap_err().raw.get(), "17");
        assert_eq!(
            format!("{fast:?}"),
            format!("{:?}", parse::parse_body_split(body.as_bytes()).unwrap())
        );
    }
    // A single Event, escaped envelope keys: the careful way.
    assert!(parse::parse_body_one_pass(V1).is_none());
    assert!(parse::parse_body_one_pass(r#"{"it\u0065ms":[]}"#).is_none());
}

/// The pieces webhook bodies are made of in the property test below: events of every
/// version, items that are not events, and JSON that is odd but valid.
fn body_item(n: usize) -> String {
    match n % 12 {
        0 => V1.to_string(),
        1 => event(&format!("e-{n}"), "RequestReceived"),
        2 => r#"{"kind":"Other","auditID":"x","stage":"s"}"#.to_string(),
        3 => "1".to_string(),
        4 => r#""a string""#.to_string(),
        5 => "null".to_string(),
        6 => r#"[1, {"auditID":"in-array"}]"#.to_string(),
        7 => r#"{"audit\u0049D":"esc","stage":"s","user":{"username":"\u00e9"}}"#.to_string(),
        8 => r#"{"auditID":"dup","auditID":"dup2","stage":"s"}"#.to_string(),
        9 => r#"{"apiVersion":"audit.k8s.io/v1beta1","auditID":"b1","stage":"ResponseComplete","timestamp":"2026-11-27T00:00:02Z"}"#.to_string(),
        10 => r#"{"auditID":"","stage":"s"}"#.to_string(),
        _ => r#"{ "auditID" : "spaced" , "stage" : "ResponseStarted" , "sourceIPs" : [ ] }"#.to_string(),
    }
}

proptest! {
    /// The one-pass reading of webhook bodies must say exactly what the careful two-pass one
    /// says, for every body it takes (it may decline any; it must not differ on one).
    #[test]
    fn one_pass_bodies_read_like_the_careful_way(
        items in proptest::collection::vec(0usize..12, 0..6),
        shape in 0usize..6,
        order in 0usize..6,
        ws in proptest::collection::vec("[ \t\r\n]{0,2}", 8),
        api in 0usize..4,
        api_again in 0usize..4,
        mutate in proptest::option::of((0usize..4000, 0usize..3, proptest::collection::vec(any::<u8>(), 0..3))),
    ) {
        let list = format!("[{}{}]", ws[0], items.iter().map(|&n| body_item(n)).collect::<Vec<_>>().join(&format!("{},{}", ws[1], ws[2])));
        let api = ["", r#""apiVersion":"audit.k8s.io/v1""#, r#""apiVersion":"v1""#, r#""apiVersion":"audit.k8s.io/v1beta1""#][api];
        let kind = [r#""kind":"EventList""#, "", r#""kind":"Event""#, r#""kind":1"#, r#""kind":"EventList""#, r#""kind":"EventList""#][shape];
        let mut members: Vec<String> = [kind.to_string(), api.to_string(), r#""metadata":{"resourceVersion":"1"}"#.to_string(), format!(r#""items"{}:{}{list}"#, ws[3], ws[4])]
            .into_iter().filter(|m| !m.is_empty()).collect();
        let n = members.len();
        members.rotate_left(order % n);
        if shape == 5 {
            members.push(r#""items":"x""#.to_string());
            members.rotate_right(1);
        }
        // A second apiVersion at the end (the last one wins), possibly after items read with
        // the first one.
        let again = ["", r#""apiVersion":"audit.k8s.io/v1""#, r#""apiVersion":"v1""#, r#""apiVersion":"audit.k8s.io/v1beta1""#][api_again];
        if !again.is_empty() {
            members.push(again.to_string());
        }
        let body = if shape == 4 {
            list
        } else {
            format!("{}{{{}}}{}", ws[5], members.join(&format!("{},{}", ws[6], ws[6])), ws[7])
        };
        let mut body = body.into_bytes();
        if let Some((at, len, bytes)) = mutate {
            let at = at.min(body.len());
            let end = (at + len).min(body.len());
            body.splice(at..end, bytes);
        }
        // Reading a body given away (originals are views into it) says the same.
        prop_assert_eq!(
            format!("{:?}", parse_body_owned(body.clone())),
            format!("{:?}", parse_body(&body))
        );
        let Ok(text) = std::str::from_utf8(&body) else { return Ok(()) };
        if let Some(fast) = parse::parse_body_one_pass(text) {
            let careful = parse::parse_body_split(&body);
            prop_assert!(careful.is_ok(), "one pass took a body the careful way refuses: {text}");
            prop_assert_eq!(format!("{fast:?}"), format!("{:?}", careful.unwrap()), "{}", text);
        }
    }

    /// A line is kept as its original without a second scan only when the typed read accepted
    /// every byte of it: whatever is accepted must be exactly one valid JSON value, the same
    /// text a full JSON parser takes (on one line), or else be refused.
    #[test]
    fn accepted_lines_are_exactly_one_valid_json_value(
        at in 0usize..700, len in 0usize..4, bytes in proptest::collection::vec(any::<u8>(), 0..4),
        pad in "[ \t\r\n\x0c]{0,2}",
    ) {
        let mut line = V1.as_bytes().to_vec();
        let at = at.min(line.len());
        let end = (at + len).min(line.len());
        line.splice(at..end, bytes);
        let mut padded = pad.clone().into_bytes();
        padded.extend_from_slice(&line);
        padded.extend_from_slice(pad.as_bytes());
        // Read in place from a batch's text, the same (text around it included).
        if let Ok(text) = String::from_utf8(padded.clone()) {
            let all = kubetrail_core::ByteString::from(format!("x\n{text}\ny"));
            prop_assert_eq!(
                format!("{:?}", parse_line_in(&all, 2..2 + text.len())),
                format!("{:?}", parse_line(&padded))
            );
        }
        if let Ok(item) = parse_line(&padded) {
            let strict: Result<Box<serde_json::value::RawValue>, _> = serde_json::from_slice(&padded);
            let strict = strict.expect("parse_line accepted what serde_json refuses");
            // The original is kept on one line: a line break between tokens (the only place
            // a valid JSON text can hold one) becomes a space, every other byte stays.
            prop_assert_eq!(item.raw.get(), strict.get().replace(['\n', '\r'], " "));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_body(&bytes);
        let _ = parse_body_owned(bytes.clone());
        let _ = parse_line(&bytes);
    }

    #[test]
    fn mutated_events_never_panic_and_valid_parts_survive(
        cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()
    ) {
        let mut b = format!("[{V1},{}]", event("k", "RequestReceived")).into_bytes();
        let n = b.len();
        b[flip % n] = byte;
        let _ = parse_body(&b);
        let _ = parse_body(&b[..cut.min(n)]);
        let _ = parse_line(&b[..cut.min(n)]);
    }

    #[test]
    fn ids_and_stages_round_trip(id in "[a-zA-Z0-9\\-\"\\\\é/]{1,20}", stage in "[A-Za-z]{1,12}") {
        let line = json!({"auditID": id, "stage": stage}).to_string();
        let item = parse_line(line.as_bytes()).unwrap();
        prop_assert_eq!(item.audit_id(), id.as_str());
        prop_assert_eq!(item.stage(), stage.as_str());
        let (s, t) = src();
        prop_assert_eq!(normalize(item, &s, &t, false).id, format!("{id}/{stage}"));
    }
}

/// Audit fields are written as JSON text straight from the parser; once a filter edits them
/// they are a map again. Both must encode to the same bytes (same key order, same escaping).
#[test]
fn encoded_fields_encode_like_the_decoded_map() {
    let (s, t) = src();
    let escaped = V1.replace(
        r#""userAgent":"kubectl/v1.28""#,
        r#""userAgent":"quote\" back\\ tab\t é""#,
    );
    for line in [V1.to_string(), escaped, event("e-1", "ResponseStarted")] {
        let r = normalize(parse_line(line.as_bytes()).unwrap(), &s, &t, false);
        assert!(r.fields.encoded_members().is_some(), "fields start encoded");
        // Every member is found through the writer's index, as the decoded map has it.
        for (k, v) in r.fields.iter() {
            let m = r.fields.get_member(k).and_then(|m| m.read::<Value>());
            assert_eq!(m.as_ref(), Some(v), "{k}");
        }
        assert!(r.fields.get_member("object").is_none());
        let mut edited = r.clone();
        let _ = edited.fields.insert("zz".into(), json!(1));
        let _ = edited.fields.remove("zz");
        assert!(edited.fields.encoded_members().is_none());
        assert_eq!(
            String::from_utf8(r.encode()).unwrap(),
            String::from_utf8(edited.encode()).unwrap()
        );
        let v: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert!(v.is_object());
    }
}
