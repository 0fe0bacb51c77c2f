//! What the activity database indexes about a record, read from the record as kubetrail
//! encodes it (the normalized fields plus the original object under `object`, or the
//! original alone for `format: raw`).
//!
//! Only the fields named here are parsed (typed serde; request and response bodies are
//! skipped except for their `kind` and `metadata`). Strings of an unexpected type (a filter
//! put a number where a name was) read as absent; a record whose shape is wrong in a way the
//! typed read cannot take is still stored, with its id, time and kind only.
//!
//! The object a record is about is keyed by resource (`pods`), so that audit events (which
//! name resources) and Events (which name kinds) meet; see [`crate::kinds`].

use std::borrow::Cow;
use std::fmt;

use kubetrail_core::Timestamp;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::kinds;

/// The indexed facts of one record. Every field is optional: records come from many
/// sources and filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// The record's time (an audit event's `stageTimestamp`, an Event's last occurrence),
    /// nanoseconds since the Unix epoch.
    pub time: Option<i64>,
    /// `k8s_audit`, `k8s_event`, `gap`, `error`.
    pub kind: Option<String>,
    /// The API group of the object (`""` for the core group).
    pub api_group: Option<String>,
    /// The object's plural resource (`pods`).
    pub resource: Option<String>,
    /// The object's kind (`Pod`), when the record or the built-in table says it.
    pub object_kind: Option<String>,
    /// The subresource an audit event is about (`eviction`, `binding`, `status`, `scale`).
    pub subresource: Option<String>,
    /// The object's namespace (none for cluster-scoped objects).
    pub namespace: Option<String>,
    /// The object's name (for a create with `generateName`: the name the server gave it).
    pub name: Option<String>,
    /// The object's uid, when the record shows it.
    pub uid: Option<String>,
    /// The object's controlling owner (or its first owner), from `metadata.ownerReferences`.
    pub owner: Option<Owner>,
    /// Another object an Event's message names (`Created pod: web-1` on a ReplicaSet):
    /// `(resource, name)`, in the Event's namespace.
    pub mention: Option<(String, String)>,
    /// The audit verb.
    pub verb: Option<String>,
    /// The audit stage.
    pub stage: Option<String>,
    /// The authenticated user.
    pub username: Option<String>,
    /// The impersonated user, if any.
    pub impersonated: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The first source IP.
    pub source_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The audit response code.
    pub response_code: Option<i64>,
    /// The Event's reason.
    pub reason: Option<String>,
    /// The Event's type (`Normal`, `Warning`).
    pub event_type: Option<String>,
    /// The component that reported the Event.
    pub component: Option<String>,
}

/// An owner reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The owner's API group.
    pub group: String,
}

/// A string read leniently: borrowed when it has no escapes; anything but a non-empty
/// string reads as `None`.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text((!v.is_empty()).then_some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text((!v.is_empty()).then(|| Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text((!v.is_empty()).then_some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text<'de>, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text<'de>, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl Text<'_> {
    fn own(&self) -> Option<String> {
        self.0.as_deref().map(str::to_string)
    }
    fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A number read leniently (a number, or a string holding one).
#[derive(Default)]
struct Num(Option<i64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Num(match v {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

/// A list of strings read leniently (non-strings are skipped; a non-list reads as empty).
#[derive(Default)]
struct TextList<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for TextList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextList<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<Text<'de>>()? {
                    if let Some(s) = t.0 {
                        out.push(s);
                    }
                }
                Ok(TextList(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextList<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TextList(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextList<'de>, E> {
                Ok(TextList(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserN<'a> {
    #[serde(borrow)]
    username: Text<'a>,
    #[serde(borrow)]
    groups: TextList<'a>,
}

/// `object_ref` (normalized) or `objectRef` (original): the same keys but for the group's.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ObjectRefN<'a> {
    #[serde(borrow)]
    resource: Text<'a>,
    #[serde(borrow)]
    subresource: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow, alias = "apiGroup")]
    api_group: Text<'a>,
}

/// `involved_object` (normalized), `involvedObject` / `regarding` (original).
#[derive(Deserialize, Default)]
#[serde(default)]
struct InvolvedN<'a> {
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow, alias = "apiVersion")]
    api_version: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OwnerRefN<'a> {
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow, rename = "apiVersion")]
    api_version: Text<'a>,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MetaN<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    namespace: Text<'a>,
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow, rename = "ownerReferences")]
    owner_references: Vec<OwnerRefN<'a>>,
}

