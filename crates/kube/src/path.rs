//! API paths and query strings for list and watch requests: core/v1 and events.k8s.io/v1
//! Events, cluster-wide or in one namespace, with field and label selectors percent-encoded.

use std::fmt::Write;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are in query values: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A bad namespace or resource name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63)"
)]
pub struct PathError {
    pub what: &'static str,
    pub value: String,
}

/// A collection of a resource, cluster-wide or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: String,
    /// Plural resource name, e.g. `events`.
    resource: String,
    namespace: Option<String>,
}

impl ResourcePath {
    /// A collection under an API prefix (`/api/v1`, `/apis/events.k8s.io/v1`).
    pub fn new(prefix: &str, resource: &str, namespace: Option<&str>) -> Result<Self, PathError> {
        check_name("resource", resource)?;
        if let Some(ns) = namespace {
            check_name("namespace", ns)?;
        }
        let ok_prefix = prefix.starts_with('/')
            && !prefix.ends_with('/')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.-".contains(&b));
        if !ok_prefix {
            return Err(PathError {
                what: "API prefix",
                value: prefix.to_string(),
            });
        }
        Ok(ResourcePath {
            prefix: prefix.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        })
    }

    /// core/v1 Events: `/api/v1/events` or `/api/v1/namespaces/{ns}/events`.
    pub fn core_v1_events(namespace: Option<&str>) -> Result<Self, PathError> {
        Self::new("/api/v1", "events", namespace)
    }

    /// events.k8s.io/v1 Events: `/apis/events.k8s.io/v1/[namespaces/{ns}/]events`.
    pub fn events_k8s_io_v1(namespace: Option<&str>) -> Result<Self, PathError> {
        Self::new("/apis/events.k8s.io/v1", "events", namespace)
    }

    /// The namespace, if the path is namespaced.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The collection path without a query.
    pub fn collection(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{}/{}", self.prefix, ns, self.resource),
            None => format!("{}/{}", self.prefix, self.resource),
        }
    }
}

fn check_name(what: &'static str, v: &str) -> Result<(), PathError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PathError {
            what,
            value: v.to_string(),
        })
    }
}

/// Selectors applied to both the list and the watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// `fieldSelector`, e.g. `involvedObject.kind=Pod` or `type!=Normal`.
    pub field_selector: Option<String>,
    /// `labelSelector`, e.g. `app=web,tier in (a,b)`.
    pub label_selector: Option<String>,
}

fn push(q: &mut String, key: &str, value: &str) {
    q.push(if q.contains('?') { '&' } else { '?' });
    // Writing to a String cannot fail.
    let _ = write!(q, "{key}={}", utf8_percent_encode(value, QUERY_VALUE));
}

fn push_selectors(q: &mut String, s: &Selectors) {
    if let Some(f) = s.field_selector.as_deref().filter(|f| !f.is_empty()) {
        push(q, "fieldSelector", f);
    }
    if let Some(l) = s.label_selector.as_deref().filter(|l| !l.is_empty()) {
        push(q, "labelSelector", l);
    }
}

/// A paged LIST: `?limit=N[&continue=T][&fieldSelector=..][&labelSelector=..]`.
pub fn list_query(
    path: &ResourcePath,
    selectors: &Selectors,
    continue_token: Option<&str>,
    limit: u32,
) -> String {
    let mut q = path.collection();
    push(&mut q, "limit", &limit.max(1).to_string());
    if let Some(t) = continue_token {
        push(&mut q, "continue", t);
    }
    push_selectors(&mut q, selectors);
    q
}

/// A cheap check that a resourceVersion is not ahead of the server: one item of the
/// collection, not older than it: `?limit=1&resourceVersion=RV&resourceVersionMatch=NotOlderThan`
/// (a future one answers 504 `ResourceVersionTooLarge`).
pub fn probe_query(path: &ResourcePath, resource_version: &str) -> String {
    let mut q = path.collection();
    push(&mut q, "limit", "1");
    push(&mut q, "resourceVersion", resource_version);
    push(&mut q, "resourceVersionMatch", "NotOlderThan");
    q
}

/// A WATCH from a resourceVersion:
/// `?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N[&selectors]`.
pub fn watch_query(
    path: &ResourcePath,
    selectors: &Selectors,
    resource_version: &str,
    timeout: Duration,
) -> String {
    let mut q = path.collection();
    push(&mut q, "watch", "1");
    push(&mut q, "resourceVersion", resource_version);
    push(&mut q, "allowWatchBookmarks", "true");
    push(
        &mut q,
        "timeoutSeconds",
        &timeout.as_secs().max(1).to_string(),
    );
    push_selectors(&mut q, selectors);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            ResourcePath::core_v1_events(None).unwrap().collection(),
            "/api/v1/events"
        );
        assert_eq!(
            ResourcePath::core_v1_events(Some("fx"))
                .unwrap()
                .collection(),
            "/api/v1/namespaces/fx/events"
        );
        assert_eq!(
            ResourcePath::events_k8s_io_v1(Some("kube-system"))
                .unwrap()
                .collection(),
            "/apis/events.k8s.io/v1/namespaces/kube-system/events"
        );
        for bad in ["", "Fx", "a/b", "..", "-x", "a b", "x?y", &"a".repeat(64)] {
            assert!(ResourcePath::core_v1_events(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(ResourcePath::new("/apis/x/../v1/", "events", None).is_err());
    }

    #[test]
    fn probe_asks_for_one_item_not_older_than_the_version() {
        let p = ResourcePath::core_v1_events(Some("fx")).unwrap();
        assert_eq!(
            probe_query(&p, "381"),
            "/api/v1/namespaces/fx/events?limit=1&resourceVersion=381&resourceVersionMatch=NotOlderThan"
        );
    }

    #[test]
    fn queries_match_the_recorded_requests() {
        let all = ResourcePath::core_v1_events(None).unwrap();
        assert_eq!(
            list_query(&all, &Selectors::default(), None, 5),
            "/api/v1/events?limit=5"
        );
        let token = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MzAxfQ";
        assert_eq!(
            list_query(&all, &Selectors::default(), Some(token), 5),
            format!("/api/v1/events?limit=5&continue={token}")
        );
        let sel = Selectors {
            field_selector: Some("involvedObject.kind=Pod".into()),
            label_selector: Some("app in (a,b)".into()),
        };
        assert_eq!(
            list_query(&all, &sel, None, 500),
            "/api/v1/events?limit=500&fieldSelector=involvedObject.kind%3DPod&labelSelector=app%20in%20%28a%2Cb%29"
        );
        let fx = ResourcePath::core_v1_events(Some("fx")).unwrap();
        assert_eq!(
            watch_query(&fx, &Selectors::default(), "302", Duration::from_secs(75)),
            "/api/v1/namespaces/fx/events?watch=1&resourceVersion=302&allowWatchBookmarks=true&timeoutSeconds=75"
        );
        // resourceVersion is opaque: whatever it holds is encoded, not interpreted.
        assert!(
            watch_query(&fx, &Selectors::default(), "a&b=c", Duration::from_secs(1))
                .contains("resourceVersion=a%26b%3Dc")
        );
    }
}
