//! A stored record decoded for answering: the indexed facts (`kubetrail_activity::Activity`),
//! the record's JSON, and when it happened; and its one-line description ([`Entry`]).

use kubetrail_activity::Activity;
use kubetrail_activity::extract::parse_time;
use serde_json::Value;

use crate::backend::Row;
use crate::model::{Actor, Entry, ObjectRef};
use crate::spec::{Position, rfc3339};

/// One record, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub seq: i64,
    pub id: String,
    pub a: Activity,
    pub v: Value,
    /// When it happened: an audit event's `requestReceivedTimestamp` (when the actor
    /// asked), an Event's last occurrence; else the stored time. Nanoseconds.
    pub at: i64,
    /// When the record says it completed (`stageTimestamp`), else `at`.
    pub done: i64,
    /// What to add to `at` or `done` to place the record in an ordered list: 0, except for an
    /// Event whose time has whole seconds only (a legacy Event's `lastTimestamp`), which is
    /// placed at the end of its second. It happened somewhere in that second, and an Event
    /// reports what its component did, so after the requests of that second that led to it
    /// (a kubelet's `Killing` after the eviction asked for 0.7 s into the same second).
    pub late: i64,
}

/// Times are kept this far inside what nanoseconds in an `i64` can say, so that the answers'
/// arithmetic (slacks of seconds, windows of a day) never overflows on a record dated at the
/// edge (a year: such a date is nonsense anyway, and is kept in order).
const TIME_EDGE: i64 = 366 * 24 * 3600 * 1_000_000_000;

fn clamp_time(t: i64) -> i64 {
    t.clamp(i64::MIN + TIME_EDGE, i64::MAX - TIME_EDGE)
}

/// [`Rec::late`] of an Event with whole seconds: the last nanosecond of its second.
const WHOLE_SECOND_LATE: i64 = 999_999_999;

/// Puts the records of a timeline page (in the store's order: by time, then position, in
/// `order`) in the order they happened, as far as the page goes: an Event whose time has whole
/// seconds moves after the records of its second (before them, newest first). A stable sort,
/// so nothing else moves.
pub(crate) fn place_whole_seconds(recs: &mut [Rec], order: crate::spec::Order) {
    if recs.iter().all(|r| r.late == 0) {
        return;
    }
    match order {
        crate::spec::Order::Oldest => recs.sort_by_key(|r| (r.done.saturating_add(r.late), r.seq)),
        crate::spec::Order::Newest => {
            recs.sort_by_key(|r| std::cmp::Reverse((r.done.saturating_add(r.late), r.seq)));
        }
    }
}

/// Whether an RFC 3339 time has no fraction of a second.
fn whole_seconds(text: &str) -> bool {
    text.rsplit_once('T')
        .is_some_and(|(_, clock)| !clock.contains('.'))
}

/// Bodies whose metadata is not the object's own.
const NOT_THE_OBJECT: &[&str] = &["Status", "DeleteOptions", "Eviction", "Binding", "Scale"];

impl Rec {
    pub fn from_row(row: Row) -> Rec {
        let a = Activity::from_record(row.record.as_bytes());
        let v: Value = serde_json::from_str(&row.record).unwrap_or(Value::Null);
        let time = clamp_time(a.time.unwrap_or(row.time));
        let mut rec = Rec {
            seq: row.seq,
            id: row.id,
            a,
            v,
            at: time,
            done: time,
            late: 0,
        };
        // The time an Event was placed by: the normalized `last_time` (or `time`), or for
        // `format: raw` the original's own.
        let whole_second_event = rec.is_event() && {
            let orig = rec.orig();
            [
                rec.v.get("last_time"),
                rec.v.get("time"),
                orig.get("lastTimestamp"),
                orig.get("eventTime"),
            ]
            .into_iter()
            .flatten()
            .find_map(Value::as_str)
            .is_some_and(whole_seconds)
        };
        if whole_second_event {
            rec.late = WHOLE_SECOND_LATE;
        }
        if rec.is_audit()
            && let Some(t) = rec
                .orig()
                .get("requestReceivedTimestamp")
                .and_then(Value::as_str)
                .and_then(parse_time)
        {
            rec.at = clamp_time(t);
        }
        rec
    }

