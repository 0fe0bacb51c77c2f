//! The HTTP handler: faults, authentication, authorization, routing, and the LIST / GET /
//! WATCH semantics of the etcd-backed Events resource.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::auth::RequestInfo;
use crate::body::{ApiBody, ListStream};
use crate::faults::{Faults, HTML_BODY};
use crate::model::new_uid;
use crate::paging;
use crate::query::{ListOptions, Query};
use crate::render::{self, ListMeta, View};
use crate::selectors::{FieldSelector, LabelSelector, parse_field_selector, parse_label_selector};
use crate::server::Shared;
use crate::stats::RequestKind;
use crate::status::Status;
use crate::store::ReadError;
use crate::watch::{self, Start, WatchParams};

/// Lists with more items than this are rendered lazily in chunks.
const STREAM_LIST_ABOVE: usize = 1000;

/// What the connection knows about the caller.
#[derive(Debug, Default)]
pub(crate) struct ConnInfo {
    /// CN of a verified client certificate.
    pub cert_user: Option<String>,
}

/// How a response is decorated.
#[derive(Clone, Copy)]
struct Decor {
    /// APF headers are only on authenticated responses.
    authenticated: bool,
    /// Pretty-print JSON (curl/Wget/browser user agents or `?pretty=true`).
    pretty: bool,
}

/// Largest request body read (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) async fn handle<B>(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<B>,
) -> Result<Response<ApiBody>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let faults = shared.faults();
    if let Some(d) = faults.delay {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let body = if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let decor = Decor {
                    authenticated: false,
                    pretty: false,
                };
                let s = Status::failure(
                    413,
                    "RequestEntityTooLarge",
                    format!("cannot read the request body: {e}"),
                );
                let resp = status_response(&shared.apf, s, decor);
                shared
                    .stats
                    .record(RequestKind::Other, resp.status().as_u16());
                return Ok(resp);
            }
        }
    } else {
        bytes::Bytes::new()
    };
    let req = Request::from_parts(parts, ());
    let (kind, resp) = respond(&shared, &conn, &faults, &req, &body);
    shared.stats.record(kind, resp.status().as_u16());
    Ok(resp)
}

