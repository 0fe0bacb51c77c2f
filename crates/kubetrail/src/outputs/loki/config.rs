//! The `loki` output's options: labels (static ones and ones taken from record fields),
//! structured metadata, keys removed from the line, the line format and the tenant.

use http::HeaderValue;
use kubetrail_core::config::{ConfigError, Section};

use crate::outputs::http_common::{EndpointDefaults, HttpSender, HttpSettings};

/// The endpoint defaults of Fluent Bit's `loki` output.
pub const DEFAULTS: EndpointDefaults = EndpointDefaults {
    port: 3100,
    path_key: "uri",
    path: "/loki/api/v1/push",
};

/// The default `label_keys`: low-cardinality fields every record has (or, for `cluster`, has
/// when a `modify` filter adds it). `namespace` falls back to an audit event's object.
pub const DEFAULT_LABEL_KEYS: &[&str] = &[
    "cluster",
    "kind",
    "namespace=namespace|object_ref.namespace",
    "source",
];

/// A record field path: `involved_object.kind`, `$kind`, or Fluent Bit's record accessor
/// `$object['metadata']['labels']['app.kubernetes.io/name']` (for keys with dots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub Vec<String>);

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let t = text.trim();
        let t = t.strip_prefix('$').unwrap_or(t);
        let mut segs = Vec::new();
        let mut cur = String::new();
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '.' => segs.push(std::mem::take(&mut cur)),
                '[' => {
                    if !cur.is_empty() {
                        segs.push(std::mem::take(&mut cur));
                    }
                    let quote = match chars.next() {
                        Some(q @ ('\'' | '"')) => q,
                        _ => return Err(format!("'{text}': expected a quote after '['")),
                    };
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some(c) if c == quote => break,
                            Some(c) => key.push(c),
                            None => return Err(format!("'{text}': unterminated quote")),
                        }
                    }
                    if chars.next() != Some(']') {
                        return Err(format!("'{text}': expected ']'"));
                    }
                    segs.push(key);
                    // A '.' after ']' is optional.
                    if chars.peek() == Some(&'.') {
                        chars.next();
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() || segs.is_empty() {
            segs.push(cur);
        }
        if segs.iter().any(|s| s.is_empty()) {
            return Err(format!("'{text}' is not a field path"));
        }
        Ok(FieldPath(segs))
    }

    /// The value at this path (object keys; array indexes as numbers).
    pub fn lookup<'a>(&self, v: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut v = v;
        for seg in &self.0 {
            v = match v {
                serde_json::Value::Object(m) => m.get(seg)?,
                serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Removes the value at this path; true if it was there.
    pub fn remove(&self, v: &mut serde_json::Value) -> bool {
        let Some((last, parents)) = self.0.split_last() else {
            return false;
        };
        let mut v = v;
        for seg in parents {
            v = match v {
                serde_json::Value::Object(m) => match m.get_mut(seg) {
                    Some(x) => x,
                    None => return false,
                },
                _ => return false,
            };
        }
        match v {
            serde_json::Value::Object(m) => m.remove(last).is_some(),
            _ => false,
        }
    }

    /// A label name made from the path (`involved_object.kind` → `involved_object_kind`).
    pub fn label_name(&self) -> String {
        sanitize_name(&self.0.join("_"))
    }
}

/// Where a label's (or a structured metadata entry's) value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Static(String),
    /// The first of these fields the record has.
    Field(Vec<FieldPath>),
}

/// A label or structured metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub name: String,
    pub source: ValueSource,
}

/// How the log line is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `json` (default): the record as one JSON line.
    Json,
    /// `key_value`: `key=value` for each top-level key, strings quoted when needed.
    KeyValue,
}

/// The `loki` output's own settings.
#[derive(Debug, Clone)]
pub struct LokiConfig {
    /// The push path (`uri`, or the path of `url`; default `/loki/api/v1/push`).
    pub path: String,
    /// `labels` and `label_keys`, in that order.
    pub labels: Vec<Pair>,
    /// `structured_metadata`.
    pub structured_metadata: Vec<Pair>,
    /// `remove_keys`: fields left out of the line.
    pub remove_keys: Vec<FieldPath>,
    /// `line_format`.
    pub line_format: LineFormat,
}

/// A Loki (Prometheus) label name: `[a-zA-Z_][a-zA-Z0-9_]*`; other characters become `_`.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn field_source(s: &Section, key: &str, text: &str) -> Result<Vec<FieldPath>, ConfigError> {
    text.split('|')
        .map(|p| FieldPath::parse(p).map_err(|m| s.error(key, m)))
        .collect()
}

