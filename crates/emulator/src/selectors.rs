//! `fieldSelector` and `labelSelector`: parsers that follow apimachinery's grammar and error
//! messages (`fields.ParseSelector`, `labels.Parse`), the Event field labels each API group
//! accepts, and matching against stored events.

use crate::model::EventObj;
use crate::render::View;

/// Why a selector was rejected; the text is the 400 message a real server gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SelectorError(pub String);

/// A selectable Event field (named by its core/v1 label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldLabel {
    MetadataName,
    MetadataNamespace,
    InvolvedKind,
    InvolvedNamespace,
    InvolvedName,
    InvolvedUid,
    InvolvedApiVersion,
    InvolvedResourceVersion,
    InvolvedFieldPath,
    Reason,
    ReportingComponent,
    Source,
    Type,
}

impl FieldLabel {
    /// The core/v1 field label conversion (`AddFieldLabelConversionsForEvent`).
    fn core(label: &str) -> Option<FieldLabel> {
        Some(match label {
            "metadata.name" => FieldLabel::MetadataName,
            "metadata.namespace" => FieldLabel::MetadataNamespace,
            "involvedObject.kind" => FieldLabel::InvolvedKind,
            "involvedObject.namespace" => FieldLabel::InvolvedNamespace,
            "involvedObject.name" => FieldLabel::InvolvedName,
            "involvedObject.uid" => FieldLabel::InvolvedUid,
            "involvedObject.apiVersion" => FieldLabel::InvolvedApiVersion,
            "involvedObject.resourceVersion" => FieldLabel::InvolvedResourceVersion,
            "involvedObject.fieldPath" => FieldLabel::InvolvedFieldPath,
            "reason" => FieldLabel::Reason,
            "reportingComponent" => FieldLabel::ReportingComponent,
            "source" => FieldLabel::Source,
            "type" => FieldLabel::Type,
            _ => return None,
        })
    }

    /// The events.k8s.io/v1 mapping onto the same fields (no `source` there).
    fn events_v1(label: &str) -> Option<FieldLabel> {
        Some(match label {
            "metadata.name" => FieldLabel::MetadataName,
            "metadata.namespace" => FieldLabel::MetadataNamespace,
            "regarding.kind" => FieldLabel::InvolvedKind,
            "regarding.namespace" => FieldLabel::InvolvedNamespace,
            "regarding.name" => FieldLabel::InvolvedName,
            "regarding.uid" => FieldLabel::InvolvedUid,
            "regarding.apiVersion" => FieldLabel::InvolvedApiVersion,
            "regarding.resourceVersion" => FieldLabel::InvolvedResourceVersion,
            "regarding.fieldPath" => FieldLabel::InvolvedFieldPath,
            "reason" => FieldLabel::Reason,
            "reportingController" => FieldLabel::ReportingComponent,
            "type" => FieldLabel::Type,
            _ => return None,
        })
    }

    /// The field's value in `ToSelectableFields` terms.
    fn value(self, ev: &EventObj) -> &str {
        let b = &ev.body;
        match self {
            FieldLabel::MetadataName => &b.name,
            FieldLabel::MetadataNamespace => &b.namespace,
            FieldLabel::InvolvedKind => &b.involved.kind,
            FieldLabel::InvolvedNamespace => &b.involved.namespace,
            FieldLabel::InvolvedName => &b.involved.name,
            FieldLabel::InvolvedUid => &b.involved.uid,
            FieldLabel::InvolvedApiVersion => &b.involved.api_version,
            FieldLabel::InvolvedResourceVersion => &b.involved.resource_version,
            FieldLabel::InvolvedFieldPath => &b.involved.field_path,
            FieldLabel::Reason => &b.reason,
            FieldLabel::ReportingComponent => &b.reporting_component,
            FieldLabel::Source => {
                if b.source.component.is_empty() {
                    &b.reporting_component
                } else {
                    &b.source.component
                }
            }
            FieldLabel::Type => &b.type_,
        }
    }
}

#[derive(Debug, Clone)]
struct FieldTerm {
    label: FieldLabel,
    value: String,
    negate: bool,
}

/// A parsed `fieldSelector` (all terms must hold).
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, ev: &EventObj) -> bool {
        self.terms
            .iter()
            .all(|t| (t.label.value(ev) == t.value) != t.negate)
    }
}