fn respond(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    faults: &Faults,
    req: &Request<()>,
    body: &[u8],
) -> (RequestKind, Response<ApiBody>) {
    let raw_path = req.uri().path();
    let path = percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let query = Query::parse(req.uri().query());
    let info = RequestInfo::parse(req.method(), &path, query.get("watch"));
    let pretty = query.get("pretty").is_some_and(crate::auth::query_bool)
        || req
            .headers()
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| {
                ua.starts_with("curl") || ua.starts_with("Wget") || ua.starts_with("Mozilla/5.0")
            });
    let kind = match info.verb.as_str() {
        "list" => RequestKind::List,
        "watch" => RequestKind::Watch,
        "get" if info.is_resource => RequestKind::Get,
        _ => RequestKind::Other,
    };

    if let Some(code) = faults.fail_status {
        let decor = Decor {
            authenticated: true,
            pretty,
        };
        let mut resp = status_response(&shared.apf, Status::injected(code), decor);
        if code == 429 {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return (kind, resp);
    }

    let principal = match shared.auth.authenticate(
        req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()),
        conn.cert_user.as_deref(),
    ) {
        Ok(p) => p,
        Err(s) => {
            let decor = Decor {
                authenticated: false,
                pretty,
            };
            return (kind, status_response(&shared.apf, s, decor));
        }
    };
    let decor = Decor {
        authenticated: true,
        pretty,
    };
    if let Err(s) = shared.auth.authorize(&principal, &info) {
        let mut resp = status_response(&shared.apf, s, decor);
        resp.headers_mut().insert(
            "X-Content-Type-Options",
            HeaderValue::from_static("nosniff"),
        );
        return (kind, resp);
    }

    if !info.is_resource {
        return (RequestKind::Other, non_resource(shared, &info, decor));
    }
    let view = match (
        info.api_prefix.as_str(),
        info.group.as_str(),
        info.version.as_str(),
        info.resource.as_str(),
    ) {
        ("api", "", "v1", "events") => View::Core,
        ("apis", "events.k8s.io", "v1", "events") => View::EventsV1,
        ("apis", "coordination.k8s.io", "v1", "leases") if info.subresource.is_empty() => {
            if let Some(code) = faults.lease_fail_status {
                return (
                    kind,
                    status_response(&shared.apf, Status::injected(code), decor),
                );
            }
            return (kind, leases(shared, &info, req, body, decor));
        }
        _ => {
            return (
                kind,
                status_response(&shared.apf, Status::unknown_path(), decor),
            );
        }
    };
    if !info.subresource.is_empty() {
        return (
            kind,
            status_response(&shared.apf, Status::unknown_path(), decor),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            kind,
            status_response(&shared.apf, Status::method_not_allowed(), decor),
        );
    }
    let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    if !info.name.is_empty() {
        let Some(ns) = namespace else {
            // Events are namespaced: there is no cluster-scoped GET by name.
            return (
                kind,
                status_response(&shared.apf, Status::unknown_path(), decor),
            );
        };
        return (kind, get_one(shared, view, ns, &info.name, decor));
    }
    let opts = match ListOptions::from_query(&query) {
        Ok(o) => o,
        Err(s) => return (kind, status_response(&shared.apf, s, decor)),
    };
    let selectors = parse_field_selector(&opts.field_selector, view)
        .and_then(|f| parse_label_selector(&opts.label_selector).map(|l| (f, l)));
    let (fields, labels) = match selectors {
        Ok(s) => s,
        Err(e) => {
            return (
                kind,
                status_response(&shared.apf, Status::bad_request(e.0), decor),
            );
        }
    };
    let prefix = namespace.map(|n| format!("{n}/")).unwrap_or_default();
    let resp = if opts.watch {
        start_watch(
            shared,
            view,
            prefix,
            fields,
            labels,
            &opts,
            principal.token,
            decor,
        )
    } else if faults.non_json_list_body {
        let mut r = base(&shared.apf, StatusCode::OK, decor)
            .body(ApiBody::from_vec(HTML_BODY.to_vec()))
            .unwrap_or_else(|_| fallback());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        list(shared, view, prefix, fields, labels, &opts, decor)
    };
    (kind, resp)
}

/// Leases (leader election): get/list/create/update/delete.
fn leases(
    shared: &Shared,
    info: &RequestInfo,
    req: &Request<()>,
    body: &[u8],
    decor: Decor,
) -> Response<ApiBody> {
    let ua = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ns = info.namespace.as_str();
    let next_rv = || shared.store.bump_revision();
    let l = &shared.leases;
    let answer = match (info.verb.as_str(), ns.is_empty(), info.name.is_empty()) {
        ("get", false, false) => l.get(ns, &info.name),
        ("list", _, true) => l.list((!ns.is_empty()).then_some(ns), shared.store.current_rv()),
        ("create", false, true) => l.create(ns, body, ua, next_rv),
        ("update", false, false) => l.update(ns, &info.name, body, ua, next_rv),
        ("delete", false, false) => l.delete(ns, &info.name, next_rv),
        ("get" | "create" | "update" | "delete", true, _) => Err(Status::unknown_path()),
        _ => Err(Status::method_not_allowed()),
    };
    match answer {
        Ok((code, bytes)) => json_response(
            &shared.apf,
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            bytes,
            decor,
        ),
        Err(s) => status_response(&shared.apf, s, decor),
    }
}

/// Builder with the headers every kube-apiserver answer carries, in its order.
fn base(apf: &(String, String), status: StatusCode, decor: Decor) -> http::response::Builder {
    let mut b = Response::builder()
        .status(status)
        .header("Audit-Id", new_uid())
        .header(CACHE_CONTROL, "no-cache, private")
        .header(CONTENT_TYPE, "application/json");
    if decor.authenticated {
        b = b
            .header("X-Kubernetes-Pf-Flowschema-Uid", apf.0.as_str())
            .header("X-Kubernetes-Pf-Prioritylevel-Uid", apf.1.as_str());
    }
    b
}