/// A request or response body: its kind and metadata (the rest is skipped).
#[derive(Deserialize, Default)]
#[serde(default)]
struct BodyN<'a> {
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    metadata: Option<MetaN<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusN {
    code: Num,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SourceN<'a> {
    #[serde(borrow)]
    component: Text<'a>,
}

/// The original object: an audit event or a Kubernetes Event, as the cluster wrote it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct OriginalN<'a> {
    #[serde(borrow)]
    api_version: Text<'a>,
    // Audit event.
    #[serde(borrow, rename = "auditID")]
    audit_id: Text<'a>,
    #[serde(borrow)]
    stage: Text<'a>,
    #[serde(borrow)]
    verb: Text<'a>,
    #[serde(borrow)]
    user: Option<UserN<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserN<'a>>,
    #[serde(borrow, rename = "sourceIPs")]
    source_ips: TextList<'a>,
    #[serde(borrow)]
    user_agent: Text<'a>,
    #[serde(borrow)]
    object_ref: Option<ObjectRefN<'a>>,
    response_status: Option<StatusN>,
    #[serde(borrow)]
    request_object: Option<BodyN<'a>>,
    #[serde(borrow)]
    response_object: Option<BodyN<'a>>,
    #[serde(borrow)]
    stage_timestamp: Text<'a>,
    // Kubernetes Event (core/v1 or events.k8s.io/v1).
    #[serde(borrow)]
    metadata: Option<MetaN<'a>>,
    #[serde(borrow)]
    involved_object: Option<InvolvedN<'a>>,
    #[serde(borrow)]
    regarding: Option<InvolvedN<'a>>,
    #[serde(borrow)]
    reason: Text<'a>,
    #[serde(borrow, rename = "type")]
    type_: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    note: Text<'a>,
    #[serde(borrow)]
    source: Option<SourceN<'a>>,
    #[serde(borrow)]
    reporting_component: Text<'a>,
    #[serde(borrow)]
    reporting_controller: Text<'a>,
    #[serde(borrow)]
    last_timestamp: Text<'a>,
    #[serde(borrow)]
    event_time: Text<'a>,
}

/// The record as kubetrail encodes it (normalized fields; the original under `object`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RecordN<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    time: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    source: Text<'a>,
    // Audit.
    #[serde(borrow)]
    stage: Text<'a>,
    #[serde(borrow)]
    verb: Text<'a>,
    #[serde(borrow)]
    user: Option<UserN<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserN<'a>>,
    #[serde(borrow)]
    source_ips: TextList<'a>,
    #[serde(borrow)]
    user_agent: Text<'a>,
    #[serde(borrow)]
    object_ref: Option<ObjectRefN<'a>>,
    response_code: Num,
    // Event.
    #[serde(borrow)]
    reason: Text<'a>,
    #[serde(borrow, rename = "type")]
    type_: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    involved_object: Option<InvolvedN<'a>>,
    #[serde(borrow)]
    reporting_controller: Text<'a>,
    #[serde(borrow)]
    object: Option<OriginalN<'a>>,
}

/// Bodies whose metadata is not the object's own.
const NOT_THE_OBJECT: &[&str] = &[
    "Status",
    "DeleteOptions",
    "Eviction",
    "Binding",
    "Scale",
    "TokenRequest",
];

impl Activity {
    /// Reads what is indexed from an encoded record. Never fails: a record it cannot read
    /// keeps only what could be read.
    pub fn from_record(data: &[u8]) -> Activity {
        match serde_json::from_slice::<RecordN>(data) {
            Ok(r) if r.id.0.is_some() || r.source.0.is_some() => Activity::from_parsed(r),
            // `format: raw`: the record is the original alone.
            Ok(_) => match serde_json::from_slice::<OriginalN>(data) {
                Ok(o) => Activity::from_raw(o),
                Err(_) => Activity::fallback(data),
            },
            Err(_) => Activity::fallback(data),
        }
    }