/// Splits on unescaped commas (`fields.splitTerms`).
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Finds the first operator (`!=`, `==`, `=`) at the earliest position (`fields.splitTerm`).
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

/// `fields.UnescapeValue`.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {}",
                    u32::from(c)
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

/// Parses a `fieldSelector` for the given API view.
pub(crate) fn parse_field_selector(s: &str, view: View) -> Result<FieldSelector, SelectorError> {
    if s.is_empty() {
        return Ok(FieldSelector::default());
    }
    let mut parts = split_terms(s);
    parts.sort_unstable();
    let mut parsed = Vec::new();
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let Some((lhs, op, rhs)) = split_term(part) else {
            return Err(SelectorError(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            )));
        };
        let value = unescape_value(rhs)?;
        parsed.push((lhs, op == "!=", value));
    }
    let mut terms = Vec::with_capacity(parsed.len());
    for (lhs, negate, value) in parsed {
        let label = match view {
            View::Core => FieldLabel::core(lhs),
            View::EventsV1 => FieldLabel::events_v1(lhs),
        };
        let Some(label) = label else {
            return Err(SelectorError(format!("field label not supported: {lhs}")));
        };
        terms.push(FieldTerm {
            label,
            value,
            negate,
        });
    }
    Ok(FieldSelector { terms })
}

