//! What the page never shows of a Secret, whatever the store holds. Records are redacted on
//! their way in (the audit policy's level for `secrets`, the `redact` filter that strips the
//! bodies of audit events about Secrets); a pipeline without that filter and a policy that
//! logs Secret bodies would still store them, so the raw records the page shows lose, in the
//! same way, the request and response bodies of audit events about Secrets and the `data` /
//! `stringData` of any Secret object inside a record.

use serde_json::Value;

/// What stands in for what is not shown.
pub const HIDDEN: &str = "(not shown: Secret content)";

/// Hides Secret content in a stored record (its normalized fields and its original, or a
/// `format: raw` original alone).
pub fn hide(record: &mut Value) {
    let about_secrets = |v: &Value| {
        v.pointer("/objectRef/resource").and_then(Value::as_str) == Some("secrets")
            || v.pointer("/object_ref/resource").and_then(Value::as_str) == Some("secrets")
    };
    // A `format: raw` audit event, or a record whose normalized fields say Secrets: its
    // own bodies (raw) and its original's (under `object`).
    let record_about_secrets = about_secrets(record);
    if record_about_secrets {
        hide_bodies(record);
    }
    if (record_about_secrets || record.get("object").is_some_and(about_secrets))
        && let Some(o) = record.get_mut("object")
    {
        hide_bodies(o);
    }
    hide_secret_objects(record, 0);
}

fn hide_bodies(audit_event: &mut Value) {
    for key in ["requestObject", "responseObject"] {
        if let Some(v) = audit_event.get_mut(key)
            && !v.is_null()
        {
            *v = Value::String(HIDDEN.into());
        }
    }
}

/// Any object of kind Secret (a body, an item of a list), at any depth.
fn hide_secret_objects(v: &mut Value, depth: usize) {
    // Records are JSON the store accepted; the bound only keeps a pathological one from
    // exhausting the stack.
    if depth > 128 {
        return;
    }
    match v {
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("Secret") {
                for key in ["data", "stringData"] {
                    if let Some(d) = map.get_mut(key)
                        && !d.is_null()
                    {
                        *d = Value::String(HIDDEN.into());
                    }
                }
            }
            for child in map.values_mut() {
                hide_secret_objects(child, depth + 1);
            }
        }
        Value::Array(items) => {
            for child in items {
                hide_secret_objects(child, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audit_bodies_about_secrets_are_hidden_in_records_and_raw_originals() {
        let mut rec = json!({"kind": "k8s_audit", "object_ref": {"resource": "secrets"},
            "object": {"objectRef": {"resource": "secrets", "name": "db-pass"},
                "requestObject": {"kind": "Secret", "stringData": {"password": "hunter2"}},
                "responseObject": {"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}}});
        hide(&mut rec);
        let text = rec.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
            "{text}"
        );
        assert_eq!(
            rec["object"]["objectRef"]["name"], "db-pass",
            "metadata stays"
        );
        let mut raw = json!({"objectRef": {"resource": "secrets"}, "responseObject": {"x": 1},
            "requestObject": null});
        hide(&mut raw);
        assert_eq!(raw["responseObject"], HIDDEN);
        assert_eq!(raw["requestObject"], Value::Null);
    }

    #[test]
    fn secret_objects_anywhere_lose_their_data_only() {
        let mut rec = json!({"kind": "k8s_audit", "object": {"objectRef": {"resource": "pods"},
            "responseObject": {"kind": "List", "items": [
                {"kind": "Secret", "metadata": {"name": "a"}, "data": {"k": "c2VjcmV0"}},
                {"kind": "ConfigMap", "data": {"k": "v"}}]}}});
        hide(&mut rec);
        let items = &rec["object"]["responseObject"]["items"];
        assert_eq!(items[0]["data"], HIDDEN);
        assert_eq!(items[0]["metadata"]["name"], "a");
        assert_eq!(items[1]["data"]["k"], "v", "a ConfigMap is not a Secret");
    }
}