    /// The envelope keys alone, from a record the typed read refused.
    fn fallback(data: &[u8]) -> Activity {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(data)
        else {
            return Activity::default();
        };
        let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Activity {
            time: s("time").and_then(|t| parse_time(&t)),
            kind: s("kind"),
            ..Activity::default()
        }
    }

    fn from_raw(o: OriginalN) -> Activity {
        {
            let audit = o.audit_id.0.is_some()
                || o.api_version
                    .get()
                    .is_some_and(|v| v.starts_with("audit.k8s.io/"));
            let kind = if audit {
                "k8s_audit"
            } else if o.involved_object.is_some() || o.regarding.is_some() {
                "k8s_event"
            } else {
                "raw"
            };
            let mut a = Activity {
                kind: Some(kind.to_string()),
                ..Activity::default()
            };
            match kind {
                "k8s_audit" => {
                    a.time = o.stage_timestamp.get().and_then(parse_time);
                    a.fill_audit(AuditView::from_original(&o), &o);
                }
                "k8s_event" => {
                    a.time = o
                        .last_timestamp
                        .get()
                        .or(o.event_time.get())
                        .and_then(parse_time);
                    a.fill_event(EventView::from_original(&o));
                }
                _ => {}
            }
            a
        }
    }

    fn from_parsed(r: RecordN) -> Activity {
        let (orig, kind) = (r.object.unwrap_or_default(), r.kind.own());
        let mut a = Activity {
            time: r.time.get().and_then(parse_time),
            kind,
            ..Activity::default()
        };
        match a.kind.as_deref() {
            Some("k8s_audit") => {
                let mut view = AuditView::from_original(&orig);
                // The normalized fields win: they are what filters see and change.
                if r.user.is_some() {
                    view.user = r.user.as_ref();
                }
                if r.impersonated_user.is_some() {
                    view.impersonated = r.impersonated_user.as_ref();
                }
                if r.object_ref.is_some() {
                    view.object_ref = r.object_ref.as_ref();
                }
                view.verb = r.verb.get().or(view.verb);
                view.stage = r.stage.get().or(view.stage);
                view.user_agent = r.user_agent.get().or(view.user_agent);
                if !r.source_ips.0.is_empty() {
                    view.source_ips = &r.source_ips.0;
                }
                view.code = r.response_code.0.or(view.code);
                a.fill_audit(view, &orig);
            }
            Some("k8s_event") => {
                let mut view = EventView::from_original(&orig);
                if r.involved_object.is_some() {
                    view.involved = r.involved_object.as_ref();
                }
                view.reason = r.reason.get().or(view.reason);
                view.type_ = r.type_.get().or(view.type_);
                view.message = r.message.get().or(view.message);
                view.component = r.reporting_controller.get().or(view.component);
                a.fill_event(view);
            }
            _ => {}
        }
        a
    }

    fn fill_audit(&mut self, v: AuditView<'_, '_>, orig: &OriginalN<'_>) {
        self.verb = v.verb.map(str::to_string);
        self.stage = v.stage.map(str::to_string);
        if let Some(u) = v.user {
            self.username = u.username.own();
            self.groups = u.groups.0.iter().map(|g| g.to_string()).collect();
        }
        self.impersonated = v.impersonated.and_then(|u| u.username.own());
        self.source_ip = v.source_ips.first().map(|s| s.to_string());
        self.user_agent = v.user_agent.map(str::to_string);
        self.response_code = v.code;
        if let Some(o) = v.object_ref {
            let group = o.api_group.get().unwrap_or("").to_string();
            self.resource = o.resource.own();
            self.subresource = o.subresource.own();
            self.namespace = o.namespace.own();
            self.name = o.name.own();
            self.uid = o.uid.own();
            if let Some(res) = self.resource.as_deref() {
                self.object_kind = kinds::kind_of_resource(&group, res).map(str::to_string);
            }
            self.api_group = Some(group);
        }
        // The object's own body (a create's response names what `generateName` made).
        let own = |b: &&BodyN<'_>| b.kind.get().is_none_or(|k| !NOT_THE_OBJECT.contains(&k));
        let body = orig
            .response_object
            .as_ref()
            .filter(own)
            .or(orig.request_object.as_ref().filter(own));
        let subresource_body = self.subresource.is_some();
        if let Some(b) = body {
            if !subresource_body && self.object_kind.is_none() {
                self.object_kind = b.kind.own();
            }
            if let Some(m) = &b.metadata {
                if self.name.is_none() {
                    self.name = m.name.own();
                }
                if self.namespace.is_none() && self.resource.is_some() {
                    self.namespace = m.namespace.own();
                }
                // A subresource's body (a Pod's status, a Scale) is still the object's.
                if self.uid.is_none() && m.name.get() == self.name.as_deref() {
                    self.uid = m.uid.own();
                }
                self.owner = owner_of(&m.owner_references);
            }
        }
    }

