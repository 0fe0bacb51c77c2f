//! `coordination.k8s.io/v1` Leases for leader election: GET, LIST, POST (409 if it exists),
//! PUT guarded by `metadata.resourceVersion` (422 without it, 409 when stale) and DELETE, with
//! the recorded Status bodies. Lease writes take revisions from the same global counter as
//! Events, as in etcd.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{format_time, new_uid};
use crate::render::to_writer_go;
use crate::status::{Cause, Details, Status};

const GROUP: &str = "coordination.k8s.io";

/// `LeaseSpec`, in Go field order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct LeaseSpec {
    #[serde(
        rename = "holderIdentity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub holder_identity: Option<String>,
    #[serde(
        rename = "leaseDurationSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_duration_seconds: Option<i64>,
    #[serde(
        rename = "acquireTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub acquire_time: Option<String>,
    #[serde(rename = "renewTime", default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    #[serde(
        rename = "leaseTransitions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_transitions: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(
        rename = "preferredHolder",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_holder: Option<String>,
}

#[derive(Clone, Debug)]
struct Lease {
    name: String,
    namespace: String,
    uid: String,
    rv: u64,
    created: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    manager: String,
    updated: String,
    spec: LeaseSpec,
}

#[derive(Deserialize, Default)]
struct MetaIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct LeaseIn {
    #[serde(default)]
    metadata: MetaIn,
    #[serde(default)]
    spec: LeaseSpec,
}

#[derive(Serialize)]
struct ManagedOut<'a> {
    manager: &'a str,
    operation: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    time: &'a str,
    #[serde(rename = "fieldsType")]
    fields_type: &'static str,
    #[serde(rename = "fieldsV1")]
    fields_v1: &'a serde_json::value::RawValue,
}

#[derive(Serialize)]
struct MetaOut<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "creationTimestamp")]
    creation_timestamp: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "managedFields")]
    managed_fields: [ManagedOut<'a>; 1],
}

#[derive(Serialize)]
struct LeaseOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: MetaOut<'a>,
    spec: &'a LeaseSpec,
}

impl Lease {
    fn fields_v1(&self) -> Box<serde_json::value::RawValue> {
        let mut parts = Vec::new();
        if !self.labels.is_empty() {
            let keys: Vec<String> = self
                .labels
                .keys()
                .map(|k| {
                    format!(
                        ",{}:{{}}",
                        serde_json::to_string(&format!("f:{k}")).unwrap_or_default()
                    )
                })
                .collect();
            parts.push(format!(
                "\"f:metadata\":{{\"f:labels\":{{\".\":{{}}{}}}}}",
                keys.concat()
            ));
        }
        let s = &self.spec;
        let mut spec = Vec::new();
        for (set, name) in [
            (s.acquire_time.is_some(), "acquireTime"),
            (s.holder_identity.is_some(), "holderIdentity"),
            (s.lease_duration_seconds.is_some(), "leaseDurationSeconds"),
            (s.lease_transitions.is_some(), "leaseTransitions"),
            (s.preferred_holder.is_some(), "preferredHolder"),
            (s.renew_time.is_some(), "renewTime"),
            (s.strategy.is_some(), "strategy"),
        ] {
            if set {
                spec.push(format!("\"f:{name}\":{{}}"));
            }
        }
        if !spec.is_empty() {
            parts.push(format!("\"f:spec\":{{{}}}", spec.join(",")));
        }
        let text = format!("{{{}}}", parts.join(","));
        // Built from fixed fragments and JSON-escaped keys: valid JSON.
        serde_json::value::RawValue::from_string(text)
            .unwrap_or_else(|_| unreachable!("fieldsV1 is valid JSON"))
    }

