//! The `modify` filter: Fluent Bit's modify rules (add, set, rename, copy, remove) on a
//! record's normalized fields, with dotted paths into nested fields.
//!
//! # Configuration
//!
//! ```yaml
//! filters:
//!   - name: modify
//!     match: '*'
//!     add: cluster ${CLUSTER}              # one rule
//!     set:                                 # several: a list
//!       - team sre
//!       - labels.env "prod eu"
//!     rename: involved_object.field_path field_path
//!     copy: object.metadata.labels.app app
//!     remove: [action, reporting_instance]
//! ```
//!
//! | key | rule | does |
//! |---|---|---|
//! | `rename` | `OLD NEW` | moves OLD to NEW if OLD exists and NEW does not |
//! | `hard_rename` | `OLD NEW` | moves OLD to NEW if OLD exists, replacing NEW |
//! | `copy` | `FROM TO` | copies FROM to TO if FROM exists and TO does not |
//! | `hard_copy` | `FROM TO` | copies FROM to TO if FROM exists, replacing TO |
//! | `add` | `KEY VALUE` | sets KEY to VALUE if KEY does not exist |
//! | `set` | `KEY VALUE` | sets KEY to VALUE, replacing it |
//! | `remove` | `KEY` | removes KEY |
//! | `remove_wildcard` | `PATTERN` | removes the top-level fields whose names match (`*` = any text) |
//! | `remove_regex` | `REGEX` | removes the top-level fields whose names match the regular expression |
//!
//! Each key takes one rule, or a YAML list of rules. A single value is one rule even if it
//! contains commas.
//!
//! # Semantics
//!
//! - Keys are dotted paths into the normalized fields (`cluster`, `labels.team`,
//!   `involved_object.kind`). Writing creates missing intermediate objects; a rule whose path
//!   runs through a value that is not an object (a string, a list) does nothing. Lists are
//!   read (`user.groups.0`) but never written into.
//! - Values are strings, as in Fluent Bit: `set: count 5` writes `"5"`. A value is everything
//!   after the key; surrounding quotes are removed (`add: note "  spaced "`), and quotes let a
//!   key contain spaces. `${VAR}` expands as everywhere in the configuration.
//! - `copy` (and `hard_copy`) may read from anywhere a record path reaches: the envelope keys
//!   (`copy: tag route`) and the original object (`copy: object.metadata.labels.app app`).
//!   Every other rule reads and writes normalized fields only.
//! - The envelope keys (`id`, `time`, `kind`, `source`, `tag`) and `object` (the original) can
//!   be neither written, renamed nor removed: such a rule is a configuration error. Use the
//!   `redact` filter to remove parts of the original.
//! - Rules run in this order, and in the order written within one key: `rename`,
//!   `hard_rename`, `copy`, `hard_copy`, `add`, `set`, `remove`, `remove_wildcard`,
//!   `remove_regex`. (Fluent Bit runs them in the order they are written across keys; a YAML
//!   mapping does not keep that order, so kubetrail fixes one.)
//! - Names are compared exactly (case-sensitive), as JSON keys are.
//! - A record is never dropped by this filter.

#[cfg(test)]
mod tests;

use kubetrail_core::Record;
use kubetrail_core::config::{ConfigError, Section, Value as ConfigValue};
use kubetrail_core::record::{ENVELOPE_KEYS, ORIGINAL_KEY};
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::pipeline::Filter;

/// Compiled-size limit of a `remove_regex` pattern (matching is linear time in the regex crate;
/// only compilation could be made expensive).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where `copy` reads from.
#[derive(Debug, Clone)]
enum Source {
    /// A normalized field path, read as the rules before it left the fields.
    Field(Vec<String>),
    /// An envelope key or a path into the original, read with [`Record::get_path`].
    Record(String),
}

/// One rule, ready to run.
#[derive(Debug, Clone)]
enum Op {
    Rename {
        from: Vec<String>,
        to: Vec<String>,
        hard: bool,
    },
    Copy {
        from: Source,
        to: Vec<String>,
        hard: bool,
    },
    Put {
        to: Vec<String>,
        value: String,
        overwrite: bool,
    },
    Remove(Vec<String>),
    RemoveWildcard(String),
    RemoveRegex(Regex),
}

/// The `modify` filter.
#[derive(Debug, Clone)]
pub struct Modify {
    ops: Vec<Op>,
}

