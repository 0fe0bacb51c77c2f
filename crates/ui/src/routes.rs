//! URLs → answers. Every data URL is a query whose inputs are its query string, in HTML or,
//! with `.json`, as the query layer's answer itself:
//!
//! | URL | answer |
//! |---|---|
//! | `/timeline?FILTERS`, `/timeline.json?FILTERS` | a page of the timeline (`TimelinePage`) |
//! | `/timeline/live?FILTERS&after=POSITION` | new records as server-sent events (HTML rows) |
//! | `/who?object=KIND/NAME&namespace=NS`, `/who.json?…` | an object's story (`Story`, as `kubetrail who -o json`) |
//! | `/record?id=ID`, `/record.json?id=ID` | a stored record (Secret content hidden) |
//! | `/login` (GET: the form, POST: sign in), `/logout` (POST) | the session cookie |
//! | `/assets/…` | the stylesheet and the script |
//!
//! Anything but the sign-in form and the assets needs an identity ([`crate::auth`]): without
//! one, 401 and no data (HTML: the sign-in form; JSON: an error object). Only GET and HEAD are
//! served, except the two forms' POSTs. Every answer carries a Content-Security-Policy that
//! allows nothing but this origin's own stylesheet and script.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, ORIGIN, SET_COOKIE, VARY, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use kubetrail_query::{QueryError, TimelineQuery, WhoQuery};
use maud::Markup;
use tokio::sync::watch;

use crate::auth::{Auth, Identity};
use crate::live::Live;
use crate::pages::{self, Chrome};
use crate::store::StoreSlot;
use crate::{assets, secrets};

/// A response body: whole, or streamed (live updates).
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The largest sign-in form accepted.
const MAX_FORM: usize = 8 * 1024;
/// How long a failed sign-in waits before its answer (slows guessing down).
const SIGN_IN_FAILURE_DELAY: Duration = Duration::from_millis(300);
/// The header the script sends to get the results part of the timeline page only.
pub(crate) const FRAGMENT_HEADER: &str = "x-kubetrail-fragment";

/// What the server knows about a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub cert_verified: bool,
}

/// The page's shared state.
pub(crate) struct App {
    auth: Auth,
    store: StoreSlot,
    live: Live,
    stop: watch::Receiver<bool>,
}

/// What a request asks for.
enum Route<'a> {
    Timeline { json: bool },
    Live,
    Who { json: bool },
    Record { json: bool },
    Login,
    Logout,
    Asset(&'a str),
    Root,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/" => Route::Root,
        "/timeline" => Route::Timeline { json: false },
        "/timeline.json" => Route::Timeline { json: true },
        "/timeline/live" => Route::Live,
        "/who" => Route::Who { json: false },
        "/who.json" => Route::Who { json: true },
        "/record" => Route::Record { json: false },
        "/record.json" => Route::Record { json: true },
        "/login" => Route::Login,
        "/logout" => Route::Logout,
        p => match p.strip_prefix("/assets/") {
            Some(name) => Route::Asset(name),
            None => Route::NotFound,
        },
    }
}