    fn render(&self, typed: bool, out: &mut Vec<u8>) {
        let fields = self.fields_v1();
        let doc = LeaseOut {
            kind: typed.then_some("Lease"),
            api_version: typed.then_some("coordination.k8s.io/v1"),
            metadata: MetaOut {
                name: &self.name,
                namespace: &self.namespace,
                uid: &self.uid,
                resource_version: self.rv.to_string(),
                creation_timestamp: &self.created,
                labels: &self.labels,
                annotations: &self.annotations,
                managed_fields: [ManagedOut {
                    manager: &self.manager,
                    operation: "Update",
                    api_version: "coordination.k8s.io/v1",
                    time: &self.updated,
                    fields_type: "FieldsV1",
                    fields_v1: &fields,
                }],
            },
            spec: &self.spec,
        };
        // Only string map keys: cannot fail.
        let _ = to_writer_go(out, &doc);
    }
}

fn details(name: &str) -> Details {
    Details {
        name: name.to_string(),
        group: GROUP.to_string(),
        kind: "leases".to_string(),
        ..Details::default()
    }
}

fn not_found(name: &str) -> Status {
    Status::failure(
        404,
        "NotFound",
        format!("leases.{GROUP} {name:?} not found"),
    )
    .with_details(details(name))
}

/// A handled lease request: HTTP status and JSON body.
pub(crate) type Answer = Result<(u16, Vec<u8>), Status>;

/// All leases, keyed by (namespace, name).
#[derive(Default)]
pub(crate) struct Leases {
    map: Mutex<BTreeMap<(String, String), Lease>>,
}

fn parse_body(body: &[u8]) -> Result<LeaseIn, Status> {
    serde_json::from_slice(body).map_err(|e| {
        let head: String = String::from_utf8_lossy(&body[..body.len().min(30)]).into_owned();
        Status::bad_request(format!(
            "the object provided is unrecognized (must be of type Lease): couldn't get version/kind; json parse error: {e} ({head} ...)"
        ))
    })
}

