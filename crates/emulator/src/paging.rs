//! LIST continue tokens, byte-compatible with apiserver's `storage.EncodeContinue` /
//! `DecodeContinue`: unpadded base64url of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`
//! where the key is relative to the list's key prefix.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.RawURLEncoding` when decoding: no padding, and (not being `Strict`) it
/// ignores non-zero trailing bits.
const GO_RAW_URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);
use serde::{Deserialize, Serialize};

/// Why a continue token was rejected; the text follows `invalid continue token: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TokenError(pub String);

#[derive(Serialize, Deserialize)]
struct Token {
    #[serde(default)]
    v: String,
    #[serde(default)]
    rv: i64,
    #[serde(default)]
    start: String,
}

/// A decoded token: resume after `start_key` (relative to the list prefix) at `rv`
/// (`rv < 0`: at the latest revision, as handed out by an expired-continue 410).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continue {
    pub start_key: String,
    pub rv: i64,
}

/// Encodes a token that resumes right after `last_key` (relative to the prefix).
pub(crate) fn encode(last_key: &str, rv: i64) -> String {
    let mut start = String::with_capacity(last_key.len() + 1);
    start.push_str(last_key);
    start.push('\0');
    encode_start(&start, rv)
}

/// Encodes a token that resumes at `start` (relative to the prefix, used as given).
pub(crate) fn encode_start(start: &str, rv: i64) -> String {
    let start = start.to_string();
    let t = Token {
        v: "meta.k8s.io/v1".to_string(),
        rv,
        start,
    };
    let mut json = Vec::with_capacity(64 + t.start.len());
    // Go's encoder escapes <, >, & (and U+2028/9) as \u00XX; keep the bytes the same.
    let _ = crate::render::to_writer_go(&mut json, &t);
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a token the way `storage.DecodeContinue` does, with its error messages.
pub(crate) fn decode(token: &str) -> Result<Continue, TokenError> {
    const GENERIC: &str = "continue key is not valid";
    let data = GO_RAW_URL
        .decode(token.as_bytes())
        .map_err(|e| TokenError(format!("{GENERIC}: {}", base64_error_text(&e))))?;
    let t: Token = serde_json::from_slice(&data)
        .map_err(|e| TokenError(format!("{GENERIC}: {}", json_error_text(&data, &e))))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(TokenError(format!(
            "{GENERIC} server does not recognize this encoded version {:?}",
            t.v
        )));
    }
    if t.rv == 0 {
        return Err(TokenError(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
                .to_string(),
        ));
    }
    if t.start.is_empty() {
        return Err(TokenError(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
                .to_string(),
        ));
    }
    // Path traversal defence, as upstream: the cleaned key must equal the given one.
    let rooted = if t.start.starts_with('/') {
        t.start.clone()
    } else {
        format!("/{}", t.start)
    };
    if !is_clean_path(&rooted) {
        return Err(TokenError(format!("{GENERIC}: {}", t.start)));
    }
    Ok(Continue {
        start_key: rooted[1..].to_string(),
        rv: t.rv,
    })
}

/// True when Go's `path.Clean` would leave a rooted path unchanged.
fn is_clean_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    if p.ends_with('/') {
        return false;
    }
    p[1..]
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Go's `base64.CorruptInputError` text.
fn base64_error_text(e: &base64::DecodeError) -> String {
    let offset = match e {
        base64::DecodeError::InvalidByte(o, _) => *o,
        base64::DecodeError::InvalidLength(o) => *o,
        base64::DecodeError::InvalidLastSymbol(o, _) => *o,
        base64::DecodeError::InvalidPadding => 0,
    };
    format!("illegal base64 data at input byte {offset}")
}

/// Go's `encoding/json` syntax error text for the cases a client can trigger with garbage;
/// other failures fall back to serde's wording.
fn json_error_text(data: &[u8], e: &serde_json::Error) -> String {
    let first = data
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    match first {
        None => "unexpected end of JSON input".to_string(),
        Some(i) => {
            let c = data[i];
            let starts_value =
                matches!(c, b'{' | b'[' | b'"' | b't' | b'f' | b'n' | b'-') || c.is_ascii_digit();
            if starts_value {
                e.to_string()
            } else {
                format!(
                    "invalid character {} looking for beginning of value",
                    go_quote_char(c)
                )
            }
        }
    }
}

/// `encoding/json.quoteChar`: the byte as a rune, quoted like `strconv.Quote` does.
fn go_quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        0x07 => "'\\a'".to_string(),
        0x08 => "'\\b'".to_string(),
        0x0c => "'\\f'".to_string(),
        b'\n' => "'\\n'".to_string(),
        b'\r' => "'\\r'".to_string(),
        b'\t' => "'\\t'".to_string(),
        0x0b => "'\\v'".to_string(),
        b'\\' => "'\\\\'".to_string(),
        0x20..=0x7e => format!("'{}'", c as char),
        0x00..=0x1f | 0x7f => format!("'\\x{c:02x}'"),
        // U+0080..U+009F are controls and U+00A0/U+00AD are not "printable" for strconv.
        0x80..=0xa0 | 0xad => format!("'\\u{c:04x}'"),
        _ => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_like_the_fixture() {
        // core-v1-events-list-limit5-page1.txt
        assert_eq!(
            encode("fx/fx-app.18ebbf5504672547", 301),
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MzAxLCJzdGFydCI6ImZ4L2Z4LWFwcC4xOGViYmY1NTA0NjcyNTQ3XHUwMDAwIn0"
        );
        // the fresh rv:-1 token of core-v1-events-list-continue-expired-410.txt
        assert_eq!(
            encode("fx/fx-app.18ebbf5504672547", -1),
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0IjoiZngvZngtYXBwLjE4ZWJiZjU1MDQ2NzI1NDdcdTAwMDAifQ"
        );
    }

    #[test]
    fn malformed_token_message_matches_the_fixture() {
        let e = decode("not-a-token").unwrap_err();
        assert_eq!(
            e.0,
            "continue key is not valid: invalid character '\\u009e' looking for beginning of value"
        );
    }

    #[test]
    fn rejects_zero_rv_empty_start_and_traversal() {
        let enc = |j: &str| URL_SAFE_NO_PAD.encode(j);
        assert!(decode(&enc(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a\u0000"}"#)).is_err());
        assert!(decode(&enc(r#"{"v":"meta.k8s.io/v1","rv":5,"start":""}"#)).is_err());
        assert!(
            decode(&enc(
                r#"{"v":"meta.k8s.io/v1","rv":5,"start":"../x\u0000"}"#
            ))
            .is_err()
        );
        assert!(decode(&enc(r#"{"v":"other","rv":5,"start":"a\u0000"}"#)).is_err());
        assert!(decode("%%%").is_err());
    }

    proptest! {
        #[test]
        fn round_trips(ns in "[a-z0-9-]{1,20}", name in "[a-z0-9.-]{1,40}", rv in 1i64..1_000_000_000) {
            let key = format!("{ns}/{name}");
            prop_assume!(is_clean_path(&format!("/{key}")));
            let d = decode(&encode(&key, rv)).unwrap();
            prop_assert_eq!(d.rv, rv);
            prop_assert_eq!(d.start_key, format!("{key}\0"));
        }

        #[test]
        fn decode_never_panics(s in ".{0,80}") {
            let _ = decode(&s);
        }
    }
}