    pub fn kind(&self) -> &str {
        self.a.kind.as_deref().unwrap_or("unknown")
    }
    pub fn is_audit(&self) -> bool {
        self.kind() == "k8s_audit"
    }
    pub fn is_event(&self) -> bool {
        self.kind() == "k8s_event"
    }

    /// The original object (under `object`, or the record itself for `format: raw`).
    pub fn orig(&self) -> &Value {
        match self.v.get("object") {
            Some(o) if o.is_object() => o,
            _ => &self.v,
        }
    }

    pub fn verb(&self) -> &str {
        self.a.verb.as_deref().unwrap_or("")
    }
    pub fn sub(&self) -> Option<&str> {
        self.a.subresource.as_deref()
    }
    pub fn user(&self) -> &str {
        self.a.username.as_deref().unwrap_or("")
    }
    pub fn code(&self) -> Option<i64> {
        self.a.response_code
    }
    /// A request that succeeded (2xx).
    pub fn ok(&self) -> bool {
        self.code().is_some_and(|c| (200..300).contains(&c))
    }
    pub fn failed(&self) -> bool {
        self.code().is_some_and(|c| c >= 400)
    }
    pub fn reason(&self) -> &str {
        self.a.reason.as_deref().unwrap_or("")
    }
    pub fn component(&self) -> &str {
        self.a.component.as_deref().unwrap_or("")
    }
    pub fn message(&self) -> Option<&str> {
        self.v
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| self.orig().get("message").and_then(Value::as_str))
            .or_else(|| self.orig().get("note").and_then(Value::as_str))
    }
    pub fn count(&self) -> Option<i64> {
        self.v
            .get("count")
            .and_then(Value::as_i64)
            .or_else(|| self.orig().get("count").and_then(Value::as_i64))
    }

    pub fn request_body(&self) -> Option<&Value> {
        self.orig().get("requestObject").filter(|v| v.is_object())
    }
    pub fn response_body(&self) -> Option<&Value> {
        self.orig().get("responseObject").filter(|v| v.is_object())
    }
    /// The object as the request left it: the response body when it is the object, else
    /// the request body when it is.
    pub fn object_body(&self) -> Option<&Value> {
        let own = |b: &&Value| {
            b.get("kind")
                .and_then(Value::as_str)
                .is_none_or(|k| !NOT_THE_OBJECT.contains(&k))
        };
        self.response_body()
            .filter(own)
            .or(self.request_body().filter(own))
    }
    pub fn status_message(&self) -> Option<&str> {
        self.orig().get("responseStatus")?.get("message")?.as_str()
    }
    /// A query parameter of the request URI.
    pub fn uri_params(&self, key: &str) -> Vec<String> {
        let uri = self
            .v
            .get("request_uri")
            .or_else(|| self.orig().get("requestURI"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some((_, q)) = uri.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| percent_decode(v))
            .collect()
    }

    pub fn object_ref(&self) -> Option<ObjectRef> {
        let resource = self.a.resource.clone()?;
        Some(ObjectRef {
            group: self.a.api_group.clone().unwrap_or_default(),
            resource,
            kind: self.a.object_kind.clone(),
            namespace: self.a.namespace.clone(),
            name: self.a.name.clone().unwrap_or_default(),
            uid: self.a.uid.clone(),
        })
    }

    pub fn actor(&self) -> Option<Actor> {
        if self.is_audit() {
            let user = self.a.username.clone()?;
            let mut a = actor_of_user(&user);
            a.groups = self.a.groups.clone();
            a.impersonated = self.a.impersonated.clone();
            a.user_agent = self.a.user_agent.clone();
            a.source_ip = self.a.source_ip.clone();
            if let Some(i) = &a.impersonated {
                a.display = format!("{} (as {i})", a.display);
            }
            Some(a)
        } else if self.is_event() {
            let c = self.a.component.clone().filter(|c| !c.is_empty())?;
            Some(Actor {
                display: c.clone(),
                component: Some(c),
                ..Actor::default()
            })
        } else {
            None
        }
    }

    /// The record as a timeline row or a story step.
    pub fn entry(&self) -> Entry {
        let source_ips = self
            .v
            .get("source_ips")
            .or_else(|| self.orig().get("sourceIPs"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let message = if self.is_event() || self.kind() == "gap" || self.kind() == "error" {
            self.message().map(str::to_string)
        } else {
            None
        };
        Entry {
            id: self.id.clone(),
            position: Position(self.seq),
            time: rfc3339(self.at),
            record_kind: self.kind().to_string(),
            object: self.object_ref(),
            subresource: self.a.subresource.clone(),
            verb: self.a.verb.clone(),
            actor: self.actor(),
            source_ips,
            user_agent: self.a.user_agent.clone(),
            code: self.code(),
            failed: self.failed(),
            status_message: self
                .failed()
                .then(|| self.status_message().map(str::to_string))
                .flatten(),
            reason: self.a.reason.clone(),
            event_type: self.a.event_type.clone(),
            message,
            count: if self.is_event() { self.count() } else { None },
            summary: self.summary(),
        }
    }

    /// The audit ID of an audit event.
    pub fn audit_id(&self) -> Option<&str> {
        if !self.is_audit() {
            return None;
        }
        self.v
            .get("audit_id")
            .or_else(|| self.orig().get("auditID"))
            .and_then(Value::as_str)
    }

    /// `resource/name[/subresource] [in ns]`.
    pub fn target(&self) -> String {
        let Some(resource) = self.a.resource.clone() else {
            // A request for no resource (discovery, /healthz): its path.
            let uri = self
                .v
                .get("request_uri")
                .or_else(|| self.orig().get("requestURI"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            return uri.split('?').next().unwrap_or(uri).to_string();
        };
        let mut t = resource;
        if let Some(n) = &self.a.name {
            t.push('/');
            t.push_str(n);
        }
        if let Some(s) = &self.a.subresource {
            t.push('/');
            t.push_str(s);
        }
        if let Some(ns) = &self.a.namespace {
            t.push_str(" in ");
            t.push_str(ns);
        }
        t
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self.kind() {
            "k8s_audit" => {
                let who = self
                    .actor()
                    .map(|a| a.display)
                    .unwrap_or_else(|| "?".into());
                let mut s = format!("{who} {} {}", self.verb(), self.target());
                if let Some(d) = self.detail() {
                    s.push_str(&format!(" ({d})"));
                }
                match self.code() {
                    Some(c) => s.push_str(&format!(" → {c}")),
                    None => {
                        if let Some(st) = &self.a.stage {
                            s.push_str(&format!(" [{st}]"));
                        }
                    }
                }
                if self.failed()
                    && let Some(m) = self.status_message()
                {
                    s.push_str(&format!(": {m}"));
                }
                s
            }
            "k8s_event" => {
                let mut s = format!(
                    "{} {} on {} by {}: {}",
                    self.a.event_type.as_deref().unwrap_or("Event"),
                    self.reason(),
                    self.target(),
                    self.component(),
                    self.message().unwrap_or("")
                );
                if let Some(c) = self.count().filter(|c| *c > 1) {
                    s.push_str(&format!(" (×{c})"));
                }
                s
            }
            "gap" => format!(
                "gap ({}): {}",
                self.v.get("reason").and_then(Value::as_str).unwrap_or("?"),
                self.message().unwrap_or("")
            ),
            k => format!("{k} record {}", self.id),
        }
    }

    /// What a request carried that people ask about: the node of a binding, the command
    /// of an exec, the options of a delete.
    pub fn detail(&self) -> Option<String> {
        match (self.verb(), self.sub()) {
            ("create", Some("binding")) => {
                let node = self.request_body()?.get("target")?.get("name")?.as_str()?;
                Some(format!("to node {node}"))
            }
            ("create" | "get", Some("exec" | "attach")) => {
                let cmd = self.uri_params("command").join(" ");
                let container = self.uri_params("container").join(",");
                match (cmd.is_empty(), container.is_empty()) {
                    (false, false) => Some(format!("container {container}: {cmd}")),
                    (false, true) => Some(cmd),
                    (true, false) => Some(format!("container {container}")),
                    _ => None,
                }
            }
            ("delete", None) => {
                let o = self.request_body()?;
                let mut parts = Vec::new();
                if let Some(g) = o.get("gracePeriodSeconds").and_then(Value::as_i64) {
                    parts.push(format!("gracePeriodSeconds {g}"));
                }
                if let Some(p) = o.get("propagationPolicy").and_then(Value::as_str) {
                    parts.push(format!("propagationPolicy {p}"));
                }
                (!parts.is_empty()).then(|| parts.join(", "))
            }
            _ => None,
        }
    }
}

/// Leaves out the earlier stages of a request whose later stage is there too (a watch's or
/// an exec's `ResponseStarted` beside its `ResponseComplete`; `RequestReceived` always).
pub(crate) fn collapse_stages(recs: Vec<&Rec>) -> Vec<&Rec> {
    let rank = |r: &Rec| match r.a.stage.as_deref() {
        Some("RequestReceived") => 0,
        Some("ResponseStarted") => 1,
        _ => 2,
    };
    let mut best: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
    for r in &recs {
        if let Some(id) = r.audit_id() {
            let e = best.entry(id).or_insert(0);
            *e = (*e).max(rank(r));
        }
    }
    recs.into_iter()
        .filter(|r| {
            rank(r) > 0
                && r.audit_id()
                    .is_none_or(|id| best.get(id).is_none_or(|b| *b == rank(r)))
        })
        .collect()
}

/// The actor of an audit event's user.
pub(crate) fn actor_of_user(user: &str) -> Actor {
    let mut a = Actor {
        display: user.to_string(),
        user: Some(user.to_string()),
        ..Actor::default()
    };
    if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
        if let Some((ns, name)) = rest.split_once(':') {
            a.service_account = Some(format!("{ns}/{name}"));
            a.display = if ns == "kube-system" {
                name.to_string()
            } else {
                format!("{ns}/{name}")
            };
            a.external = ns != "kube-system";
        }
    } else if let Some(c) = user.strip_prefix("system:") {
        if c == "kube-scheduler" || c == "kube-controller-manager" || c == "kube-proxy" {
            a.display = c.to_string();
        }
        a.external = false;
    } else {
        a.external = true;
    }
    a
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole-second Event at the very end of the time range orders without overflowing.
    #[test]
    fn a_whole_second_event_at_the_end_of_time_is_placed_without_overflow() {
        let raw = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"p.1","namespace":"shop","uid":"e1"},"involvedObject":{"kind":"Pod","name":"p","namespace":"shop"},"reason":"Killing","lastTimestamp":"2262-04-11T23:47:16Z"}"#;
        let t = parse_time("2262-04-11T23:47:16Z").unwrap();
        let rec = Rec::from_row(Row {
            seq: 1,
            id: "e1".into(),
            time: t,
            record: raw.into(),
        });
        assert_eq!(rec.late, WHOLE_SECOND_LATE);
        let mut recs = vec![rec.clone(), rec];
        place_whole_seconds(&mut recs, crate::spec::Order::Oldest);
        place_whole_seconds(&mut recs, crate::spec::Order::Newest);
    }

    #[test]
    fn actors() {
        let a = actor_of_user("system:serviceaccount:kube-system:replicaset-controller");
        assert_eq!(
            (a.display.as_str(), a.service_account.as_deref(), a.external),
            (
                "replicaset-controller",
                Some("kube-system/replicaset-controller"),
                false
            )
        );
        let a = actor_of_user("system:serviceaccount:argocd:argocd-application-controller");
        assert!(a.external);
        assert_eq!(
            actor_of_user("system:kube-scheduler").display,
            "kube-scheduler"
        );
        assert!(!actor_of_user("system:node:node-1").external);
        assert!(actor_of_user("alice").external);
        assert_eq!(percent_decode("%2Fetc%2Fnginx"), "/etc/nginx");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
