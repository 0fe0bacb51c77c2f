//! The `url` option of the `nats` output: `nats://[user:password@|token@]host[:port]` (or
//! `tls://`, or no scheme), several separated by commas, each tried in turn.

/// One server address from `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `tls://` scheme.
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials from the URL are never shown.
        write!(
            f,
            "{}:{}{}",
            self.host,
            self.port,
            if self.tls { " (tls)" } else { "" }
        )
    }
}

impl Endpoint {
    /// Parses `nats://[user:password@|token@]host[:port]` (also `tls://`, or no scheme), several
    /// separated by commas. The default port is 4222.
    pub fn parse_list(s: &str) -> Result<Vec<Endpoint>, String> {
        let list: Vec<Endpoint> = s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err("no server address given".into());
        }
        Ok(list)
    }

    fn parse(u: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match u.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "nats" => (false, rest),
                "tls" => (true, rest),
                other => {
                    return Err(format!(
                        "unsupported scheme '{other}' (use nats:// or tls://)"
                    ));
                }
            },
            None => (false, u),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((ui, hp)) => (Some(ui), hp),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address is missing its ']'")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!("'{hostport}' has no valid host"));
        }
        let port = match port {
            None => 4222,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{p}' is not a port"))?,
        };
        let (user, password, token) = match userinfo {
            None => (None, None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p)), None),
                None => (None, None, Some(percent_decode(ui))),
            },
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
            user,
            password,
            token,
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address as the client takes it, without the credentials (they go to the
    /// connection options, so they never appear in the client's own logs).
    pub fn server_url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://{}", self.addr())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let l = Endpoint::parse_list(
            "nats://127.0.0.1:4223, tls://u%40x:p%3Aw@nats.example, tok@[::1]:5000,host",
        )
        .unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(
            (l[0].host.as_str(), l[0].port, l[0].tls),
            ("127.0.0.1", 4223, false)
        );
        assert_eq!(
            (l[1].host.as_str(), l[1].port, l[1].tls),
            ("nats.example", 4222, true)
        );
        assert_eq!(
            (l[1].user.as_deref(), l[1].password.as_deref()),
            (Some("u@x"), Some("p:w"))
        );
        assert_eq!(
            (l[2].host.as_str(), l[2].token.as_deref(), l[2].addr()),
            ("::1", Some("tok"), "[::1]:5000".to_string())
        );
        assert_eq!(l[3].port, 4222);
        assert!(!format!("{:?}", l[1]).contains("p:w"));
        assert_eq!(l[1].server_url(), "tls://nats.example:4222");
        assert_eq!(l[2].server_url(), "nats://[::1]:5000");
        for bad in [
            "",
            "http://x",
            "nats://:4222",
            "nats://h:0",
            "nats://h:x",
            "nats://[::1",
        ] {
            assert!(Endpoint::parse_list(bad).is_err(), "{bad}");
        }
    }
}
