//! Kubernetes `Status` objects (the body of every API error and of watch ERROR frames) and the
//! typed [`ApiError`] made from them, also when the body is not JSON at all.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The parts of a `meta/v1 Status` that kubetrail acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `Status` for real Status objects.
    #[serde(default)]
    pub kind: Option<String>,
    /// `Success` or `Failure`.
    #[serde(default)]
    pub status: Option<String>,
    /// Human-readable description.
    #[serde(default)]
    pub message: Option<String>,
    /// Machine-readable reason (`Expired`, `Gone`, `Unauthorized`, `Forbidden`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    /// The HTTP status code this Status stands for.
    #[serde(default)]
    pub code: Option<u16>,
    /// Extra details, e.g. `retryAfterSeconds`.
    #[serde(default)]
    pub details: Option<StatusDetails>,
}

/// `Status.details`, only the fields kubetrail uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Seconds the client should wait before retrying.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// The causes (`ResourceVersionTooLarge`, field errors, ...).
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

/// One of `Status.details.causes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StatusCause {
    #[serde(default)]
    pub reason: Option<String>,
}

/// An error answer of the Kubernetes API (non-2xx response or watch ERROR frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (from the Status `code`, else the response status).
    pub code: u16,
    /// The Status `reason`, or the HTTP reason phrase when the body was not a Status.
    pub reason: String,
    /// The Status `message`, or a snippet of the body when it was not a Status.
    pub message: String,
    /// From the `Retry-After` header or `details.retryAfterSeconds`.
    pub retry_after: Option<Duration>,
    /// The reasons of `details.causes`.
    pub causes: Vec<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(r) = self.retry_after {
            write!(f, " (retry after {}s)", r.as_secs())?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// How many bytes of a non-JSON error body are kept in the message.
const SNIPPET_LEN: usize = 200;

impl ApiError {
    /// Decodes an error response. Never fails: a body that is not a Status keeps the HTTP code
    /// and a snippet of the body.
    pub fn from_response(
        status: http::StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> ApiError {
        let canonical = status.canonical_reason().unwrap_or("").to_string();
        match serde_json::from_slice::<Status>(body) {
            Ok(s) if s.kind.as_deref() == Some("Status") || s.code.is_some() => {
                let mut e = ApiError::from_status(&s);
                if s.code.is_none() {
                    e.code = status.as_u16();
                }
                if e.reason.is_empty() {
                    e.reason = canonical;
                }
                e.retry_after = retry_after.or(e.retry_after);
                e
            }
            _ => ApiError {
                code: status.as_u16(),
                reason: canonical,
                message: snippet(body),
                retry_after,
                causes: Vec::new(),
            },
        }
    }

    /// The error a Status (e.g. of a watch ERROR frame) stands for.
    pub fn from_status(s: &Status) -> ApiError {
        ApiError {
            code: s.code.unwrap_or(500),
            reason: s.reason.clone().unwrap_or_default(),
            message: s.message.clone().unwrap_or_default(),
            retry_after: s
                .details
                .as_ref()
                .and_then(|d| d.retry_after_seconds)
                .map(Duration::from_secs),
            causes: s
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .filter_map(|c| c.reason.clone())
                .collect(),
        }
    }

    /// 504 with cause `ResourceVersionTooLarge`: the resourceVersion asked for is ahead of the
    /// server's (its data was replaced, e.g. a cluster rebuilt or etcd restored).
    pub fn is_too_large_resource_version(&self) -> bool {
        self.causes.iter().any(|c| c == "ResourceVersionTooLarge")
            || (self.code == 504 && self.message.contains("Too large resource version"))
    }

    /// 410 Gone / reason `Expired` or `Gone`: the resourceVersion or continue token is too old.
    pub fn is_gone(&self) -> bool {
        self.code == 410 || self.reason == "Expired" || self.reason == "Gone"
    }

    /// 401: the credentials were refused.
    pub fn is_unauthorized(&self) -> bool {
        self.code == 401
    }

    /// 403: RBAC does not allow the request.
    pub fn is_forbidden(&self) -> bool {
        self.code == 403
    }
}

/// A printable, bounded excerpt of untrusted bytes for messages and logs.
pub fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(SNIPPET_LEN)];
    let mut s: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s = s.trim().to_string();
    if body.len() > SNIPPET_LEN {
        s.push_str("...");
    }
    s
}

/// Parses a `Retry-After` header given in seconds (the only form the apiserver sends).
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn decodes_status_bodies() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"events is forbidden: User \"viewer\" cannot list","reason":"Forbidden","details":{"kind":"events"},"code":403}"#;
        let e = ApiError::from_response(StatusCode::FORBIDDEN, None, body);
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert!(e.is_forbidden());
        assert!(
            e.to_string()
                .starts_with("403 Forbidden: events is forbidden")
        );

        let body = br#"{"kind":"Status","status":"Failure","message":"Timeout: Too large resource version","reason":"Timeout","details":{"retryAfterSeconds":1},"code":504}"#;
        let e = ApiError::from_response(StatusCode::GATEWAY_TIMEOUT, None, body);
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
        let e = ApiError::from_response(
            StatusCode::GATEWAY_TIMEOUT,
            Some(Duration::from_secs(3)),
            body,
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn non_json_bodies_keep_code_and_snippet() {
        let e = ApiError::from_response(
            StatusCode::BAD_GATEWAY,
            None,
            b"<html>\nbad gateway\n</html>",
        );
        assert_eq!(e.code, 502);
        assert_eq!(e.reason, "Bad Gateway");
        assert_eq!(e.message, "<html> bad gateway </html>");
        let long = vec![b'x'; 5000];
        let e = ApiError::from_response(StatusCode::INTERNAL_SERVER_ERROR, None, &long);
        assert!(e.message.len() < 300 && e.message.ends_with("..."));
        let e = ApiError::from_response(StatusCode::SERVICE_UNAVAILABLE, None, &[0xff, 0xfe, 0]);
        assert_eq!(e.code, 503);
        // JSON that is not a Status is not mistaken for one.
        let e = ApiError::from_response(StatusCode::NOT_FOUND, None, br#"{"hello":1}"#);
        assert_eq!((e.code, e.reason.as_str()), (404, "Not Found"));
    }

    #[test]
    fn gone_detection() {
        let s: Status = serde_json::from_str(r#"{"kind":"Status","status":"Failure","message":"too old","reason":"Expired","code":410}"#).unwrap();
        assert!(ApiError::from_status(&s).is_gone());
        let s: Status = serde_json::from_str(r#"{"kind":"Status","reason":"Gone"}"#).unwrap();
        assert!(ApiError::from_status(&s).is_gone());
        let s: Status = serde_json::from_str(r#"{"kind":"Status","code":500}"#).unwrap();
        assert!(!ApiError::from_status(&s).is_gone());
    }

    #[test]
    fn retry_after_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(" 7 "),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015"),
        );
        assert_eq!(parse_retry_after(&h), None);
    }
}
