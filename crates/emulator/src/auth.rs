//! Who is asking and may they: bearer tokens and client certificates (authentication), the
//! apiserver's request attributes (`RequestInfo`), and a small RBAC (admin / viewer /
//! forbidden users).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::status::Status;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub user: String,
    /// The bearer token used, so revocation can cut this caller's watches.
    pub token: Option<String>,
}

/// The attributes RBAC sees (apiserver `RequestInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub is_resource: bool,
    pub path: String,
    pub verb: String,
    pub api_prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// The value of a boolean query parameter as apimachinery converts it: anything but `0` and
/// `false` (any case) is true.
pub(crate) fn query_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

impl RequestInfo {
    /// `RequestInfoFactory.NewRequestInfo` for the prefixes `api` (groupless) and `apis`.
    pub fn parse(method: &http::Method, path: &str, watch_param: Option<&str>) -> RequestInfo {
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let trimmed = path.trim_matches('/');
        let mut parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return info;
        }
        info.api_prefix = parts[0].to_string();
        parts.remove(0);
        if info.api_prefix == "apis" {
            if parts.len() < 3 {
                return info;
            }
            info.group = parts.remove(0).to_string();
        }
        info.is_resource = true;
        info.version = parts.remove(0).to_string();
        info.verb = match *method {
            http::Method::POST => "create",
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if parts.first() == Some(&"namespaces") && parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        match parts.len() {
            0 => {}
            1 => info.resource = parts[0].to_string(),
            2 => {
                info.resource = parts[0].to_string();
                info.name = parts[1].to_string();
            }
            _ => {
                info.resource = parts[0].to_string();
                info.name = parts[1].to_string();
                info.subresource = parts[2].to_string();
            }
        }
        if info.name.is_empty() && info.verb == "get" {
            info.verb = if watch_param.is_some_and(query_bool) {
                "watch"
            } else {
                "list"
            }
            .to_string();
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }
}

/// Non-resource URLs every authenticated user may read (`system:discovery`,
/// `system:public-info-viewer`).
fn discovery_path(path: &str) -> bool {
    matches!(
        path,
        "/version"
            | "/version/"
            | "/healthz"
            | "/livez"
            | "/readyz"
            | "/api"
            | "/apis"
            | "/openapi"
    ) || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi/")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Tokens and role lists.
pub(crate) struct Auth {
    tokens: RwLock<HashMap<String, String>>,
    anonymous: bool,
    viewers: HashSet<String>,
    forbidden: HashSet<String>,
}

impl Auth {
    pub fn new(opts: &crate::EmulatorOptions) -> Auth {
        Auth {
            tokens: RwLock::new(opts.tokens.iter().cloned().collect()),
            anonymous: opts.anonymous,
            viewers: opts.viewer_users.iter().cloned().collect(),
            forbidden: opts.forbidden_users.iter().cloned().collect(),
        }
    }

    pub fn add_token(&self, token: &str, user: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), user.to_string());
    }

    pub fn revoke_token(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// The union authenticator: a verified client certificate first, then a bearer token,
    /// then anonymous (when enabled). `Err` means 401.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        cert_user: Option<&str>,
    ) -> Result<Principal, Status> {
        if let Some(user) = cert_user {
            return Ok(Principal {
                user: user.to_string(),
                token: None,
            });
        }
        if let Some(token) = authorization.and_then(bearer_token) {
            let user = self
                .tokens
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(token)
                .cloned();
            return match user {
                Some(user) => Ok(Principal {
                    user,
                    token: Some(token.to_string()),
                }),
                None => Err(Status::unauthorized()),
            };
        }
        if self.anonymous {
            return Ok(Principal {
                user: "system:anonymous".to_string(),
                token: None,
            });
        }
        Err(Status::unauthorized())
    }

    /// RBAC: `Err` is the 403 Status.
    pub fn authorize(&self, p: &Principal, info: &RequestInfo) -> Result<(), Status> {
        let deny = || {
            if info.is_resource {
                Status::forbidden_resource(
                    &p.user,
                    &info.verb,
                    &info.group,
                    &info.resource,
                    &info.subresource,
                    &info.name,
                    &info.namespace,
                )
            } else {
                Status::forbidden_path(&p.user, &info.verb, &info.path)
            }
        };
        if self.forbidden.contains(&p.user) {
            return Err(deny());
        }
        if self.viewers.contains(&p.user) {
            let allowed = if info.is_resource {
                let read = matches!(info.verb.as_str(), "get" | "list" | "watch");
                let events = info.resource == "events"
                    && (info.group.is_empty() || info.group == "events.k8s.io");
                let namespaces = info.resource == "namespaces" && info.group.is_empty();
                read && info.subresource.is_empty() && (events || namespaces)
            } else {
                info.verb == "get" && discovery_path(&info.path)
            };
            return if allowed { Ok(()) } else { Err(deny()) };
        }
        Ok(())
    }
}