// ---------------------------------------------------------------------------------------------
// Label selectors

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &[(crate::model::Str, crate::model::Str)]) -> bool {
        let found = labels
            .binary_search_by(|(k, _)| (**k).cmp(self.key.as_str()))
            .ok()
            .map(|i| &*labels[i].1);
        match self.op {
            Op::In | Op::Equals | Op::DoubleEquals => {
                found.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Op::NotIn | Op::NotEquals => found.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => found.is_some(),
            Op::DoesNotExist => found.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let Some(have) = found.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A parsed `labelSelector` (all requirements must hold).
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, ev: &EventObj) -> bool {
        self.reqs.iter().all(|r| r.matches(&ev.body.labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// apimachinery's label selector lexer, byte by byte (a NUL byte ends the input, as there).
fn lex(input: &str) -> Vec<(Tok, String)> {
    let b = input.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    let read = |pos: &mut usize| -> u8 {
        if *pos < b.len() {
            let c = b[*pos];
            *pos += 1;
            c
        } else {
            *pos += 1;
            0
        }
    };
    loop {
        let mut c = read(&mut pos);
        while c != 0 && is_ws(c) {
            c = read(&mut pos);
        }
        if c == 0 {
            out.push((Tok::End, String::new()));
            return out;
        }
        pos -= 1;
        if is_special(c) {
            let mut buf: Vec<u8> = Vec::new();
            let mut last: Option<(Tok, usize)> = None;
            loop {
                let ch = read(&mut pos);
                if ch == 0 {
                    pos -= 1;
                    break;
                }
                if !is_special(ch) {
                    pos -= 1;
                    break;
                }
                buf.push(ch);
                if let Some(t) = keyword(&String::from_utf8_lossy(&buf)) {
                    last = Some((t, buf.len()));
                } else if last.is_some() {
                    pos -= 1;
                    buf.pop();
                    break;
                }
            }
            match last {
                Some((t, n)) => {
                    out.push((t, String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
                None => out.push((
                    Tok::Error,
                    format!(
                        "error expected: keyword found '{}'",
                        String::from_utf8_lossy(&buf)
                    ),
                )),
            }
        } else {
            let start = pos;
            loop {
                let ch = read(&mut pos);
                if ch == 0 || is_special(ch) || is_ws(ch) {
                    pos -= 1;
                    break;
                }
            }
            let end = pos.min(b.len());
            let word = String::from_utf8_lossy(&b[start..end]).into_owned();
            let tok = keyword(&word).unwrap_or(Tok::Identifier);
            out.push((tok, word));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        let (mut t, l) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::End, String::new()));
        if ctx == Ctx::Values && matches!(t, Tok::In | Tok::NotIn) {
            t = Tok::Identifier;
        }
        (t, l)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let r = self.lookahead(ctx);
        self.pos += 1;
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| {
                        SelectorError(format!("unable to parse requirement: {}", e.0))
                    })?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(SelectorError(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(SelectorError(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return new_requirement(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Op>), SelectorError> {
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        let mut op = None;
        if tok == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(SelectorError(format!(
                "found '{lit}', expected: identifier"
            )));
        }
        validate_label_key(&lit)?;
        let (t, _) = self.lookahead(Ctx::Values);
        if (t == Tok::End || t == Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Op, SelectorError> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Op::In,
            Tok::Equals => Op::Equals,
            Tok::DoubleEquals => Op::DoubleEquals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => {
                return Err(SelectorError(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )));
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(SelectorError(format!("found '{lit}' expected: '('")));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Tok::ClosedPar {
                    return Err(SelectorError(format!("found '{lit}', expected: ')'")));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(SelectorError(format!(
                "found '{lit}', expected: ',', ')' or identifier"
            ))),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut set: Vec<String> = Vec::new();
        let insert = |set: &mut Vec<String>, v: String| {
            if !set.contains(&v) {
                set.push(v);
            }
        };
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    insert(&mut set, lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(sorted(set)),
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{l2}', expected: ',' or ')'"
                            )));
                        }
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        insert(&mut set, String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        insert(&mut set, String::new());
                        return Ok(sorted(set));
                    }
                    if t2 == Tok::Comma {
                        self.consume(Ctx::Values);
                        insert(&mut set, String::new());
                    }
                }
                _ => {
                    return Err(SelectorError(format!(
                        "found '{lit}', expected: ',', or identifier"
                    )));
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok(vec![lit]);
        }
        Err(SelectorError(format!(
            "found '{lit}', expected: identifier"
        )))
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const NAME_FMT_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `validation.IsQualifiedName` wrapped like `validateLabelKey`.
fn validate_label_key(k: &str) -> Result<(), SelectorError> {
    let mut errs: Vec<String> = Vec::new();
    let parts: Vec<&str> = k.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else if !is_dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {DNS1123_MSG}"));
            }
            name
        }
        _ => {
            return Err(invalid(
                "key",
                k,
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
            ));
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !name.is_empty() && !is_name_part(name) {
        errs.push(NAME_FMT_MSG.into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(invalid("key", k, &errs.join("; ")))
    }
}

fn invalid(path: &str, value: &str, detail: &str) -> SelectorError {
    SelectorError(format!("{path}: Invalid value: {value:?}: {detail}"))
}

/// `NewRequirement` validation.
fn new_requirement(key: String, op: Op, values: Vec<String>) -> Result<Requirement, SelectorError> {
    let mut errs: Vec<String> = Vec::new();
    if let Err(e) = validate_label_key(&key) {
        errs.push(e.0);
    }
    match op {
        Op::In | Op::NotIn if values.is_empty() => errs.push(
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                .into(),
        ),
        Op::GreaterThan | Op::LessThan => {
            if values.len() != 1 {
                errs.push("values: Invalid value: for 'Gt', 'Lt' operators, exactly one value is required".into());
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(
                        invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        )
                        .0,
                    );
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let mut verrs = Vec::new();
        if v.len() > 63 {
            verrs.push("must be no more than 63 characters".to_string());
        }
        if !v.is_empty() && !is_name_part(v) {
            verrs.push(LABEL_VALUE_MSG.to_string());
        }
        if !verrs.is_empty() {
            errs.push(invalid(&format!("values[{i}]"), v, &verrs.join("; ")).0);
        }
    }
    match errs.len() {
        0 => Ok(Requirement { key, op, values }),
        1 => Err(SelectorError(errs.remove(0))),
        _ => Err(SelectorError(format!("[{}]", errs.join(", ")))),
    }
}

/// Parses a `labelSelector`.
pub(crate) fn parse_label_selector(s: &str) -> Result<LabelSelector, SelectorError> {
    let items = lex(s);
    let mut p = Parser { items, pos: 0 };
    let mut reqs = p.parse()?;
    // apimachinery sorts requirements by key; matching is order-independent, but keep it.
    reqs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector { reqs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NewEvent, new_uid};
    use proptest::prelude::*;

    fn ev(labels: &[(&str, &str)], kind: &str, reason: &str) -> EventObj {
        let mut spec = crate::EventSpec::simple("fx", kind, "obj", reason, "m");
        spec.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec.type_ = "Warning".into();
        NewEvent::from_spec(
            spec,
            "obj.1".into(),
            new_uid(),
            time::OffsetDateTime::now_utc(),
        )
        .at(1)
    }

    #[test]
    fn field_selector_errors_match_the_fixtures() {
        let e = parse_field_selector("foo=bar", View::Core).unwrap_err();
        assert_eq!(e.0, "field label not supported: foo");
        let e = parse_field_selector("involvedObject.kind===Pod,(", View::Core).unwrap_err();
        assert_eq!(
            e.0,
            "invalid selector: 'involvedObject.kind===Pod,('; can't understand '('"
        );
        let e = parse_field_selector("source=x", View::EventsV1).unwrap_err();
        assert_eq!(e.0, "field label not supported: source");
    }

    #[test]
    fn field_selector_matches_both_views() {
        let e = ev(&[], "Pod", "BackOff");
        let s = parse_field_selector("involvedObject.kind=Pod,type=Warning", View::Core).unwrap();
        assert!(s.matches(&e));
        let s = parse_field_selector("regarding.kind=Pod,reason!=BackOff", View::EventsV1).unwrap();
        assert!(!s.matches(&e));
        let s = parse_field_selector("involvedObject.kind==Node", View::Core).unwrap();
        assert!(!s.matches(&e));
        let s = parse_field_selector("source=kubetrail-emulator", View::Core).unwrap();
        assert!(s.matches(&e));
        let s =
            parse_field_selector("metadata.namespace=fx,metadata.name=obj.1", View::Core).unwrap();
        assert!(s.matches(&e));
    }

    #[test]
    fn label_selector_error_matches_the_fixture() {
        let e = parse_label_selector("app in (a").unwrap_err();
        assert_eq!(
            e.0,
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
    }

    #[test]
    fn label_selector_set_based() {
        let s = parse_label_selector("app=fx-demo,tier in (backend,frontend),tier!=batch").unwrap();
        assert!(s.matches(&ev(&[("app", "fx-demo"), ("tier", "backend")], "Pod", "r")));
        assert!(!s.matches(&ev(&[("app", "fx-demo"), ("tier", "batch")], "Pod", "r")));
        assert!(!s.matches(&ev(&[("app", "fx-demo")], "Pod", "r")));
        let s = parse_label_selector("!tier,app").unwrap();
        assert!(s.matches(&ev(&[("app", "x")], "Pod", "r")));
        assert!(!s.matches(&ev(&[("app", "x"), ("tier", "y")], "Pod", "r")));
        let s = parse_label_selector("tier notin (batch), n > 3").unwrap();
        assert!(s.matches(&ev(&[("n", "4")], "Pod", "r")));
        assert!(!s.matches(&ev(&[("n", "3")], "Pod", "r")));
        let s = parse_label_selector("app in (fx-demo)").unwrap();
        assert!(s.matches(&ev(&[("app", "fx-demo")], "Pod", "r")));
        // keywords are plain values in value position
        let s = parse_label_selector("app=in").unwrap();
        assert!(s.matches(&ev(&[("app", "in")], "Pod", "r")));
    }

    #[test]
    fn label_selector_rejects_bad_input() {
        for bad in [
            "app=",
            "=x",
            "app in",
            "app in (a,",
            "a b",
            "app=x,",
            "!",
            "app==(",
            "Bad Key=1",
            "a/b/c=d",
            "x=a b",
        ] {
            let r = parse_label_selector(bad);
            if bad == "app=" {
                assert!(r.is_ok(), "{bad}: empty value is allowed");
            } else {
                assert!(r.is_err(), "{bad} should fail");
            }
        }
        assert!(parse_label_selector("").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = parse_label_selector(&s);
            let _ = parse_field_selector(&s, View::Core);
            let _ = parse_field_selector(&s, View::EventsV1);
        }

        #[test]
        fn equality_selector_round_trips(k in "[a-z][a-z0-9]{0,8}", v in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?") {
            let s = parse_label_selector(&format!("{k}={v}")).unwrap();
            let kv = [(k.as_str(), v.as_str())];
            prop_assert!(s.matches(&ev(&kv, "Pod", "r")));
            let s = parse_label_selector(&format!("{k}!={v}")).unwrap();
            prop_assert!(!s.matches(&ev(&kv, "Pod", "r")));
        }
    }
}