    fn fill_event(&mut self, v: EventView<'_, '_>) {
        self.reason = v.reason.map(str::to_string);
        self.event_type = v.type_.map(str::to_string);
        self.component = v.component.map(str::to_string);
        if let Some(o) = v.involved {
            let group = o.api_version.get().map(kinds::group_of).unwrap_or("");
            let kind = o.kind.get().unwrap_or("");
            if !kind.is_empty() {
                self.resource = Some(kinds::resource_of_kind(group, kind));
                self.object_kind = Some(kind.to_string());
            }
            self.api_group = Some(group.to_string());
            self.namespace = o.namespace.own();
            self.name = o.name.own();
            self.uid = o.uid.own();
        }
        if let (Some(reason), Some(message)) = (v.reason, v.message) {
            self.mention = mention(reason, message);
        }
    }
}

/// An audit event's fields, from the normalized record or the original.
struct AuditView<'r, 'a> {
    verb: Option<&'r str>,
    stage: Option<&'r str>,
    user: Option<&'r UserN<'a>>,
    impersonated: Option<&'r UserN<'a>>,
    source_ips: &'r [Cow<'a, str>],
    user_agent: Option<&'r str>,
    object_ref: Option<&'r ObjectRefN<'a>>,
    code: Option<i64>,
}

impl<'r, 'a> AuditView<'r, 'a> {
    fn from_original(o: &'r OriginalN<'a>) -> Self {
        AuditView {
            verb: o.verb.get(),
            stage: o.stage.get(),
            user: o.user.as_ref(),
            impersonated: o.impersonated_user.as_ref(),
            source_ips: &o.source_ips.0,
            user_agent: o.user_agent.get(),
            object_ref: o.object_ref.as_ref(),
            code: o.response_status.as_ref().and_then(|s| s.code.0),
        }
    }
}

/// A Kubernetes Event's fields, from the normalized record or the original.
struct EventView<'r, 'a> {
    involved: Option<&'r InvolvedN<'a>>,
    reason: Option<&'r str>,
    type_: Option<&'r str>,
    message: Option<&'r str>,
    component: Option<&'r str>,
}

impl<'r, 'a> EventView<'r, 'a> {
    fn from_original(o: &'r OriginalN<'a>) -> Self {
        EventView {
            involved: o.involved_object.as_ref().or(o.regarding.as_ref()),
            reason: o.reason.get(),
            type_: o.type_.get(),
            message: o.message.get().or(o.note.get()),
            component: o
                .reporting_component
                .get()
                .or(o.reporting_controller.get())
                .or(o.source.as_ref().and_then(|s| s.component.get())),
        }
    }
}

fn owner_of(refs: &[OwnerRefN<'_>]) -> Option<Owner> {
    let r = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())?;
    Some(Owner {
        kind: r.kind.own()?,
        name: r.name.own()?,
        uid: r.uid.own().unwrap_or_default(),
        group: r
            .api_version
            .get()
            .map(kinds::group_of)
            .unwrap_or("")
            .to_string(),
    })
}

/// The object an Event's message names, for the reasons whose messages the controllers
/// write in a fixed form: `(resource, name)`.
pub fn mention(reason: &str, message: &str) -> Option<(String, String)> {
    let m = message
        .strip_prefix("(combined from similar events): ")
        .unwrap_or(message);
    let word = |s: &str| -> Option<String> {
        let w = s.split_whitespace().next()?;
        Some(w.trim_end_matches([',', '.']).to_string()).filter(|w| !w.is_empty())
    };
    match reason {
        "SuccessfulCreate" | "SuccessfulDelete" => {
            let rest = m
                .strip_prefix("Created pod: ")
                .or_else(|| m.strip_prefix("Deleted pod: "))?;
            Some(("pods".into(), word(rest)?))
        }
        "ScalingReplicaSet" => {
            let rest = m
                .strip_prefix("Scaled up replica set ")
                .or_else(|| m.strip_prefix("Scaled down replica set "))?;
            Some(("replicasets".into(), word(rest)?))
        }
        _ => None,
    }
}