/// `Authorization: Bearer <token>` as the apiserver's bearer token authenticator reads it.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(header).ok()?.trim();
    let mut parts = s.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn opts() -> crate::EmulatorOptions {
        crate::EmulatorOptions {
            tokens: vec![("t".into(), "admin".into()), ("v".into(), "viewer".into())],
            viewer_users: vec!["viewer".into()],
            forbidden_users: vec!["mallory".into()],
            ..crate::EmulatorOptions::default()
        }
    }

    #[test]
    fn request_info_like_the_apiserver() {
        let i = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/fx/events", None);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "fx", "events")
        );
        let i = RequestInfo::parse(&Method::GET, "/apis/events.k8s.io/v1/events", Some("1"));
        assert_eq!(
            (i.verb.as_str(), i.group.as_str()),
            ("watch", "events.k8s.io")
        );
        let i = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/fx/events/e1", None);
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("get", "e1"));
        let i = RequestInfo::parse(
            &Method::GET,
            "/api/v1/namespaces/fx/events?watch=false",
            Some("false"),
        );
        assert_eq!(i.verb, "list");
        assert!(!RequestInfo::parse(&Method::GET, "/api/v1", None).is_resource);
        assert!(!RequestInfo::parse(&Method::GET, "/apis/events.k8s.io/v1", None).is_resource);
        assert!(!RequestInfo::parse(&Method::GET, "/version", None).is_resource);
        let i = RequestInfo::parse(&Method::DELETE, "/api/v1/namespaces/fx/events", None);
        assert_eq!(i.verb, "deletecollection");
    }

    #[test]
    fn authentication() {
        let a = Auth::new(&opts());
        assert_eq!(
            a.authenticate(Some(b"Bearer t"), None).unwrap().user,
            "admin"
        );
        assert_eq!(
            a.authenticate(Some(b"bearer  t"), None)
                .map(|p| p.user)
                .ok(),
            None
        );
        assert!(a.authenticate(Some(b"Bearer nope"), None).is_err());
        assert!(a.authenticate(None, None).is_err());
        assert!(a.authenticate(Some(b"Basic abc"), None).is_err());
        assert_eq!(a.authenticate(None, Some("carol")).unwrap().user, "carol");
        a.revoke_token("t");
        assert!(a.authenticate(Some(b"Bearer t"), None).is_err());
        let anon = Auth::new(&crate::EmulatorOptions {
            anonymous: true,
            ..opts()
        });
        assert_eq!(
            anon.authenticate(None, None).unwrap().user,
            "system:anonymous"
        );
    }

    #[test]
    fn authorization_messages() {
        let a = Auth::new(&opts());
        let viewer = Principal {
            user: "viewer".into(),
            token: None,
        };
        let cm = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/fx/configmaps", None);
        let e = a.authorize(&viewer, &cm).unwrap_err();
        assert_eq!(
            e.message,
            "configmaps is forbidden: User \"viewer\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"fx\""
        );
        let ev = RequestInfo::parse(&Method::GET, "/apis/events.k8s.io/v1/events", Some("1"));
        assert!(a.authorize(&viewer, &ev).is_ok());
        let del = RequestInfo::parse(&Method::DELETE, "/api/v1/namespaces/fx/events/x", None);
        let e = a.authorize(&viewer, &del).unwrap_err();
        assert_eq!(
            e.message,
            "events \"x\" is forbidden: User \"viewer\" cannot delete resource \"events\" in API group \"\" in the namespace \"fx\""
        );
        let mallory = Principal {
            user: "mallory".into(),
            token: None,
        };
        let e = a.authorize(&mallory, &ev).unwrap_err();
        assert_eq!(
            e.message,
            "events.events.k8s.io is forbidden: User \"mallory\" cannot watch resource \"events\" in API group \"events.k8s.io\" at the cluster scope"
        );
        let v = RequestInfo::parse(&Method::GET, "/version", None);
        assert_eq!(
            a.authorize(&mallory, &v).unwrap_err().message,
            "forbidden: User \"mallory\" cannot get path \"/version\""
        );
        assert!(a.authorize(&viewer, &v).is_ok());
    }
}
