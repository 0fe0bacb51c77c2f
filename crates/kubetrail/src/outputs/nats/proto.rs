//! The NATS client protocol, the part this output speaks: parsing what a server sends (`INFO`,
//! `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`) and encoding what the client sends
//! (`CONNECT`, `PING`, `PONG`, `SUB`, `PUB`, `HPUB`).
//!
//! The parser works on a buffer that may hold a partial operation (it then asks for more) and
//! never trusts a length from the wire beyond its limits, so a broken or hostile server can
//! neither crash the output nor make it buffer without bound.

use serde::{Deserialize, Serialize};

/// What the parser accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest control line (an `INFO` line with a long cluster URL list included).
    pub max_line: usize,
    /// The largest message payload (headers included).
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_payload: 8 * 1024 * 1024,
        }
    }
}

/// A message delivered to one of our subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg<'a> {
    pub subject: &'a str,
    pub sid: &'a str,
    pub reply: Option<&'a str>,
    /// The header block (`NATS/1.0 ...\r\n...\r\n\r\n`) of an `HMSG`.
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// One operation sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// The server's `INFO` JSON.
    Info(&'a [u8]),
    Msg(Msg<'a>),
    Ping,
    Pong,
    Ok,
    /// The error text, without its quotes.
    Err(&'a str),
}

/// A protocol violation by the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("protocol line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("unknown protocol operation: {0:?}")]
    UnknownOp(String),
    #[error("malformed {op} line: {line:?}")]
    Malformed { op: &'static str, line: String },
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooBig { size: usize, limit: usize },
}

fn malformed(op: &'static str, line: &[u8]) -> ProtoError {
    let line = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    ProtoError::Malformed { op, line }
}

/// Parses one operation from the start of `buf`. `Ok(None)`: more bytes are needed.
/// `Ok(Some((op, n)))`: `op` used the first `n` bytes.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(ServerOp<'a>, usize)>, ProtoError> {
    let Some(eol) = memchr::memmem::find(&buf[..buf.len().min(limits.max_line + 2)], b"\r\n")
    else {
        if buf.len() > limits.max_line {
            return Err(ProtoError::LineTooLong(limits.max_line));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let (op, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let is = |name: &str| op.eq_ignore_ascii_case(name.as_bytes());
    let simple = |o: ServerOp<'static>, name: &'static str| {
        if rest.iter().all(|b| b.is_ascii_whitespace()) {
            Ok(Some((o, after)))
        } else {
            Err(malformed(name, line))
        }
    };
    if is("MSG") || is("HMSG") {
        let hmsg = is("HMSG");
        let name = if hmsg { "HMSG" } else { "MSG" };
        let text = std::str::from_utf8(rest).map_err(|_| malformed(name, line))?;
        let args: Vec<&str> = text.split([' ', '\t']).filter(|a| !a.is_empty()).collect();
        let nsizes = if hmsg { 2 } else { 1 };
        if args.len() != 2 + nsizes && args.len() != 3 + nsizes {
            return Err(malformed(name, line));
        }
        let num = |s: &str| s.parse::<usize>().map_err(|_| malformed(name, line));
        let total = num(args[args.len() - 1])?;
        let hdr = if hmsg { num(args[args.len() - 2])? } else { 0 };
        if hdr > total {
            return Err(malformed(name, line));
        }
        if total > limits.max_payload {
            return Err(ProtoError::TooBig {
                size: total,
                limit: limits.max_payload,
            });
        }
        let reply = (args.len() == 3 + nsizes).then(|| args[2]);
        let end = after + total;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(malformed(name, line));
        }
        let body = &buf[after..end];
        let msg = Msg {
            subject: args[0],
            sid: args[1],
            reply,
            headers: hmsg.then(|| &body[..hdr]),
            payload: &body[hdr..],
        };
        return Ok(Some((ServerOp::Msg(msg), end + 2)));
    }
    if is("PING") {
        return simple(ServerOp::Ping, "PING");
    }
    if is("PONG") {
        return simple(ServerOp::Pong, "PONG");
    }
    if is("+OK") {
        return simple(ServerOp::Ok, "+OK");
    }
    if is("INFO") {
        return Ok(Some((ServerOp::Info(trim(rest)), after)));
    }
    if is("-ERR") {
        let text = std::str::from_utf8(trim(rest)).map_err(|_| malformed("-ERR", line))?;
        let text = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(text);
        return Ok(Some((ServerOp::Err(text), after)));
    }
    Err(ProtoError::UnknownOp(
        String::from_utf8_lossy(&op[..op.len().min(32)]).into_owned(),
    ))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// The status code of a header block (`NATS/1.0 503` is "no responders").
pub fn status(headers: &[u8]) -> Option<u16> {
    let first = headers.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(first).ok()?.trim();
    let rest = text.strip_prefix("NATS/1.0")?.trim_start();
    rest.split_whitespace().next()?.parse().ok()
}

/// The fields of the server's `INFO` this client uses.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub version: String,
    pub max_payload: usize,
    pub headers: bool,
    pub tls_required: bool,
    pub tls_available: bool,
    pub auth_required: bool,
    pub jetstream: bool,
}

/// The `CONNECT` options.
#[derive(Debug, Serialize)]
pub struct Connect<'a> {
    pub verbose: bool,
    pub pedantic: bool,
    pub tls_required: bool,
    pub name: &'a str,
    pub lang: &'a str,
    pub version: &'a str,
    pub protocol: u8,
    pub headers: bool,
    pub no_responders: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<&'a str>,
}

/// Appends `CONNECT {...}\r\n`.
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    out.extend_from_slice(b"CONNECT ");
    // Serializing plain strings and booleans into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, c);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB <subject> <sid>\r\n`.
pub fn sub(out: &mut Vec<u8>, subject: &str, sid: &str) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// Appends `PUB <subject> <reply> <len>\r\n<payload>\r\n`.
pub fn publish(out: &mut Vec<u8>, subject: &str, reply: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends an `HPUB` with the given headers (name, value). Values must not hold CR or LF
/// (see [`header_value`]).
pub fn hpub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) {
    let hdr_len = "NATS/1.0\r\n".len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2;
    let total = hdr_len + payload.len();
    out.extend_from_slice(
        format!("HPUB {subject} {reply} {hdr_len} {total}\r\nNATS/1.0\r\n").as_bytes(),
    );
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The size on the wire of an `HPUB`'s headers plus payload (what `max_payload` limits).
pub fn hpub_size(headers: &[(&str, &str)], payload_len: usize) -> usize {
    "NATS/1.0\r\n".len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2
        + payload_len
}

/// A header value made safe: CR and LF become spaces, surrounding spaces go.
pub fn header_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\r', '\n']) || v.trim() != v {
        std::borrow::Cow::Owned(v.replace(['\r', '\n'], " ").trim().to_string())
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(buf: &[u8]) -> Result<Vec<ServerOp<'_>>, ProtoError> {
        let mut ops = Vec::new();
        let mut at = 0;
        while let Some((op, n)) = parse(&buf[at..], &Limits::default())? {
            ops.push(op);
            at += n;
        }
        Ok(ops)
    }

    #[test]
    fn parses_server_operations() {
        let buf = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576,\"headers\":true,\"jetstream\":true}\r\n\
PING\r\npong\r\n+OK\r\n-ERR 'Authorization Violation'\r\n\
MSG _INBOX.a.1 1 11\r\n{\"seq\":1}\r\n\r\n\
HMSG _INBOX.a.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
MSG x 1 reply.to 0\r\n\r\n";
        let ops = all(buf).unwrap();
        assert_eq!(ops.len(), 8);
        let ServerOp::Info(json) = &ops[0] else {
            panic!()
        };
        let info: ServerInfo = serde_json::from_slice(json).unwrap();
        assert!(info.headers && info.jetstream && info.max_payload == 1 << 20);
        assert_eq!(&ops[1..4], &[ServerOp::Ping, ServerOp::Pong, ServerOp::Ok]);
        assert_eq!(ops[4], ServerOp::Err("Authorization Violation"));
        assert_eq!(
            ops[5],
            ServerOp::Msg(Msg {
                subject: "_INBOX.a.1",
                sid: "1",
                reply: None,
                headers: None,
                payload: b"{\"seq\":1}\r\n"
            })
        );
        let ServerOp::Msg(m) = &ops[6] else { panic!() };
        assert_eq!(
            (m.payload, m.headers.map(status)),
            (&b""[..], Some(Some(503)))
        );
        let ServerOp::Msg(m) = &ops[7] else { panic!() };
        assert_eq!(m.reply, Some("reply.to"));
    }

    #[test]
    fn partial_input_asks_for_more_and_bad_input_is_an_error() {
        assert_eq!(parse(b"MSG a 1 5\r\nab", &Limits::default()), Ok(None));
        assert_eq!(parse(b"PIN", &Limits::default()), Ok(None));
        assert!(matches!(
            parse(b"MSG a 1 2\r\nabcd\r\n", &Limits::default()),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"HMSG a 1 9 2\r\n", &Limits::default()),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"MSG a 1 -1\r\n", &Limits::default()),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"WAT\r\n", &Limits::default()),
            Err(ProtoError::UnknownOp(_))
        ));
        let small = Limits {
            max_line: 12,
            max_payload: 4,
        };
        assert_eq!(
            parse(b"INFO {xxxxxxxxxxxxx", &small),
            Err(ProtoError::LineTooLong(12))
        );
        assert!(matches!(
            parse(b"MSG a 1 5\r\n", &small),
            Err(ProtoError::TooBig { .. })
        ));
    }

    #[test]
    fn encodes_client_operations() {
        let mut out = Vec::new();
        hpub(
            &mut out,
            "k.a",
            "_INBOX.x.1",
            &[("Nats-Msg-Id", "u:1")],
            b"{}",
        );
        assert_eq!(
            out,
            b"HPUB k.a _INBOX.x.1 30 32\r\nNATS/1.0\r\nNats-Msg-Id: u:1\r\n\r\n{}\r\n"
        );
        assert_eq!(hpub_size(&[("Nats-Msg-Id", "u:1")], 2), 32);
        out.clear();
        publish(&mut out, "$JS.API.STREAM.INFO.S", "_INBOX.x.2", b"");
        assert_eq!(out, b"PUB $JS.API.STREAM.INFO.S _INBOX.x.2 0\r\n\r\n");
        out.clear();
        connect(
            &mut out,
            &Connect {
                verbose: false,
                pedantic: false,
                tls_required: false,
                name: "kubetrail",
                lang: "rust",
                version: "1",
                protocol: 1,
                headers: true,
                no_responders: true,
                user: Some("u"),
                pass: Some("p"),
                auth_token: None,
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("CONNECT {")
                && text.ends_with("}\r\n")
                && text.contains("\"pass\":\"p\"")
                && !text.contains("auth_token")
        );
        assert_eq!(header_value("a\r\nb "), "a  b");
    }

    fn encode(op: &ServerOp<'_>, out: &mut Vec<u8>) {
        match op {
            ServerOp::Info(j) => {
                out.extend_from_slice(b"INFO ");
                out.extend_from_slice(j);
                out.extend_from_slice(b"\r\n");
            }
            ServerOp::Ping => out.extend_from_slice(b"PING\r\n"),
            ServerOp::Pong => out.extend_from_slice(b"PONG\r\n"),
            ServerOp::Ok => out.extend_from_slice(b"+OK\r\n"),
            ServerOp::Err(e) => out.extend_from_slice(format!("-ERR '{e}'\r\n").as_bytes()),
            ServerOp::Msg(m) => {
                let reply = m.reply.map(|r| format!(" {r}")).unwrap_or_default();
                match m.headers {
                    Some(h) => {
                        let total = h.len() + m.payload.len();
                        out.extend_from_slice(
                            format!(
                                "HMSG {} {}{reply} {} {total}\r\n",
                                m.subject,
                                m.sid,
                                h.len()
                            )
                            .as_bytes(),
                        );
                        out.extend_from_slice(h);
                    }
                    None => out.extend_from_slice(
                        format!("MSG {} {}{reply} {}\r\n", m.subject, m.sid, m.payload.len())
                            .as_bytes(),
                    ),
                }
                out.extend_from_slice(m.payload);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_$.]{1,20}"
    }

    /// (which operation, subject, sid, reply, headers, payload)
    type OpParts = (u8, String, String, Option<String>, Option<Vec<u8>>, Vec<u8>);

    fn op() -> impl Strategy<Value = OpParts> {
        (
            0u8..6,
            token(),
            token(),
            proptest::option::of(token()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
    }

    proptest! {
        /// Arbitrary bytes never panic the parser, and a parsed operation never claims more
        /// bytes than there are.
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, n))) = parse(&buf, &Limits::default()) {
                prop_assert!(n <= buf.len());
            }
        }

        /// Whatever the server sends, split anywhere across reads, parses back to the same
        /// operations.
        #[test]
        fn round_trips_across_any_split(ops in proptest::collection::vec(op(), 1..12), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let owned: Vec<ServerOp<'_>> = ops.iter().map(|(k, subject, sid, reply, headers, payload)| match k {
                0 => ServerOp::Ping,
                1 => ServerOp::Pong,
                2 => ServerOp::Ok,
                3 => ServerOp::Err(subject.as_str()),
                4 => ServerOp::Info(sid.as_bytes()),
                _ => ServerOp::Msg(Msg { subject, sid, reply: reply.as_deref(), headers: headers.as_deref(), payload }),
            }).collect();
            let mut wire = Vec::new();
            for o in &owned {
                encode(o, &mut wire);
            }
            // Feed the wire in pieces, as reads would deliver it.
            let mut cut_points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            cut_points.push(wire.len());
            cut_points.sort_unstable();
            let mut buf: Vec<u8> = Vec::new();
            let mut fed = 0;
            let mut parsed: Vec<String> = Vec::new();
            for cut in cut_points {
                buf.extend_from_slice(&wire[fed..cut]);
                fed = cut;
                while let Some((op, n)) = parse(&buf, &Limits::default()).unwrap() {
                    parsed.push(format!("{op:?}"));
                    buf.drain(..n);
                }
            }
            let want: Vec<String> = owned.iter().map(|o| format!("{o:?}")).collect();
            prop_assert_eq!(parsed, want);
            prop_assert!(buf.is_empty());
        }
    }
}
