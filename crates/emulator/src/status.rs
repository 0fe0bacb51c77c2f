//! `meta/v1 Status` answers (errors and delete results) with the messages, reasons and details
//! the recorded kube-apiserver used.

use serde::Serialize;

use crate::render::{View, to_writer_go};

#[derive(Serialize, Default, Clone, Debug)]
pub(crate) struct Cause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Serialize, Default, Clone, Debug)]
pub(crate) struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Default, Clone, Debug)]
struct StatusMeta {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
}

/// `"kind":"Status"` without storing it (keeps error values small).
#[derive(Clone, Copy, Debug)]
struct KindStatus;

impl Serialize for KindStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("Status")
    }
}

/// `"apiVersion":"v1"` without storing it.
#[derive(Clone, Copy, Debug)]
struct V1;

impl Serialize for V1 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("v1")
    }
}

/// A Status object plus the HTTP code it is sent with.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Status {
    kind: KindStatus,
    #[serde(rename = "apiVersion")]
    api_version: V1,
    metadata: StatusMeta,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<Details>>,
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub code: u16,
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

impl Status {
    pub fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            kind: KindStatus,
            api_version: V1,
            metadata: StatusMeta::default(),
            status: "Failure",
            message: message.into(),
            reason,
            details: None,
            code,
        }
    }

    pub fn with_details(mut self, d: Details) -> Status {
        self.details = Some(Box::new(d));
        self
    }

    /// Compact JSON + `\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // A Status has only string keys; serializing it into a Vec cannot fail.
        let _ = to_writer_go(&mut out, self);
        out.push(b'\n');
        out
    }

    pub fn unauthorized() -> Status {
        Status::failure(401, "Unauthorized", "Unauthorized")
    }

    /// RBAC denial of a resource request.
    pub fn forbidden_resource(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
        namespace: &str,
    ) -> Status {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let full_resource = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {namespace:?}")
        };
        let reason = format!(
            "User {user:?} cannot {verb} resource {full_resource:?} in API group {group:?} {scope}"
        );
        let message = if name.is_empty() {
            format!("{qualified} is forbidden: {reason}")
        } else {
            format!("{qualified} {name:?} is forbidden: {reason}")
        };
        Status::failure(403, "Forbidden", message).with_details(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: resource.to_string(),
            ..Details::default()
        })
    }

    /// RBAC denial of a non-resource URL (`/version`, `/healthz`, ...).
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Status {
        Status::failure(
            403,
            "Forbidden",
            format!("forbidden: User {user:?} cannot {verb} path {path:?}"),
        )
        .with_details(Details::default())
    }

    pub fn unknown_path() -> Status {
        Status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(Details::default())
    }

    pub fn event_not_found(name: &str, view: View) -> Status {
        let qualified = match view {
            View::Core => "events".to_string(),
            View::EventsV1 => "events.events.k8s.io".to_string(),
        };
        Status::failure(404, "NotFound", format!("{qualified} {name:?} not found")).with_details(
            Details {
                name: name.to_string(),
                group: view.group().to_string(),
                kind: "events".to_string(),
                ..Details::default()
            },
        )
    }

    pub fn method_not_allowed() -> Status {
        Status::failure(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(Details::default())
    }

    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::failure(400, "BadRequest", message)
    }

    pub fn list_expired() -> Status {
        Status::failure(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.",
        )
    }

    pub fn watch_expired() -> Status {
        Status::failure(
            410,
            "Expired",
            "The resourceVersion for the provided watch is too old.",
        )
    }

    /// An expired continue token; `fresh` continues at the latest revision (`"rv":-1`).
    pub fn continue_expired(fresh: String) -> Status {
        let mut s = Status::failure(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
        s.metadata.continue_token = Some(fresh);
        s
    }

    pub fn too_large_rv(asked: u64, current: u64) -> Status {
        Status::failure(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {asked}, current: {current}"),
        )
        .with_details(Details {
            causes: vec![Cause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            ..Details::default()
        })
    }

    /// The answer of a `fail_status` fault.
    pub fn injected(code: u16) -> Status {
        match code {
            429 => Status::failure(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
            .with_details(Details {
                retry_after_seconds: 1,
                ..Details::default()
            }),
            500 => Status::failure(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
            )
            .with_details(Details {
                causes: vec![Cause {
                    message: "injected fault".into(),
                    ..Cause::default()
                }],
                ..Details::default()
            }),
            503 => Status::failure(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Status::failure(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            401 => Status::unauthorized(),
            403 => Status::failure(403, "Forbidden", "forbidden: injected fault"),
            404 => Status::unknown_path(),
            410 => Status::failure(410, "Gone", "injected fault"),
            c => Status::failure(
                c,
                "",
                format!(
                    "an error on the server (\"unknown\") has prevented the request from succeeding (injected {c})"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(st: &Status) -> String {
        String::from_utf8(st.to_bytes()).unwrap()
    }

    #[test]
    fn bodies_match_recorded_ones() {
        assert_eq!(
            s(&Status::unauthorized()),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
        );
        assert_eq!(
            s(&Status::forbidden_resource(
                "viewer",
                "list",
                "",
                "configmaps",
                "",
                "",
                "fx"
            )),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps is forbidden: User \\\"viewer\\\" cannot list resource \\\"configmaps\\\" in API group \\\"\\\" in the namespace \\\"fx\\\"\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"configmaps\"},\"code\":403}\n"
        );
        assert_eq!(
            s(&Status::unknown_path()),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
        );
        assert_eq!(
            s(&Status::too_large_rv(999999, 381)),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Timeout: Too large resource version: 999999, current: 381\",\"reason\":\"Timeout\",\"details\":{\"causes\":[{\"reason\":\"ResourceVersionTooLarge\",\"message\":\"Too large resource version\"}]},\"code\":504}\n"
        );
    }
}