/// `labels` / `structured_metadata` entries: `name=value` (static), `name=$field`, `$field`.
fn pairs(s: &mut Section, key: &str, entries: &[String]) -> Result<Vec<Pair>, ConfigError> {
    let mut out = Vec::new();
    for e in entries {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        let pair = match e.split_once('=') {
            Some((name, value)) => {
                let value = value.trim();
                let source = if value.starts_with('$') {
                    ValueSource::Field(field_source(s, key, value)?)
                } else {
                    ValueSource::Static(value.to_string())
                };
                Pair {
                    name: name.trim().to_string(),
                    source,
                }
            }
            None if e.starts_with('$') => {
                let paths = field_source(s, key, e)?;
                Pair {
                    name: paths[0].label_name(),
                    source: ValueSource::Field(paths),
                }
            }
            None => {
                return Err(s.error(
                    key,
                    format!("'{e}': expected name=value, name=$field or $field"),
                ));
            }
        };
        out.push(pair);
    }
    Ok(out)
}

/// `label_keys` entries: `field`, `$field`, `name=field` (alternatives with `|`).
fn label_keys(s: &mut Section, entries: &[String]) -> Result<Vec<Pair>, ConfigError> {
    let mut out = Vec::new();
    for e in entries {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        let (name, paths) = match e.split_once('=') {
            Some((n, p)) => (
                Some(n.trim().to_string()),
                field_source(s, "label_keys", p)?,
            ),
            None => (None, field_source(s, "label_keys", e)?),
        };
        let name = name.unwrap_or_else(|| paths[0].label_name());
        out.push(Pair {
            name,
            source: ValueSource::Field(paths),
        });
    }
    Ok(out)
}

fn check_names(s: &Section, key: &str, pairs: &[Pair]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for p in pairs {
        if p.name.is_empty() || sanitize_name(&p.name) != p.name {
            return Err(s.error(
                key,
                format!(
                    "'{}' is not a label name (letters, digits and '_'; not first a digit)",
                    p.name
                ),
            ));
        }
        if p.name.starts_with("__") {
            return Err(s.error(
                key,
                format!(
                    "'{}': names starting with '__' are reserved by Loki",
                    p.name
                ),
            ));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(s.error(key, format!("the name '{}' is given twice", p.name)));
        }
    }
    Ok(())
}

impl LokiConfig {
    /// Reads the shared HTTP options, `tenant_id`, `labels` (default `job=kubetrail`),
    /// `label_keys` (default [`DEFAULT_LABEL_KEYS`]), `structured_metadata`, `remove_keys`
    /// and `line_format`; builds the client.
    pub fn from_section(s: &mut Section) -> Result<(HttpSender, LokiConfig), ConfigError> {
        let mut settings = HttpSettings::from_section(s, DEFAULTS)?;
        if let Some(t) = s
            .get_str("tenant_id")?
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            let v = HeaderValue::from_str(&t)
                .map_err(|_| s.error("tenant_id", "cannot be sent in a header"))?;
            settings.headers.insert("x-scope-orgid", v);
        }
        let static_labels = s
            .get_list("labels")?
            .unwrap_or_else(|| vec!["job=kubetrail".to_string()]);
        let mut labels = pairs(s, "labels", &static_labels)?;
        let keys = s
            .get_list("label_keys")?
            .unwrap_or_else(|| DEFAULT_LABEL_KEYS.iter().map(|k| k.to_string()).collect());
        labels.extend(label_keys(s, &keys)?);
        check_names(s, "labels", &labels)?;
        if labels.is_empty() {
            return Err(s.error(
                "labels",
                "Loki needs at least one label (labels or label_keys)",
            ));
        }
        let sm = s.get_list("structured_metadata")?.unwrap_or_default();
        let structured_metadata = pairs(s, "structured_metadata", &sm)?;
        check_names(s, "structured_metadata", &structured_metadata)?;
        let remove_keys = s
            .get_list("remove_keys")?
            .unwrap_or_default()
            .iter()
            .map(|k| FieldPath::parse(k).map_err(|m| s.error("remove_keys", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let line_format = match s.get_choice("line_format", &["json", "key_value"])? {
            Some("key_value") => LineFormat::KeyValue,
            _ => LineFormat::Json,
        };
        let path = if settings.path.is_empty() {
            DEFAULTS.path.to_string()
        } else {
            settings.path.clone()
        };
        let sender = HttpSender::new(settings).map_err(|e| s.section_error(e.to_string()))?;
        Ok((
            sender,
            LokiConfig {
                path,
                labels,
                structured_metadata,
                remove_keys,
                line_format,
            },
        ))
    }
}
