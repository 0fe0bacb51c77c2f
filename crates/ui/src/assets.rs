//! The stylesheet and the script, compiled into the binary (the page works offline, with no
//! CDN and nothing to install). Their URLs carry a hash of their content, so browsers may
//! keep them for good and still get a new version the moment it ships.

use std::sync::OnceLock;

use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::routes::{Body, full};

/// Name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../assets/icon.svg"),
    ),
];

/// FNV-1a, enough to tell versions apart.
fn fingerprint(content: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in content.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn fingerprints() -> &'static [String] {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    F.get_or_init(|| ASSETS.iter().map(|(_, _, c)| fingerprint(c)).collect())
}

/// The URL of an asset, with its version.
pub fn href(name: &str) -> String {
    match ASSETS.iter().position(|(n, _, _)| *n == name) {
        Some(i) => format!("/assets/{name}?v={}", &fingerprints()[i][..12]),
        None => format!("/assets/{name}"),
    }
}

/// Answers `/assets/NAME`.
pub fn serve(name: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return full(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no such asset\n",
        );
    };
    let (_, content_type, content) = ASSETS[i];
    let etag = format!("\"{}\"", fingerprints()[i]);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        full(StatusCode::NOT_MODIFIED, content_type, "")
    } else {
        full(StatusCode::OK, content_type, content)
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_urls_and_revalidation() {
        let h = href("app.js");
        assert!(h.starts_with("/assets/app.js?v=") && h.len() == "/assets/app.js?v=".len() + 12);
        let r = serve("app.css", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers().get(ETAG).unwrap().clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag);
        assert_eq!(serve("app.css", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
