//! One grep rule: parsing `PATH OP VALUE` (or Fluent Bit's `KEY REGEX`) once at configuration
//! time, and testing a record's value against it.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// Compiled-program limit of one rule's regular expression. The regex crate matches in linear
/// time, so the only thing a hostile pattern could blow up is compilation; this caps it.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache limit per regular expression.
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// Nesting limit (groups, repetitions) of a regular expression: bounds the parser's recursion.
const REGEX_NEST_LIMIT: u32 = 64;

/// Operators written with symbols, longest first so `>=` is not read as `>`.
const SYMBOL_OPERATORS: [&str; 8] = ["==", "!=", "=~", "!~", ">=", "<=", ">", "<"];
/// Every operator, for error messages.
const ALL_OPERATORS: &str = "==, !=, =~, !~, >, >=, <, <=, in (..), notin (..), exists, missing";

/// A parsed rule.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// The dotted path, split (`user.username` → `["user", "username"]`).
    pub path: Vec<String>,
    pub test: Test,
}

/// What a rule checks about the value at its path.
#[derive(Debug, Clone)]
pub(super) enum Test {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Regex(Regex),
    NotRegex(Regex),
    Compare(CmpOp, Num),
    Exists,
    Missing,
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
        }
    }
}

/// A number as written in a rule or found in a record. Whole numbers compare exactly; anything
/// else compares as `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// Parses a number from text (`400`, `-1`, `2.5`, `1e3`); rejects NaN and infinities.
    pub fn parse(s: &str) -> Option<Num> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i128>() {
            return Some(Num::Int(i));
        }
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float)
    }

    /// The number a JSON value holds: a number, or a string holding one.
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Num::Int(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Some(Num::Int(i128::from(u)))
                } else {
                    n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
                }
            }
            Value::String(s) => Num::parse(s),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 only matters when comparing with a fraction.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

impl Rule {
    /// Whether the rule holds for `value` (the value at the rule's path, `None` if absent).
    ///
    /// `null` counts as absent. A list matches a positive test (`==`, `in`, `=~`, comparisons)
    /// when any of its scalar elements does; the negative tests (`!=`, `notin`, `!~`) are
    /// exactly the negation of their positive counterparts, so they hold for absent values.
    pub fn matches(&self, value: Option<&Value>) -> bool {
        match &self.test {
            Test::Exists => value.is_some_and(|v| !v.is_null()),
            Test::Missing => value.is_none_or(Value::is_null),
            Test::Eq(want) => any_scalar(value, |s| s == want),
            Test::Ne(want) => !any_scalar(value, |s| s == want),
            Test::In(set) => any_scalar(value, |s| set.iter().any(|w| w == s)),
            Test::NotIn(set) => !any_scalar(value, |s| set.iter().any(|w| w == s)),
            Test::Regex(re) => any_scalar(value, |s| re.is_match(s)),
            Test::NotRegex(re) => !any_scalar(value, |s| re.is_match(s)),
            Test::Compare(op, want) => any_element(value, |v| {
                Num::of(v)
                    .and_then(|n| n.compare(*want))
                    .is_some_and(|o| op.holds(o))
            }),
        }
    }
}

/// Applies `f` to the value, or to each element of a list (not to nested lists).
fn any_element(value: Option<&Value>, f: impl Fn(&Value) -> bool) -> bool {
    match value {
        None => false,
        Some(Value::Array(items)) => items.iter().filter(|i| !i.is_array()).any(&f),
        Some(v) => f(v),
    }
}

/// Applies `f` to the string form of the value's scalars (strings as they are, numbers as JSON
/// writes them, `true`/`false`); objects and `null` never match.
fn any_scalar(value: Option<&Value>, f: impl Fn(&str) -> bool) -> bool {
    any_element(value, |v| scalar_text(v).is_some_and(|s| f(&s)))
}

fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        _ => None,
    }
}

/// Compiles a rule's regular expression with the size limits above.
pub(super) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression '{pattern}': {e}"))
}

