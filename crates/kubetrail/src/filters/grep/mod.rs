//! The `grep` filter: keeps or drops records by the values of their fields, accepting Fluent
//! Bit's `regex` / `exclude` rules and kubetrail's richer comparisons.
//!
//! # Configuration
//!
//! ```yaml
//! filters:
//!   - name: grep
//!     match: k8s.*
//!     exclude: type Normal                 # Fluent Bit form: KEY REGEX
//!   - name: grep
//!     match: k8s.audit
//!     logical_op: and
//!     exclude:                             # several rules: a list
//!       - user.username == system:apiserver
//!       - verb == watch
//!   - name: grep
//!     match: k8s.audit
//!     include:
//!       - stage != RequestReceived
//!       - response_code >= 400
//! ```
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `regex` | rule or list of rules | Fluent Bit's name for `include` |
//! | `include` | rule or list of rules | keep a record only if these rules match (see `logical_op`) |
//! | `exclude` | rule or list of rules | drop a record if these rules match (see `logical_op`) |
//! | `logical_op` | `legacy` (default), `and`, `or` | how the rules of one list combine |
//!
//! A single value is one rule (commas inside it are part of the rule); a YAML list holds
//! several. At least one rule is required.
//!
//! # Rules
//!
//! A rule is `PATH OPERATOR VALUE`, or Fluent Bit's `KEY REGEX`:
//!
//! | rule | holds when the value at PATH... |
//! |---|---|
//! | `type == Warning` | equals the text (compared as text: `response_code == 404` works) |
//! | `stage != RequestReceived` | does not equal it (also when PATH is absent) |
//! | `verb in (watch, list)` | is one of the listed values |
//! | `verb notin (get)` | is none of them (also when PATH is absent) |
//! | `user.username =~ ^system:` | matches the regular expression (unanchored search) |
//! | `reason !~ ^Back` | does not match it (also when PATH is absent) |
//! | `response_code >= 400` (`>`, `<`, `<=`) | is a number (or a string holding one) in that relation |
//! | `object_ref.resource exists` | is present and not `null` |
//! | `object_ref.resource missing` | is absent or `null` |
//! | `type Normal` (Fluent Bit) | matches the regular expression `Normal` |
//!
//! - PATH is dotted: a normalized field (`reason`, `involved_object.kind`, `user.groups`), an
//!   envelope key (`id`, `time`, `kind`, `source`, `tag`), or a place inside the original
//!   object (`object.objectRef.resource`, `object.metadata.labels.app`); a number indexes a
//!   list (`user.groups.0`). Fluent Bit's record accessor works too: `$user['username']`.
//! - The second word decides the form: if it is an operator, the rule is `PATH OP VALUE`;
//!   otherwise the rest of the line after the key is a Fluent Bit regular expression. To match
//!   a regular expression that starts with an operator word, write `PATH =~ REGEX`.
//! - Values of `==`, `!=` and list items may be quoted (`reason == "Back Off"`,
//!   `reason in ("a,b", c)`); the quotes are removed. Regular expressions are taken as
//!   written, quotes included, and compiled once with size limits (the regex crate matches in
//!   linear time, so no pattern can make matching slow).
//! - Text comparisons and regular expressions see strings as they are, numbers as JSON writes
//!   them and booleans as `true`/`false`; objects and `null` never match. A list (such as
//!   `user.groups` or `source_ips`) matches a positive test (`==`, `in`, `=~`, `>`...) when
//!   any of its elements does. The negative tests (`!=`, `notin`, `!~`) are exactly the
//!   negation of the positive ones.
//!
//! # How rules combine
//!
//! `include` (with `regex`) and `exclude` are two lists. A record is kept when the include
//! list passes and the exclude list does not fire:
//!
//! | `logical_op` | include passes when | exclude fires when |
//! |---|---|---|
//! | `legacy` (default) | every rule matches | any rule matches |
//! | `and` | every rule matches | every rule matches |
//! | `or` | any rule matches | any rule matches |
//!
//! An empty list passes (include) or never fires (exclude). This is Fluent Bit's documented
//! behaviour; where Fluent Bit refuses to mix `regex` and `exclude` under `and`/`or`, kubetrail
//! accepts both lists, each combined as the table says. (Fluent Bit's legacy mode also stops
//! at the first matching `regex` rule, which makes it depend on rule order; kubetrail does
//! not.)

mod rule;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cell::OnceCell;

use kubetrail_core::config::{ConfigError, Section, Value as ConfigValue};
use kubetrail_core::record::{ENVELOPE_KEYS, ORIGINAL_KEY};
use kubetrail_core::{Original, Record};
use serde_json::Value;