impl App {
    pub fn new(auth: Auth, store: StoreSlot, live: Live, stop: watch::Receiver<bool>) -> App {
        App {
            auth,
            store,
            live,
            stop,
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let mut resp = self.answer(req, conn).await;
        secure_headers(&mut resp);
        if head {
            *resp.body_mut() = Full::new(Bytes::new()).boxed();
        }
        resp
    }

    async fn answer(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let r = route(&path);
        let post_allowed = matches!(r, Route::Login | Route::Logout);
        let method = req.method().clone();
        if !(method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && post_allowed))
        {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            let allow = if post_allowed {
                "GET, HEAD, POST"
            } else {
                "GET, HEAD"
            };
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            return resp;
        }
        match r {
            Route::Asset(name) => return assets::serve(name, req.headers()),
            Route::Login if method == Method::POST => return self.sign_in(req, conn).await,
            Route::Login => {
                let next = login_next(&query);
                return html(
                    StatusCode::OK,
                    pages::login::page(&next, None, &self.chrome(None)),
                );
            }
            Route::Logout if method == Method::POST => {
                if let Some(resp) = cross_site(req.headers()) {
                    return resp;
                }
                let mut resp = redirect("/login");
                if let Ok(v) = HeaderValue::from_str(&self.auth.sign_out()) {
                    resp.headers_mut().insert(SET_COOKIE, v);
                }
                return resp;
            }
            _ => {}
        }
        let Some(who) = self.auth.identify(conn.cert_verified, req.headers()) else {
            return self.unauthenticated(&r, &path, &query);
        };
        let chrome = self.chrome(Some(who));
        let fragment = req.headers().contains_key(FRAGMENT_HEADER);
        match r {
            Route::Root => redirect(&with_query("/timeline", &query)),
            Route::Timeline { json } => self.timeline(&query, json, fragment, &chrome).await,
            Route::Live => {
                let last_event_id = req
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok());
                self.live_stream(&query, last_event_id).await
            }
            Route::Who { json } => self.who(&query, json, &chrome).await,
            Route::Record { json } => self.record(&query, json, &chrome).await,
            Route::Logout => redirect("/timeline"),
            Route::NotFound | Route::Login | Route::Asset(_) => html(
                StatusCode::NOT_FOUND,
                pages::message(
                    "Not found",
                    "There is no page here. The timeline is at /timeline.",
                    &chrome,
                ),
            ),
        }
    }

    fn chrome(&self, who: Option<Identity>) -> Chrome {
        Chrome {
            signed_in: who == Some(Identity::Session) && self.auth.uses_sessions(),
        }
    }

    fn unauthenticated(&self, r: &Route<'_>, path: &str, query: &str) -> Response<Body> {
        let mut resp = match r {
            Route::Timeline { json: true }
            | Route::Who { json: true }
            | Route::Record { json: true } => json_error(
                StatusCode::UNAUTHORIZED,
                "authentication required: send Authorization: Bearer <token> (a token of ui.token_file) or a client certificate",
            ),
            Route::Live => text(StatusCode::UNAUTHORIZED, "authentication required\n"),
            _ => {
                let next = with_query(path, query);
                let note = if self.auth.has_tokens() {
                    None
                } else {
                    Some("This page accepts client certificates only: open it with one.")
                };
                html(
                    StatusCode::UNAUTHORIZED,
                    pages::login::page(&next, note, &self.chrome(None)),
                )
            }
        };
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kubetrail\""),
        );
        resp
    }

    async fn sign_in(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        if let Some(resp) = cross_site(req.headers()) {
            return resp;
        }
        #[derive(serde::Deserialize)]
        struct Form {
            token: String,
            #[serde(default)]
            next: String,
        }
        let body = match Limited::new(req.into_body(), MAX_FORM).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"),
        };
        let Ok(form) = serde_urlencoded::from_bytes::<Form>(&body) else {
            return text(StatusCode::BAD_REQUEST, "expected a form with a token\n");
        };
        let next = safe_next(&form.next);
        match self.auth.sign_in(&form.token) {
            Some(cookie) => {
                tracing::info!(peer = %conn.peer, "activity page: signed in");
                let mut resp = redirect(&next);
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().insert(SET_COOKIE, v);
                }
                resp
            }
            None => {
                tracing::info!(peer = %conn.peer, "activity page: sign-in refused");
                tokio::time::sleep(SIGN_IN_FAILURE_DELAY).await;
                let note = if self.auth.has_tokens() {
                    "That token is not accepted."
                } else {
                    "This page accepts client certificates only."
                };
                html(
                    StatusCode::UNAUTHORIZED,
                    pages::login::page(&next, Some(note), &self.chrome(None)),
                )
            }
        }
    }

    async fn timeline(
        &self,
        query: &str,
        json: bool,
        fragment: bool,
        chrome: &Chrome,
    ) -> Response<Body> {
        let Some(query) = canonical(query) else {
            let clean = clean_query(query);
            let path = if json { "/timeline.json" } else { "/timeline" };
            return redirect(&with_query(path, &clean));
        };
        let q = match TimelineQuery::from_query_string(&query) {
            Ok(q) if q.after.is_none() => q,
            Ok(_) => {
                return self.bad(
                    json,
                    "'after' is for /timeline/live; pages use 'cursor'",
                    chrome,
                );
            }
            Err(e) => {
                if json {
                    return json_error(StatusCode::BAD_REQUEST, &e.to_string());
                }
                let body =
                    pages::timeline::page(&TimelineQuery::default(), Err(e.to_string()), chrome);
                return html(StatusCode::BAD_REQUEST, body);
            }
        };
        let answer = match self.store.get().await {
            Ok(store) => store.timeline(&q).await.map_err(Failure::Query),
            Err(e) => Err(Failure::Unavailable(e)),
        };
        if json {
            return match answer {
                Ok(page) => json_ok(&page),
                Err(f) => json_error(f.status(), &f.to_string()),
            };
        }
        let status = answer
            .as_ref()
            .map_or_else(Failure::status, |_| StatusCode::OK);
        let answer = answer.map_err(|f| f.to_string());
        let body = if fragment {
            pages::timeline::results(&q, &answer)
        } else {
            pages::timeline::page(&q, answer, chrome)
        };
        let mut resp = html(status, body);
        resp.headers_mut()
            .insert(VARY, HeaderValue::from_static(FRAGMENT_HEADER));
        resp
    }

    async fn live_stream(&self, query: &str, last_event_id: Option<i64>) -> Response<Body> {
        let mut q = match TimelineQuery::from_query_string(&clean_query(query)) {
            Ok(q) => q,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        // A reconnecting EventSource says where it got to.
        if let Some(id) = last_event_id {
            q.after = Some(kubetrail_query::Position(id));
        }
        if q.after.is_none() {
            return text(
                StatusCode::BAD_REQUEST,
                "'after' (a position) is required\n",
            );
        }
        let store = match self.store.get().await {
            Ok(s) => s,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
        };
        match self.live.stream(store, q, self.stop.clone()) {
            Some(body) => {
                let mut resp = Response::new(body);
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live pages open (ui.max_live); reload for new records\n",
            ),
        }
    }

    async fn who(&self, query: &str, json: bool, chrome: &Chrome) -> Response<Body> {
        let Some(query) = canonical(query) else {
            let path = if json { "/who.json" } else { "/who" };
            return redirect(&with_query(path, &clean_query(query)));
        };
        let q = match WhoQuery::from_query_string(&query) {
            Ok(q) => q,
            Err(e) => return self.bad(json, &e.to_string(), chrome),
        };
        if q.object.is_none() {
            if json {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "'object' is required (e.g. pod/web-0)",
                );
            }
            return html(StatusCode::OK, pages::who::page(&q, None, chrome));
        }
        let answer = match self.store.get().await {
            Ok(store) => store.who(&q).await.map_err(Failure::Query),
            Err(e) => Err(Failure::Unavailable(e)),
        };
        if json {
            return match answer {
                Ok(story) => json_ok(&story),
                Err(f) => json_error(f.status(), &f.to_string()),
            };
        }
        let status = answer
            .as_ref()
            .map_or_else(Failure::status, |_| StatusCode::OK);
        html(
            status,
            pages::who::page(&q, Some(answer.map_err(|f| f.to_string())), chrome),
        )
    }

    async fn record(&self, query: &str, json: bool, chrome: &Chrome) -> Response<Body> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RecordQuery {
            id: String,
        }
        let id = match serde_urlencoded::from_str::<RecordQuery>(query) {
            Ok(r) if !r.id.is_empty() => r.id,
            _ => return self.bad(json, "'id' (a record id) is required", chrome),
        };
        let answer = match self.store.get().await {
            Ok(store) => store.record(&id).await.map_err(Failure::Query),
            Err(e) => Err(Failure::Unavailable(e)),
        };
        let answer = answer
            .and_then(|r| r.ok_or(Failure::NoRecord))
            .map(|mut r| {
                secrets::hide(&mut r.record);
                r
            });
        if json {
            return match answer {
                Ok(r) => json_ok(&r),
                Err(f) => json_error(f.status(), &f.to_string()),
            };
        }
        let status = answer
            .as_ref()
            .map_or_else(Failure::status, |_| StatusCode::OK);
        html(
            status,
            pages::record::page(&id, answer.map_err(|f| f.to_string()), chrome),
        )
    }

    fn bad(&self, json: bool, message: &str, chrome: &Chrome) -> Response<Body> {
        if json {
            json_error(StatusCode::BAD_REQUEST, message)
        } else {
            html(
                StatusCode::BAD_REQUEST,
                pages::message("Bad request", message, chrome),
            )
        }
    }
}

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Query(QueryError),
    #[error("the activity store cannot be read yet: {0}")]
    Unavailable(String),
    #[error("no such record in the store")]
    NoRecord,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Query(QueryError::BadQuery(_) | QueryError::Ambiguous { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Failure::Query(QueryError::NotFound(..)) | Failure::NoRecord => StatusCode::NOT_FOUND,
            Failure::Query(QueryError::Timeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `None` when the query string has empty values (a GET form submits every field): the
/// page then redirects to the same query without them, so the address bar holds the link to
/// share.
fn canonical(query: &str) -> Option<String> {
    let clean = clean_query(query);
    (clean.len() == query.len()).then_some(clean)
}

/// The query string without empty values.
fn clean_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| p.split_once('=').is_none_or(|(_, v)| !v.is_empty()))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Where the sign-in form sends people afterwards, from `/login?next=…`.
fn login_next(query: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Next {
        next: Option<String>,
    }
    let next = serde_urlencoded::from_str::<Next>(query)
        .ok()
        .and_then(|n| n.next)
        .unwrap_or_default();
    safe_next(&next)
}

/// A path on this site only (never `//host` or `/\host`, which browsers read as another
/// site), else the timeline.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && !next.chars().any(|c| c.is_control());
    if ok {
        next.to_string()
    } else {
        "/timeline".to_string()
    }
}

/// A POST from another site (its `Origin` is not this host, or is `null`) is refused:
/// SameSite keeps the cookie from being sent, this keeps other sites from signing a browser
/// in. A request without `Origin` (not a browser) passes.
fn cross_site(headers: &HeaderMap) -> Option<Response<Body>> {
    let origin = headers.get(ORIGIN)?;
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let same = match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) => o.split_once("://").is_some_and(|(_, oh)| oh == h),
        _ => false,
    };
    (!same).then(|| text(StatusCode::FORBIDDEN, "cross-site form refused\n"))
}