/// The keys in the order their rules run.
const KEYS: [&str; 9] = [
    "rename",
    "hard_rename",
    "copy",
    "hard_copy",
    "add",
    "set",
    "remove",
    "remove_wildcard",
    "remove_regex",
];

impl Modify {
    /// Reads the rule keys (see the module documentation). Errors name the filter and the key.
    pub fn from_section(section: &mut Section) -> Result<Modify, ConfigError> {
        let mut ops = Vec::new();
        for key in KEYS {
            for text in read_rules(section, key)? {
                let op = parse_op(key, &text)
                    .map_err(|m| section.error(key, format!("rule '{text}': {m}")))?;
                ops.push(op);
            }
        }
        if ops.is_empty() {
            return Err(section.section_error(format!(
                "needs at least one rule: {} (e.g. add: cluster prod-eu)",
                KEYS.join(", ")
            )));
        }
        Ok(Modify { ops })
    }
}

impl Filter for Modify {
    fn apply(&self, record: &mut Record) -> bool {
        // The fields map is moved into a Value (and back) so paths walk one kind of tree.
        let mut root = Value::Object(std::mem::take(&mut *record.fields));
        for op in &self.ops {
            match op {
                Op::Rename { from, to, hard } => {
                    if get(&root, from).is_none() || (!hard && get(&root, to).is_some()) {
                        continue;
                    }
                    if let Some(v) = take(&mut root, from)
                        && let Some(back) = insert(&mut root, to, v, true)
                    {
                        // NEW runs through a non-object: leave OLD where it was.
                        insert(&mut root, from, back, true);
                    }
                }
                Op::Copy { from, to, hard } => {
                    if !hard && get(&root, to).is_some() {
                        continue;
                    }
                    let value = match from {
                        Source::Field(path) => get(&root, path).cloned(),
                        Source::Record(path) => record.get_path(path),
                    };
                    if let Some(v) = value {
                        insert(&mut root, to, v, true);
                    }
                }
                Op::Put {
                    to,
                    value,
                    overwrite,
                } => {
                    insert(&mut root, to, Value::String(value.clone()), *overwrite);
                }
                Op::Remove(path) => {
                    take(&mut root, path);
                }
                Op::RemoveWildcard(pattern) => {
                    if let Value::Object(m) = &mut root {
                        m.retain(|k, _| !wildcard(pattern.as_bytes(), k.as_bytes()));
                    }
                }
                Op::RemoveRegex(re) => {
                    if let Value::Object(m) = &mut root {
                        m.retain(|k, _| !re.is_match(k));
                    }
                }
            }
        }
        if let Value::Object(m) = root {
            record.fields = m.into();
        }
        true
    }
}

/// Reads one rule (a single value, commas included) or a list of rules from `key`.
fn read_rules(section: &mut Section, key: &str) -> Result<Vec<String>, ConfigError> {
    match section.get_value(key) {
        None => Ok(Vec::new()),
        Some(ConfigValue::List(_)) => Ok(section.get_list(key)?.unwrap_or_default()),
        Some(ConfigValue::Map(_)) => {
            Err(section.error(key, "expects a rule or a list of rules, not a map"))
        }
        Some(ConfigValue::Scalar(_)) => Ok(section.get_str(key)?.into_iter().collect()),
    }
}