/// A response that cannot fail to build (used if a header value was somehow invalid).
fn fallback() -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::Sized(None));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

fn json_response(
    apf: &(String, String),
    status: StatusCode,
    body: Vec<u8>,
    decor: Decor,
) -> Response<ApiBody> {
    let body = if decor.pretty {
        render::indent(&body)
    } else {
        body
    };
    base(apf, status, decor)
        .body(ApiBody::from_vec(body))
        .unwrap_or_else(|_| fallback())
}

fn status_response(apf: &(String, String), s: Status, decor: Decor) -> Response<ApiBody> {
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(apf, code, s.to_bytes(), decor)
}

fn non_resource(shared: &Shared, info: &RequestInfo, decor: Decor) -> Response<ApiBody> {
    match (info.verb.as_str(), info.path.trim_end_matches('/')) {
        ("get", "/version") => {
            let v = "{\n  \"major\": \"1\",\n  \"minor\": \"28\",\n  \"gitVersion\": \"v1.28.7-emulated\",\n  \"gitCommit\": \"0000000000000000000000000000000000000000\",\n  \"gitTreeState\": \"clean\",\n  \"buildDate\": \"2024-02-14T10:32:39Z\",\n  \"goVersion\": \"go1.21.7\",\n  \"compiler\": \"gc\",\n  \"platform\": \"linux/amd64\"\n}";
            base(&shared.apf, StatusCode::OK, decor)
                .body(ApiBody::from_vec(v.as_bytes().to_vec()))
                .unwrap_or_else(|_| fallback())
        }
        ("get", "/healthz" | "/livez" | "/readyz") => {
            let mut r = base(&shared.apf, StatusCode::OK, decor)
                .header("X-Content-Type-Options", "nosniff")
                .body(ApiBody::from_vec(b"ok".to_vec()))
                .unwrap_or_else(|_| fallback());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        _ => status_response(&shared.apf, Status::unknown_path(), decor),
    }
}

fn get_one(shared: &Shared, view: View, ns: &str, name: &str, decor: Decor) -> Response<ApiBody> {
    match shared.store.get(&format!("{ns}/{name}")) {
        Some(obj) => json_response(
            &shared.apf,
            StatusCode::OK,
            render::event_document(&obj, view),
            decor,
        ),
        None => status_response(&shared.apf, Status::event_not_found(name, view), decor),
    }
}

/// LIST with etcd3 `GetList` semantics: exact or latest reads, paging at one snapshot,
/// `remainingItemCount` only without selectors, 410 and 504 answers.
fn list(
    shared: &Shared,
    view: View,
    prefix: String,
    fields: FieldSelector,
    labels: LabelSelector,
    opts: &ListOptions,
    decor: Decor,
) -> Response<ApiBody> {
    let fail = |s: Status| status_response(&shared.apf, s, decor);
    let limit = if opts.limit > 0 {
        Some((opts.limit as usize).min(shared.opts.max_page_size.max(1)))
    } else {
        None
    };
    let store = &shared.store;
    let (snap, start_key) = if !opts.continue_token.is_empty() {
        let token = match paging::decode(&opts.continue_token) {
            Ok(t) => t,
            Err(e) => return fail(Status::bad_request(format!("invalid continue token: {e}"))),
        };
        if !opts.resource_version.is_empty() && opts.resource_version != "0" {
            return fail(Status::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let at = (token.rv > 0).then_some(token.rv as u64);
        let start_key = format!("{prefix}{}", token.start_key);
        match store.snapshot(&prefix, at) {
            Ok(s) => (s, Some(start_key)),
            Err(ReadError::Compacted { .. }) => {
                let fresh = paging::encode_start(&token.start_key, -1);
                return fail(Status::continue_expired(fresh));
            }
            Err(ReadError::Future { asked, current }) => {
                return fail(Status::too_large_rv(asked, current));
            }
        }
    } else {
        let rv = match opts.parsed_rv() {
            Ok(rv) => rv,
            Err(s) => return fail(s),
        };
        let exact = match opts.resource_version_match.as_str() {
            "Exact" => rv,
            "NotOlderThan" => None,
            // Legacy: a resourceVersion with a limit is an exact read.
            _ => rv.filter(|r| *r > 0 && limit.is_some()),
        };
        let current = store.current_rv();
        if let Some(min) = rv
            && min > current
        {
            return fail(Status::too_large_rv(min, current));
        }
        match store.snapshot(&prefix, exact) {
            Ok(s) => (s, None),
            Err(ReadError::Compacted { .. }) => return fail(Status::list_expired()),
            Err(ReadError::Future { asked, current }) => {
                return fail(Status::too_large_rv(asked, current));
            }
        }
    };

    let begin = start_key.as_deref().map_or(0, |k| snap.position(k));
    let unfiltered = fields.is_empty() && labels.is_empty();
    let mut selected = Vec::new();
    let mut last_examined = None;
    for (i, obj) in snap.items.iter().enumerate().skip(begin) {
        if limit.is_some_and(|l| selected.len() >= l) {
            break;
        }
        last_examined = Some(i);
        if unfiltered || (fields.matches(obj) && labels.matches(obj)) {
            selected.push(obj.clone());
        }
    }
    let after = last_examined.map_or(begin, |i| i + 1);
    let has_more = limit.is_some() && after < snap.items.len();
    let meta = ListMeta {
        resource_version: snap.rv,
        continue_token: has_more
            .then(|| last_examined.map(|i| &snap.items[i]))
            .flatten()
            .map(|o| paging::encode(&o.body.key[prefix.len()..], snap.rv as i64)),
        remaining: (has_more && unfiltered).then(|| (snap.items.len() - after) as i64),
    };
    let mut head = Vec::with_capacity(256);
    render::list_head(&mut head, view, &meta);
    let mut stream = ListStream {
        head: Some(head),
        items: selected,
        next: 0,
        view,
        done: false,
    };
    if stream.items.len() > STREAM_LIST_ABOVE && !decor.pretty {
        return base(&shared.apf, StatusCode::OK, decor)
            .body(ApiBody::List(Box::new(stream)))
            .unwrap_or_else(|_| fallback());
    }
    let mut body = Vec::new();
    while let Some(chunk) = stream.next_chunk() {
        body.extend_from_slice(&chunk);
    }
    json_response(&shared.apf, StatusCode::OK, body, decor)
}

#[allow(clippy::too_many_arguments)]
fn start_watch(
    shared: &Arc<Shared>,
    view: View,
    prefix: String,
    fields: FieldSelector,
    labels: LabelSelector,
    opts: &ListOptions,
    token: Option<String>,
    decor: Decor,
) -> Response<ApiBody> {
    let start = match opts.resource_version.as_str() {
        "" | "0" => Start::Now,
        _ => match opts.parsed_rv() {
            Ok(Some(rv)) => Start::After(rv),
            Ok(None) => Start::Now,
            Err(s) => return status_response(&shared.apf, s, decor),
        },
    };
    let timeout = match opts.timeout_seconds {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        // apiserver: a random timeout between --min-request-timeout (1800 s) and twice that.
        _ => Duration::from_secs(1800 + fastrand::u64(0..1800)),
    };
    let params = WatchParams {
        view,
        prefix,
        fields,
        labels,
        start,
        timeout,
        bookmark_every: if opts.allow_bookmarks {
            shared.opts.bookmark_interval
        } else {
            None
        },
    };
    let reg = shared.watches.register(token);
    let stream = watch::spawn(params, shared.store.clone(), shared.faults_handle(), reg);
    let decor = Decor {
        pretty: false,
        ..decor
    };
    base(&shared.apf, StatusCode::OK, decor)
        .body(ApiBody::Watch(stream))
        .unwrap_or_else(|_| fallback())
}