fn secure_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it browsers send `Origin: null` on the sign-in form's POST,
    // which the cross-site check must refuse.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", body.to_string())
}

fn html(status: StatusCode, body: Markup) -> Response<Body> {
    full(status, "text/html; charset=utf-8", body.into_string())
}

fn json_ok<T: serde::Serialize>(v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => full(StatusCode::OK, "application/json", b),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    full(status, "application/json", body)
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = full(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_form_values_are_dropped() {
        assert_eq!(
            canonical("namespace=shop&verb=delete"),
            Some("namespace=shop&verb=delete".into())
        );
        assert_eq!(canonical(""), Some(String::new()));
        assert_eq!(canonical("namespace=&object=&verb=delete"), None);
        assert_eq!(
            clean_query("namespace=&object=&verb=delete&"),
            "verb=delete"
        );
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/who?object=pod/a"), "/who?object=pod/a");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "",
            "who",
            "/a\nb",
        ] {
            assert_eq!(safe_next(bad), "/timeline", "{bad:?}");
        }
        assert_eq!(
            login_next("next=%2Fwho%3Fobject%3Dpod%2Fa"),
            "/who?object=pod/a"
        );
    }

    #[test]
    fn forms_from_other_sites_are_refused() {
        let h = |pairs: &[(http::HeaderName, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), HeaderValue::from_static(v));
            }
            m
        };
        assert!(
            cross_site(&h(&[(HOST, "a:1")])).is_none(),
            "no Origin: not a browser form"
        );
        assert!(cross_site(&h(&[(HOST, "a:1"), (ORIGIN, "https://a:1")])).is_none());
        for origin in ["https://evil:1", "null", "a:1"] {
            assert!(
                cross_site(&h(&[(HOST, "a:1"), (ORIGIN, origin)])).is_some(),
                "{origin}"
            );
        }
        assert!(
            cross_site(&h(&[(ORIGIN, "https://a:1")])).is_some(),
            "no Host"
        );
    }
}