/// Splits off the first whitespace-separated word; the rest is trimmed at its start.
fn first_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Parses one rule as written in the configuration.
///
/// The second word decides the form: if it is an operator, the rule is `PATH OP VALUE`;
/// otherwise it is Fluent Bit's `KEY REGEX`, the regular expression being everything after the
/// key.
pub(super) fn parse_rule(text: &str) -> Result<Rule, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty rule".into());
    }
    let (key, rest) = first_word(text);
    if let Some(op) = SYMBOL_OPERATORS.iter().find(|op| key.contains(**op)) {
        return Err(format!(
            "write spaces around the operator '{op}' (e.g. 'response_code >= 400')"
        ));
    }
    let path = parse_path(key)?;
    if rest.is_empty() {
        return Err(
            "expected 'PATH OPERATOR VALUE' (e.g. 'type == Warning') or Fluent Bit's 'KEY REGEX'"
                .into(),
        );
    }
    let (op, value) = first_word(rest);
    let value = value.trim_end();
    let test = match op {
        "==" | "!=" => {
            if value.is_empty() {
                return Err(format!("missing value after '{op}'"));
            }
            let v = unquote(value).to_string();
            if op == "==" { Test::Eq(v) } else { Test::Ne(v) }
        }
        "=~" | "!~" => {
            if value.is_empty() {
                return Err(format!("missing regular expression after '{op}'"));
            }
            let re = compile_regex(value)?;
            if op == "=~" {
                Test::Regex(re)
            } else {
                Test::NotRegex(re)
            }
        }
        ">" | ">=" | "<" | "<=" => {
            if value.is_empty() {
                return Err(format!("missing number after '{op}'"));
            }
            let n = Num::parse(unquote(value))
                .ok_or_else(|| format!("'{value}' is not a number (needed by '{op}')"))?;
            let cmp = match op {
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                "<" => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            Test::Compare(cmp, n)
        }
        w if w.eq_ignore_ascii_case("in") || w.eq_ignore_ascii_case("notin") => {
            let set = parse_set(value).map_err(|m| format!("'{w}': {m}"))?;
            if w.eq_ignore_ascii_case("in") {
                Test::In(set)
            } else {
                Test::NotIn(set)
            }
        }
        w if w.eq_ignore_ascii_case("exists") || w.eq_ignore_ascii_case("missing") => {
            if !value.is_empty() {
                return Err(format!("'{w}' takes no value (found '{value}')"));
            }
            if w.eq_ignore_ascii_case("exists") {
                Test::Exists
            } else {
                Test::Missing
            }
        }
        w if !w.is_empty() && w.chars().all(|c| "=!<>~".contains(c)) => {
            return Err(format!("unknown operator '{w}' (known: {ALL_OPERATORS})"));
        }
        // Fluent Bit: `KEY REGEX`, the regex being the rest of the line.
        _ => Test::Regex(compile_regex(rest.trim_end())?),
    };
    Ok(Rule { path, test })
}

/// Parses a dotted path (`involved_object.kind`, `object.objectRef.resource`, `user.groups.0`)
/// or a Fluent Bit record accessor (`$user['username']`, `$user['groups'][0]`).
pub(super) fn parse_path(key: &str) -> Result<Vec<String>, String> {
    let segments: Vec<String> = match key.strip_prefix('$') {
        Some(ra) => parse_record_accessor(ra)
            .ok_or_else(|| format!("invalid record accessor '{key}' (e.g. $user['username'])"))?,
        None => key.split('.').map(str::to_string).collect(),
    };
    if segments.iter().any(String::is_empty) {
        return Err(format!("invalid path '{key}': empty part"));
    }
    Ok(segments)
}

/// `name['a']["b"][0]` → `[name, a, b, 0]`; a dotted head (`a.b['c']`) splits on the dots.
fn parse_record_accessor(ra: &str) -> Option<Vec<String>> {
    let head_end = ra.find('[').unwrap_or(ra.len());
    let mut out: Vec<String> = ra[..head_end].split('.').map(str::to_string).collect();
    let mut rest = &ra[head_end..];
    while !rest.is_empty() {
        rest = rest.strip_prefix('[')?;
        let (inner, after) = match rest.chars().next()? {
            q @ ('\'' | '"') => {
                let body = &rest[1..];
                let end = body.find(q)?;
                let after = body[end + 1..].strip_prefix(']')?;
                (&body[..end], after)
            }
            _ => {
                let end = rest.find(']')?;
                let idx = &rest[..end];
                idx.parse::<usize>().ok()?;
                (idx, &rest[end + 1..])
            }
        };
        out.push(inner.to_string());
        rest = after;
    }
    Some(out)
}

/// `(a, "b c", 'd,e')` → `["a", "b c", "d,e"]`.
fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("expected a list in parentheses, e.g. (watch, list)")?;
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (None, ',') => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote in the list".into());
    }
    items.push(current);
    let items: Vec<String> = items
        .iter()
        .map(|i| i.trim())
        .map(|i| {
            if i.is_empty() {
                Err("empty item in the list".to_string())
            } else {
                Ok(unquote(i).to_string())
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(items)
}

/// Removes one pair of matching surrounding quotes (`"a b"` or `'a b'`), if present.
pub(super) fn unquote(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &s[1..s.len() - 1]
    } else {
        s
    }
}
