//! Query strings: decoding (`url.ParseQuery` style) and the LIST/WATCH options
//! (`metav1.ListOptions`) with the apiserver's validation.

use percent_encoding::percent_decode_str;

use crate::auth::query_bool;
use crate::status::{Cause, Details, Status};

/// Decoded `key=value` pairs in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let pairs = q
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode_component(k), decode_component(v)),
                None => (decode_component(p), String::new()),
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `ListOptions` as used by LIST and WATCH.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListOptions {
    pub watch: bool,
    pub resource_version: String,
    pub resource_version_match: String,
    pub limit: i64,
    pub continue_token: String,
    pub field_selector: String,
    pub label_selector: String,
    pub timeout_seconds: Option<i64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
}

fn parse_int(q: &Query, key: &str) -> Result<Option<i64>, Status> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            Status::bad_request(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
        }),
    }
}

impl ListOptions {
    /// Decodes and validates; the error is the Status to answer with.
    pub fn from_query(q: &Query) -> Result<ListOptions, Status> {
        let opts = ListOptions {
            watch: q.get("watch").is_some_and(query_bool),
            resource_version: q.get("resourceVersion").unwrap_or("").to_string(),
            resource_version_match: q.get("resourceVersionMatch").unwrap_or("").to_string(),
            limit: parse_int(q, "limit")?.unwrap_or(0),
            continue_token: q.get("continue").unwrap_or("").to_string(),
            field_selector: q.get("fieldSelector").unwrap_or("").to_string(),
            label_selector: q.get("labelSelector").unwrap_or("").to_string(),
            timeout_seconds: parse_int(q, "timeoutSeconds")?,
            allow_bookmarks: q.get("allowWatchBookmarks").is_some_and(query_bool),
            send_initial_events: q.get("sendInitialEvents").is_some(),
        };
        opts.validate()?;
        Ok(opts)
    }

    /// `ValidateListOptions` (WatchList feature gate off, as in v1.28).
    fn validate(&self) -> Result<(), Status> {
        let mut errs: Vec<(&str, &str, String)> = Vec::new();
        let m = self.resource_version_match.as_str();
        let forbidden = |detail: &str| {
            (
                "resourceVersionMatch",
                "FieldValueForbidden",
                format!("Forbidden: {detail}"),
            )
        };
        if self.watch {
            if self.send_initial_events {
                if m != "NotOlderThan" {
                    errs.push(forbidden(
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    ));
                }
                errs.push((
                    "sendInitialEvents",
                    "FieldValueForbidden",
                    "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled".into(),
                ));
            }
            if !m.is_empty() {
                if !self.send_initial_events {
                    errs.push(forbidden("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
                }
                if m != "NotOlderThan" {
                    errs.push((
                        "resourceVersionMatch",
                        "FieldValueNotSupported",
                        format!("Unsupported value: {m:?}: supported values: \"NotOlderThan\""),
                    ));
                }
                if !self.continue_token.is_empty() {
                    errs.push(forbidden(
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if !m.is_empty() {
                if self.resource_version.is_empty() {
                    errs.push(forbidden(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if !self.continue_token.is_empty() {
                    errs.push(forbidden(
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if m != "Exact" && m != "NotOlderThan" {
                    errs.push((
                        "resourceVersionMatch",
                        "FieldValueNotSupported",
                        format!("Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""),
                    ));
                }
                if m == "Exact" && self.resource_version == "0" {
                    errs.push(forbidden(
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if self.send_initial_events {
                errs.push((
                    "sendInitialEvents",
                    "FieldValueForbidden",
                    "Forbidden: sendInitialEvents is forbidden for list".into(),
                ));
            }
        }
        if errs.is_empty() {
            return Ok(());
        }
        let rendered: Vec<String> = errs.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        Err(Status::failure(
            422,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {summary}"),
        )
        .with_details(Details {
            group: "meta.k8s.io".into(),
            kind: "ListOptions".into(),
            causes: errs
                .into_iter()
                .map(|(f, r, m)| Cause {
                    reason: r.into(),
                    message: m,
                    field: f.into(),
                })
                .collect(),
            ..Details::default()
        }))
    }

    /// The resourceVersion as a revision (`None` when empty).
    pub fn parsed_rv(&self) -> Result<Option<u64>, Status> {
        if self.resource_version.is_empty() {
            return Ok(None);
        }
        self.resource_version.parse::<u64>().map(Some).map_err(|_| {
            Status::bad_request(format!(
                "invalid resource version: resourceVersion: Invalid value: {:?}: strconv.ParseUint: parsing {:?}: invalid syntax",
                self.resource_version, self.resource_version
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let q = Query::parse(Some(
            "fieldSelector=involvedObject.kind%3DPod&labelSelector=app+in+%28a%29&watch&x=1&x=2",
        ));
        assert_eq!(q.get("fieldSelector"), Some("involvedObject.kind=Pod"));
        assert_eq!(q.get("labelSelector"), Some("app in (a)"));
        assert_eq!(q.get("watch"), Some(""));
        assert_eq!(q.get("x"), Some("1"));
        assert!(
            ListOptions::from_query(&q).unwrap().watch,
            "bare watch is true"
        );
    }

    #[test]
    fn rv_match_without_rv_is_the_recorded_422() {
        let q = Query::parse(Some("resourceVersionMatch=Exact"));
        let e = ListOptions::from_query(&q).unwrap_err();
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"ListOptions.meta.k8s.io \\\"\\\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided\",\"reason\":\"Invalid\",\"details\":{\"group\":\"meta.k8s.io\",\"kind\":\"ListOptions\",\"causes\":[{\"reason\":\"FieldValueForbidden\",\"message\":\"Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided\",\"field\":\"resourceVersionMatch\"}]},\"code\":422}\n"
        );
    }

    #[test]
    fn send_initial_events_watch_is_rejected() {
        let q = Query::parse(Some(
            "allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&watch=1",
        ));
        let e = ListOptions::from_query(&q).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
        );
    }

    #[test]
    fn bad_numbers_are_400() {
        assert_eq!(
            ListOptions::from_query(&Query::parse(Some("limit=x")))
                .unwrap_err()
                .code,
            400
        );
        let o = ListOptions::from_query(&Query::parse(Some("resourceVersion=abc"))).unwrap();
        assert_eq!(o.parsed_rv().unwrap_err().code, 400);
    }
}