use crate::pipeline::Filter;
use rule::{Rule, parse_rule};

/// How the rules of one list combine (`logical_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogicalOp {
    /// Fluent Bit's default: include rules all must match, any exclude rule drops.
    Legacy,
    And,
    Or,
}

/// The `grep` filter.
#[derive(Debug, Clone)]
pub struct Grep {
    include: Vec<Rule>,
    exclude: Vec<Rule>,
    op: LogicalOp,
}

impl Grep {
    /// Reads `regex`, `include`, `exclude` and `logical_op`. Errors name the filter and the key.
    pub fn from_section(section: &mut Section) -> Result<Grep, ConfigError> {
        let op = match section.get_choice("logical_op", &["legacy", "and", "or"])? {
            Some("and") => LogicalOp::And,
            Some("or") => LogicalOp::Or,
            _ => LogicalOp::Legacy,
        };
        let mut include = read_rules(section, "regex")?;
        include.extend(read_rules(section, "include")?);
        let exclude = read_rules(section, "exclude")?;
        if include.is_empty() && exclude.is_empty() {
            return Err(section.section_error(
                "needs at least one rule: 'include' (or Fluent Bit's 'regex') keeps matching \
                 records, 'exclude' drops them (e.g. exclude: type Normal)",
            ));
        }
        Ok(Grep {
            include,
            exclude,
            op,
        })
    }

    /// Whether the record passes (the decision [`Filter::apply`] returns).
    fn keep(&self, record: &Record) -> bool {
        let view = View::new(record);
        let holds = |r: &Rule| r.matches(view.get(&r.path).as_deref());
        let include_ok = self.include.is_empty()
            || match self.op {
                LogicalOp::Or => self.include.iter().any(holds),
                LogicalOp::And | LogicalOp::Legacy => self.include.iter().all(holds),
            };
        if !include_ok {
            return false;
        }
        let exclude_fires = !self.exclude.is_empty()
            && match self.op {
                LogicalOp::And => self.exclude.iter().all(holds),
                LogicalOp::Or | LogicalOp::Legacy => self.exclude.iter().any(holds),
            };
        !exclude_fires
    }
}

impl Filter for Grep {
    fn apply(&self, record: &mut Record) -> bool {
        self.keep(record)
    }
}

/// Reads one rule (a single value, commas included) or a list of rules from `key`.
fn read_rules(section: &mut Section, key: &str) -> Result<Vec<Rule>, ConfigError> {
    let texts: Vec<String> = match section.get_value(key) {
        None => return Ok(Vec::new()),
        Some(ConfigValue::List(_)) => section.get_list(key)?.unwrap_or_default(),
        Some(ConfigValue::Map(_)) => {
            return Err(section.error(key, "expects a rule or a list of rules, not a map"));
        }
        Some(ConfigValue::Scalar(_)) => section.get_str(key)?.into_iter().collect(),
    };
    texts
        .iter()
        .map(|t| parse_rule(t).map_err(|m| section.error(key, format!("rule '{t}': {m}"))))
        .collect()
}

/// Read access to a record by path, parsing a raw original at most once per record (and
/// without changing the record, so its original keeps its exact bytes).
struct View<'a> {
    record: &'a Record,
    parsed: OnceCell<Value>,
}

impl<'a> View<'a> {
    fn new(record: &'a Record) -> View<'a> {
        View {
            record,
            parsed: OnceCell::new(),
        }
    }

    /// The value at `path`, with the same addressing as [`Record::get_path`].
    fn get(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        let (first, rest) = path.split_first()?;
        let r = self.record;
        if ENVELOPE_KEYS.contains(&first.as_str()) {
            if !rest.is_empty() {
                return None;
            }
            let s = match first.as_str() {
                "id" => r.id.clone(),
                "time" => r.time.to_rfc3339(),
                "kind" => r.kind.as_str().to_string(),
                "source" => r.source.to_string(),
                _ => r.tag.to_string(),
            };
            return Some(Cow::Owned(Value::String(s)));
        }
        if first == ORIGINAL_KEY && !r.fields.contains_key(ORIGINAL_KEY) {
            let root = match r.original.as_ref()? {
                Original::Value(v) => v,
                Original::Raw(raw) => self
                    .parsed
                    .get_or_init(|| serde_json::from_str(raw.get()).unwrap_or(Value::Null)),
            };
            return walk(root, rest).map(Cow::Borrowed);
        }
        walk(r.fields.get(first.as_str())?, rest).map(Cow::Borrowed)
    }
}

fn walk<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for p in path {
        v = match v {
            Value::Object(m) => m.get(p.as_str())?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}