/// The field manager from a User-Agent (`kubectl/v1.28 (...)` → `kubectl`).
fn manager_from(user_agent: &str) -> String {
    let m = user_agent.split('/').next().unwrap_or("").trim();
    if m.is_empty() {
        "unknown".to_string()
    } else {
        m.to_string()
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Lease>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, ns: &str, name: &str) -> Answer {
        let map = self.lock();
        let l = map
            .get(&(ns.to_string(), name.to_string()))
            .ok_or_else(|| not_found(name))?;
        let mut out = Vec::with_capacity(512);
        l.render(true, &mut out);
        out.push(b'\n');
        Ok((200, out))
    }

    /// The holder of a lease, for tests.
    pub fn holder(&self, ns: &str, name: &str) -> Option<String> {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|l| l.spec.holder_identity.clone())
    }

    /// An edit by hand (what `kubectl annotate` or `kubectl edit` does): `f` changes the
    /// stored Lease, which gets a new resourceVersion. False when it does not exist.
    pub fn edit(
        &self,
        ns: &str,
        name: &str,
        manager: &str,
        next_rv: impl FnOnce() -> u64,
        f: impl FnOnce(&mut BTreeMap<String, String>, &mut LeaseSpec),
    ) -> bool {
        let mut map = self.lock();
        let Some(lease) = map.get_mut(&(ns.to_string(), name.to_string())) else {
            return false;
        };
        f(&mut lease.annotations, &mut lease.spec);
        lease.manager = manager.to_string();
        lease.updated = format_time(OffsetDateTime::now_utc()).to_string();
        lease.rv = next_rv();
        true
    }

    /// The stored Lease as a GET answers it.
    pub fn get_json(&self, ns: &str, name: &str) -> Option<serde_json::Value> {
        let (_, body) = self.get(ns, name).ok()?;
        serde_json::from_slice(&body).ok()
    }

    pub fn list(&self, ns: Option<&str>, current_rv: u64) -> Answer {
        let map = self.lock();
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"kind\":\"LeaseList\",\"apiVersion\":\"coordination.k8s.io/v1\",\"metadata\":{\"resourceVersion\":\"");
        out.extend_from_slice(current_rv.to_string().as_bytes());
        out.extend_from_slice(b"\"},\"items\":[");
        let mut first = true;
        for l in map.values().filter(|l| ns.is_none_or(|n| l.namespace == n)) {
            if !first {
                out.push(b',');
            }
            first = false;
            l.render(false, &mut out);
        }
        out.extend_from_slice(b"]}\n");
        Ok((200, out))
    }

    pub fn create(
        &self,
        ns: &str,
        body: &[u8],
        user_agent: &str,
        next_rv: impl FnOnce() -> u64,
    ) -> Answer {
        let req = parse_body(body)?;
        if !req.metadata.namespace.is_empty() && req.metadata.namespace != ns {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = req.metadata.name;
        if name.is_empty() {
            return Err(Status::failure(
                422,
                "Invalid",
                "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required",
            )
            .with_details(Details {
                group: GROUP.into(),
                kind: "Lease".into(),
                causes: vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
                ..Details::default()
            }));
        }
        let mut map = self.lock();
        let key = (ns.to_string(), name.clone());
        if map.contains_key(&key) {
            return Err(Status::failure(
                409,
                "AlreadyExists",
                format!("leases.{GROUP} {name:?} already exists"),
            )
            .with_details(details(&name)));
        }
        let now = format_time(OffsetDateTime::now_utc()).to_string();
        let lease = Lease {
            name,
            namespace: ns.to_string(),
            uid: new_uid(),
            rv: next_rv(),
            created: now.clone(),
            labels: req.metadata.labels,
            annotations: req.metadata.annotations,
            manager: manager_from(user_agent),
            updated: now,
            spec: req.spec,
        };
        let mut out = Vec::with_capacity(512);
        lease.render(true, &mut out);
        out.push(b'\n');
        map.insert(key, lease);
        Ok((201, out))
    }

    pub fn update(
        &self,
        ns: &str,
        name: &str,
        body: &[u8],
        user_agent: &str,
        next_rv: impl FnOnce() -> u64,
    ) -> Answer {
        let req = parse_body(body)?;
        if !req.metadata.name.is_empty() && req.metadata.name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                req.metadata.name
            )));
        }
        if !req.metadata.namespace.is_empty() && req.metadata.namespace != ns {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut map = self.lock();
        let lease = map
            .get_mut(&(ns.to_string(), name.to_string()))
            .ok_or_else(|| not_found(name))?;
        if req.metadata.resource_version.is_empty() {
            let mut d = details(name);
            d.causes = vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: 0x0: must be specified for an update".into(),
                field: "metadata.resourceVersion".into(),
            }];
            return Err(Status::failure(
                422,
                "Invalid",
                format!("leases.{GROUP} {name:?} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"),
            )
            .with_details(d));
        }
        if req.metadata.resource_version != lease.rv.to_string() {
            return Err(Status::failure(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on leases.{GROUP} {name:?}: the object has been modified; please apply your changes to the latest version and try again"),
            )
            .with_details(details(name)));
        }
        lease.spec = req.spec;
        lease.labels = req.metadata.labels;
        lease.annotations = req.metadata.annotations;
        lease.manager = manager_from(user_agent);
        lease.updated = format_time(OffsetDateTime::now_utc()).to_string();
        lease.rv = next_rv();
        let mut out = Vec::with_capacity(512);
        lease.render(true, &mut out);
        out.push(b'\n');
        Ok((200, out))
    }

    pub fn delete(&self, ns: &str, name: &str, next_rv: impl FnOnce() -> u64) -> Answer {
        let mut map = self.lock();
        let lease = map
            .remove(&(ns.to_string(), name.to_string()))
            .ok_or_else(|| not_found(name))?;
        let _ = next_rv();
        #[derive(Serialize)]
        struct Success {
            kind: &'static str,
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            metadata: BTreeMap<String, String>,
            status: &'static str,
            details: Details,
        }
        let mut d = details(name);
        d.uid = lease.uid;
        let mut out = Vec::new();
        let _ = to_writer_go(
            &mut out,
            &Success {
                kind: "Status",
                api_version: "v1",
                metadata: BTreeMap::new(),
                status: "Success",
                details: d,
            },
        );
        out.push(b'\n');
        Ok((200, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"fx-collector-leader","namespace":"fx"},"spec":{"holderIdentity":"collector-0_6f1c2b","leaseDurationSeconds":15,"acquireTime":"2026-11-27T00:31:51.810715Z","renewTime":"2026-11-27T00:31:51.810715Z","leaseTransitions":0}}"#;

    #[test]
    fn create_update_conflict_delete() {
        let l = Leases::default();
        let (code, body) = l
            .create("fx", CREATE.as_bytes(), "fixture-recorder/1.0", || 352)
            .unwrap();
        assert_eq!(code, 201);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "352");
        assert_eq!(
            v["metadata"]["managedFields"][0]["manager"],
            "fixture-recorder"
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(r#""fieldsV1":{"f:spec":{"f:acquireTime":{},"f:holderIdentity":{},"f:leaseDurationSeconds":{},"f:leaseTransitions":{},"f:renewTime":{}}}}]},"spec":{"holderIdentity":"collector-0_6f1c2b","leaseDurationSeconds":15,"acquireTime":"2026-11-27T00:31:51.810715Z","renewTime":"2026-11-27T00:31:51.810715Z","leaseTransitions":0}}"#), "{text}");
        let e = l.create("fx", CREATE.as_bytes(), "x", || 0).unwrap_err();
        assert_eq!(e.code, 409);
        let upd = |rv: &str, holder: &str| {
            format!(
                r#"{{"metadata":{{"name":"fx-collector-leader","namespace":"fx"{rv}}},"spec":{{"holderIdentity":"{holder}"}}}}"#
            )
        };
        let e = l
            .update(
                "fx",
                "fx-collector-leader",
                upd("", "a").as_bytes(),
                "x",
                || 0,
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        let e = l
            .update(
                "fx",
                "fx-collector-leader",
                upd(r#","resourceVersion":"1""#, "a").as_bytes(),
                "x",
                || 0,
            )
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(e.reason, "Conflict");
        let (code, _) = l
            .update(
                "fx",
                "fx-collector-leader",
                upd(r#","resourceVersion":"352""#, "b").as_bytes(),
                "x",
                || 353,
            )
            .unwrap();
        assert_eq!(code, 200);
        assert_eq!(l.holder("fx", "fx-collector-leader").as_deref(), Some("b"));
        assert_eq!(l.get("fx", "nope").unwrap_err().code, 404);
        assert_eq!(
            l.delete("fx", "fx-collector-leader", || 354).unwrap().0,
            200
        );
        assert!(l.holder("fx", "fx-collector-leader").is_none());
        assert_eq!(l.create("fx", b"{broken", "x", || 1).unwrap_err().code, 400);
    }

    #[test]
    fn an_edit_by_hand_makes_the_holders_next_update_conflict() {
        let l = Leases::default();
        l.create("fx", CREATE.as_bytes(), "x", || 352).unwrap();
        assert!(l.edit(
            "fx",
            "fx-collector-leader",
            "kubectl-annotate",
            || 353,
            |a, _| {
                a.insert("team".into(), "sre".into());
            }
        ));
        let v = l.get_json("fx", "fx-collector-leader").unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "353");
        assert_eq!(v["metadata"]["annotations"]["team"], "sre");
        assert_eq!(
            v["metadata"]["managedFields"][0]["manager"],
            "kubectl-annotate"
        );
        let stale = r#"{"metadata":{"name":"fx-collector-leader","resourceVersion":"352"},"spec":{"holderIdentity":"collector-0_6f1c2b"}}"#;
        let e = l
            .update("fx", "fx-collector-leader", stale.as_bytes(), "x", || 354)
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert!(!l.edit("fx", "nope", "x", || 0, |_, _| {}));
    }
}