/// Parses the rule `text` of `key`.
fn parse_op(key: &str, text: &str) -> Result<Op, String> {
    let (first, rest) = split_token(text.trim())?;
    let Some(first) = first else {
        return Err("empty rule".into());
    };
    match key {
        "rename" | "hard_rename" | "copy" | "hard_copy" => {
            let (second, extra) = split_token(rest)?;
            let Some(second) = second else {
                return Err(format!(
                    "expected '{} {}'",
                    if key.contains("copy") { "FROM" } else { "OLD" },
                    if key.contains("copy") { "TO" } else { "NEW" }
                ));
            };
            if !extra.is_empty() {
                return Err(format!(
                    "expected two keys, found more ('{extra}'); quote a key that contains spaces"
                ));
            }
            let to = writable_path(&second, "written")?;
            let hard = key.starts_with("hard_");
            if key.ends_with("rename") {
                let from = writable_path(&first, "renamed")?;
                Ok(Op::Rename { from, to, hard })
            } else {
                let path = split_path(&first)?;
                let from = if ENVELOPE_KEYS.contains(&path[0].as_str()) || path[0] == ORIGINAL_KEY {
                    Source::Record(first)
                } else {
                    Source::Field(path)
                };
                Ok(Op::Copy { from, to, hard })
            }
        }
        "add" | "set" => {
            if rest.is_empty() {
                return Err("missing value (expected 'KEY VALUE')".into());
            }
            let to = writable_path(&first, "written")?;
            Ok(Op::Put {
                to,
                value: unquote(rest).to_string(),
                overwrite: key == "set",
            })
        }
        "remove" => {
            if !rest.is_empty() {
                return Err(format!(
                    "expected one key, found more ('{rest}'); use a list for several"
                ));
            }
            Ok(Op::Remove(writable_path(&first, "removed")?))
        }
        "remove_wildcard" => {
            if !rest.is_empty() {
                return Err(format!("expected one pattern, found more ('{rest}')"));
            }
            Ok(Op::RemoveWildcard(first))
        }
        _ => {
            // remove_regex: the whole text is the pattern.
            let pattern = text.trim();
            RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Op::RemoveRegex)
                .map_err(|e| format!("invalid regular expression: {e}"))
        }
    }
}

/// Splits off the first token (quoted with `"` or `'`, or up to whitespace); the rest is
/// trimmed. `None` for empty input.
fn split_token(s: &str) -> Result<(Option<String>, &str), String> {
    let s = s.trim_start();
    let Some(c) = s.chars().next() else {
        return Ok((None, ""));
    };
    if c == '"' || c == '\'' {
        let body = &s[1..];
        let end = body
            .find(c)
            .ok_or_else(|| format!("unterminated quote in '{s}'"))?;
        return Ok((Some(body[..end].to_string()), body[end + 1..].trim()));
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Ok((Some(s[..end].to_string()), s[end..].trim()))
}

/// Removes one pair of matching surrounding quotes, if present.
fn unquote(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

fn split_path(key: &str) -> Result<Vec<String>, String> {
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("invalid key '{key}': empty part"));
    }
    Ok(path)
}

/// A path into the normalized fields that a rule may change (`what`: how it changes it).
fn writable_path(key: &str, what: &str) -> Result<Vec<String>, String> {
    let path = split_path(key)?;
    let first = path[0].as_str();
    if ENVELOPE_KEYS.contains(&first) {
        return Err(format!(
            "'{key}': the envelope keys ({}) cannot be {what}",
            ENVELOPE_KEYS.join(", ")
        ));
    }
    if first == ORIGINAL_KEY {
        return Err(format!(
            "'{key}': the original object cannot be {what} by modify (the redact filter removes parts of it)"
        ));
    }
    Ok(path)
}

fn get<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for p in path {
        v = match v {
            Value::Object(m) => m.get(p.as_str())?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The object that holds the last segment of `path`, if every step is an object.
fn parent_mut<'v>(mut v: &'v mut Value, path: &[String]) -> Option<&'v mut Map<String, Value>> {
    let (_, parents) = path.split_last()?;
    for p in parents {
        v = v.as_object_mut()?.get_mut(p.as_str())?;
    }
    v.as_object_mut()
}

/// Removes and returns the value at `path` (objects only).
fn take(root: &mut Value, path: &[String]) -> Option<Value> {
    let last = path.last()?;
    parent_mut(root, path)?.remove(last.as_str())
}

/// Puts `value` at `path`, creating missing intermediate objects. Gives the value back when it
/// cannot be placed: the path runs through a non-object, or the key exists and `overwrite` is
/// off.
fn insert(root: &mut Value, path: &[String], value: Value, overwrite: bool) -> Option<Value> {
    let Some((last, parents)) = path.split_last() else {
        return Some(value);
    };
    let mut v = root;
    for p in parents {
        let Some(m) = v.as_object_mut() else {
            return Some(value);
        };
        v = m
            .entry(p.as_str())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Some(m) = v.as_object_mut() else {
        return Some(value);
    };
    if !overwrite && m.contains_key(last.as_str()) {
        return Some(value);
    }
    m.insert(last.clone(), value);
    None
}

/// Glob with `*` only (any run of characters), iterative with one backtrack point, so it is
/// linear in practice whatever the pattern.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}