/// RFC 3339 to nanoseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    Timestamp::parse_rfc3339(s).map(Timestamp::unix_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_CREATE: &str = r#"{"id":"a1/ResponseComplete","time":"2026-12-06T23:01:06.742Z","kind":"k8s_audit","source":"audit_file.0","tag":"k8s.audit","audit_id":"a1","stage":"ResponseComplete","verb":"create","user":{"groups":["system:serviceaccounts","system:authenticated"],"username":"system:serviceaccount:kube-system:replicaset-controller"},"source_ips":["127.0.0.1"],"user_agent":"kube-controller-manager/v1.28.7","object_ref":{"api_version":"v1","namespace":"shop","resource":"pods"},"response_code":201,
      "object":{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"shop","apiVersion":"v1"},
        "requestObject":{"kind":"Pod","metadata":{"generateName":"web-6b4996b7f9-","namespace":"shop","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-6b4996b7f9","uid":"rs-uid","controller":true}]},"spec":{"containers":[]}},
        "responseObject":{"kind":"Pod","metadata":{"name":"web-6b4996b7f9-vdfpw","namespace":"shop","uid":"pod-uid","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-6b4996b7f9","uid":"rs-uid","controller":true}]},"spec":{"x":[1,2,{"y":null}]}}}}"#;

    #[test]
    fn an_audit_create_names_what_generate_name_made() {
        let a = Activity::from_record(AUDIT_CREATE.as_bytes());
        assert_eq!(a.kind.as_deref(), Some("k8s_audit"));
        assert_eq!(a.resource.as_deref(), Some("pods"));
        assert_eq!(a.object_kind.as_deref(), Some("Pod"));
        assert_eq!(a.api_group.as_deref(), Some(""));
        assert_eq!(a.namespace.as_deref(), Some("shop"));
        assert_eq!(a.name.as_deref(), Some("web-6b4996b7f9-vdfpw"));
        assert_eq!(a.uid.as_deref(), Some("pod-uid"));
        let o = a.owner.unwrap();
        assert_eq!(
            (
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str(),
                o.group.as_str()
            ),
            ("ReplicaSet", "web-6b4996b7f9", "rs-uid", "apps")
        );
        assert_eq!(a.verb.as_deref(), Some("create"));
        assert_eq!(a.response_code, Some(201));
        assert_eq!(
            a.username.as_deref(),
            Some("system:serviceaccount:kube-system:replicaset-controller")
        );
        assert_eq!(a.groups.len(), 2);
        assert_eq!(a.source_ip.as_deref(), Some("127.0.0.1"));
        assert!(a.time.is_some());
    }

    #[test]
    fn a_subresource_keeps_the_objects_name_and_not_the_status_body() {
        let ev = r#"{"id":"e/ResponseComplete","time":"2026-12-06T23:02:01.2Z","kind":"k8s_audit","source":"s","verb":"create","user":{"username":"carol","groups":["ops"]},
          "object_ref":{"resource":"pods","subresource":"eviction","namespace":"shop","name":"web-1"},"response_code":201,
          "object":{"requestObject":{"kind":"Eviction","metadata":{"name":"web-1","namespace":"shop"}},"responseObject":{"kind":"Status","metadata":{},"code":201}}}"#;
        let a = Activity::from_record(ev.as_bytes());
        assert_eq!(a.subresource.as_deref(), Some("eviction"));
        assert_eq!(a.name.as_deref(), Some("web-1"));
        assert_eq!(a.object_kind.as_deref(), Some("Pod"));
        assert_eq!(a.uid, None);
        assert_eq!(a.owner, None);
    }

    #[test]
    fn an_event_is_keyed_by_resource_and_names_what_it_mentions() {
        let ev = r#"{"id":"u:1","time":"2026-12-06T23:01:06Z","kind":"k8s_event","source":"kubernetes_events.0","namespace":"shop","reason":"SuccessfulCreate","type":"Normal",
          "message":"(combined from similar events): Created pod: web-7d8bcd4698-p2jr2","involved_object":{"kind":"ReplicaSet","name":"web-7d8bcd4698","namespace":"shop","uid":"rs","api_version":"apps/v1"},
          "reporting_controller":"replicaset-controller","object":{"kind":"Event","apiVersion":"v1"}}"#;
        let a = Activity::from_record(ev.as_bytes());
        assert_eq!(a.kind.as_deref(), Some("k8s_event"));
        assert_eq!(a.resource.as_deref(), Some("replicasets"));
        assert_eq!(a.object_kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(a.api_group.as_deref(), Some("apps"));
        assert_eq!(a.name.as_deref(), Some("web-7d8bcd4698"));
        assert_eq!(a.uid.as_deref(), Some("rs"));
        assert_eq!(a.component.as_deref(), Some("replicaset-controller"));
        assert_eq!(
            a.mention,
            Some(("pods".into(), "web-7d8bcd4698-p2jr2".into()))
        );
        let node = r#"{"id":"u:2","time":"2026-12-06T23:01:06Z","kind":"k8s_event","source":"k","namespace":"default","reason":"RegisteredNode","involved_object":{"kind":"Node","name":"node-1"}}"#;
        let a = Activity::from_record(node.as_bytes());
        assert_eq!(
            (a.resource.as_deref(), a.namespace.as_deref()),
            (Some("nodes"), None)
        );
    }

    #[test]
    fn raw_records_are_read_from_the_original() {
        let raw = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","stage":"ResponseComplete","verb":"delete","user":{"username":"bob","groups":["dev"]},"sourceIPs":["10.0.0.7"],"userAgent":"kubectl","objectRef":{"resource":"pods","namespace":"shop","name":"p","apiVersion":"v1"},"responseStatus":{"code":403},"stageTimestamp":"2026-12-06T23:04:34.84Z"}"#;
        let a = Activity::from_record(raw.as_bytes());
        assert_eq!(a.kind.as_deref(), Some("k8s_audit"));
        assert_eq!(
            (a.username.as_deref(), a.response_code, a.name.as_deref()),
            (Some("bob"), Some(403), Some("p"))
        );
        assert!(a.time.is_some());
        let ev = r#"{"kind":"Event","apiVersion":"v1","metadata":{"namespace":"shop"},"involvedObject":{"kind":"Pod","name":"p","namespace":"shop"},"reason":"Evicted","type":"Warning","source":{"component":"kubelet"},"lastTimestamp":"2026-12-06T23:04:34Z"}"#;
        let a = Activity::from_record(ev.as_bytes());
        assert_eq!(
            (
                a.kind.as_deref(),
                a.reason.as_deref(),
                a.component.as_deref()
            ),
            (Some("k8s_event"), Some("Evicted"), Some("kubelet"))
        );
    }

    #[test]
    fn odd_records_keep_what_can_be_read() {
        let odd = r#"{"id":"i","time":"2026-12-06T23:04:34Z","kind":"k8s_audit","user":"bob","object_ref":[1],"verb":7}"#;
        let a = Activity::from_record(odd.as_bytes());
        assert_eq!(a.kind.as_deref(), Some("k8s_audit"));
        assert!(a.time.is_some());
        assert_eq!(a.username, None);
        assert_eq!(Activity::from_record(b"not json"), Activity::default());
        let gap =
            r#"{"id":"g","time":"2026-12-06T23:04:34Z","kind":"gap","reason":"watch_expired"}"#;
        let a = Activity::from_record(gap.as_bytes());
        assert_eq!(a.kind.as_deref(), Some("gap"));
    }

    #[test]
    fn mentions() {
        assert_eq!(
            mention(
                "ScalingReplicaSet",
                "Scaled down replica set web-6b4996b7f9 to 1 from 2"
            ),
            Some(("replicasets".into(), "web-6b4996b7f9".into()))
        );
        assert_eq!(
            mention("SuccessfulDelete", "Deleted pod: web-1"),
            Some(("pods".into(), "web-1".into()))
        );
        assert_eq!(mention("BackOff", "Back-off"), None);
        assert_eq!(mention("SuccessfulCreate", "Created pod: "), None);
    }
}
