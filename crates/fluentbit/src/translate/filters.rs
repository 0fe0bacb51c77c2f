//! Fluent Bit filters → kubetrail filters: `grep` and `modify` (the same names), and
//! `record_modifier` read as `modify`. Fluent Bit's keys name keys of the record it makes (the
//! Event or the audit event itself); kubetrail's records hold that object under `object`, so
//! `grep` keys are read there.

use kubetrail_core::config::Value;

use super::catalog;
use super::{Component, Ctx, Opened, Props, Who, common_option, open, pass_through, values};
use crate::diag::{List, Severity};
use crate::document::{Property, Section};

pub(crate) fn translate(
    ctx: &mut Ctx,
    s: &Section,
    fb_index: usize,
    index: usize,
) -> Option<Component> {
    let Opened {
        who,
        mut props,
        name,
        name_prop,
    } = open(ctx, s, List::Filters, fb_index, index)?;
    let mut c = match name.as_str() {
        "grep" => grep(ctx, &who, s, &mut props)?,
        "modify" => modify(ctx, &who, s, &mut props)?,
        "record_modifier" => record_modifier(ctx, &who, s, &mut props)?,
        other => {
            if let Some(message) = catalog::unsupported_filter(other) {
                ctx.error_at(&who, &name_prop, message);
                return None;
            }
            Component::new(List::Filters, other, other, s)
        }
    };
    for p in props.rest() {
        if !common_option(ctx, &who, &mut c, p) {
            pass_through(&mut c, vec![p]);
        }
    }
    Some(c)
}

/// A Fluent Bit key (`type`, or a record accessor `$involvedObject['kind']`) as segments.
fn fluent_bit_key(key: &str) -> Option<Vec<String>> {
    let Some(ra) = key.strip_prefix('$') else {
        return Some(vec![key.to_string()]);
    };
    let head_end = ra.find('[').unwrap_or(ra.len());
    let mut out = vec![ra[..head_end].to_string()];
    let mut rest = &ra[head_end..];
    while !rest.is_empty() {
        rest = rest.strip_prefix('[')?;
        let (inner, after) = match rest.chars().next()? {
            q @ ('\'' | '"') => {
                let body = &rest[1..];
                let end = body.find(q)?;
                (&body[..end], body[end + 1..].strip_prefix(']')?)
            }
            _ => {
                let end = rest.find(']')?;
                (&rest[..end], &rest[end + 1..])
            }
        };
        out.push(inner.to_string());
        rest = after;
    }
    (!out.iter().any(String::is_empty)).then_some(out)
}

/// Segments as a kubetrail path: dotted when that is unambiguous, else a record accessor.
fn kubetrail_path(segments: &[String]) -> String {
    let plain = segments.iter().all(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if plain {
        segments.join(".")
    } else {
        let mut out = format!("${}", segments[0]);
        for s in &segments[1..] {
            if s.chars().all(|c| c.is_ascii_digit()) {
                out.push_str(&format!("[{s}]"));
            } else {
                out.push_str(&format!("['{s}']"));
            }
        }
        out
    }
}

/// Fluent Bit's `KEY REGEX` as kubetrail's `PATH =~ REGEX`, the path inside `object` unless an
/// earlier filter writes that key.
fn grep_rule(ctx: &Ctx, rule: &str) -> Result<String, String> {
    let rule = rule.trim();
    let Some((key, regex)) = rule.split_once(' ') else {
        return Err(format!("'{rule}': expected KEY REGEX"));
    };
    let regex = regex.trim();
    let mut segments =
        fluent_bit_key(key).ok_or_else(|| format!("'{key}' is not a key or a record accessor"))?;
    if !ctx.written_keys.contains(&segments[0]) {
        segments.insert(0, "object".to_string());
    }
    Ok(format!("{} =~ {regex}", kubetrail_path(&segments)))
}

fn grep(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Option<Component> {
    let mut c = Component::new(List::Filters, "grep", "grep", s);
    let mut ok = true;
    let mut noted = false;
    for (fb, kt) in [("regex", "regex"), ("exclude", "exclude")] {
        let ps = props.all(fb);
        let Some(first) = ps.first().copied() else {
            continue;
        };
        let mut rules = Vec::new();
        for p in &ps {
            for rule in values(&[*p]) {
                match grep_rule(ctx, &rule) {
                    Ok(r) => rules.push(r),
                    Err(m) => {
                        ctx.error_at(who, p, m);
                        ok = false;
                    }
                }
            }
        }
        let value = if rules.len() == 1 {
            Value::Scalar(rules.pop())
        } else {
            Value::List(rules)
        };
        c.set(kt, value, first);
        if !noted {
            noted = true;
            ctx.note_at(
                who,
                first,
                kt,
                "Fluent Bit's KEY is a key of the record it makes (the Event, the audit event); \
                 kubetrail's record holds that object under `object`, so the rule reads \
                 object.KEY (keys an earlier modify writes are read as they are)",
            );
        }
    }
    if let Some(p) = ctx.last(who, &props.all("logical_op")) {
        c.set("logical_op", p.value.clone(), p);
    }
    ok.then_some(c)
}

/// kubetrail's modify runs its rules in this order, whatever order they are written in.
const MODIFY_ORDER: [&str; 9] = [
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

/// The top-level key a rule writes (for later grep rules), if any.
fn written_key(kind: &str, rule: &str) -> Option<String> {
    let mut words = rule.split_whitespace();
    let first = words.next()?;
    let target = match kind {
        "add" | "set" => first,
        "rename" | "hard_rename" | "copy" | "hard_copy" => words.next()?,
        _ => return None,
    };
    Some(target.split('.').next().unwrap_or(target).to_string())
}

fn modify(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Option<Component> {
    let mut c = Component::new(List::Filters, "modify", "modify", s);
    let mut ok = true;
    for p in props.all("condition") {
        ctx.error_at(
            who,
            p,
            "kubetrail's modify has no conditions: its rules apply to every record the filter \
             matches (route by tag, or drop records first with grep)",
        );
        ok = false;
    }
    for key in ["move_to_start", "move_to_end"] {
        for p in props.all(key) {
            ctx.error_at(who, p, "not supported: JSON records keep their keys' order");
            ok = false;
        }
    }
    // The order the rules are written in, to warn when kubetrail's fixed order differs.
    let mut written: Vec<(usize, usize)> = Vec::new();
    let mut first_rule: Option<&Property> = None;
    for (rank, kind) in MODIFY_ORDER.iter().enumerate() {
        let ps = props.all(kind);
        let Some(first) = ps.first().copied() else {
            continue;
        };
        for p in &ps {
            written.push((p.line, rank));
            for rule in values(&[*p]) {
                if let Some(k) = written_key(kind, &rule) {
                    ctx.written_keys.insert(k);
                }
            }
        }
        if first_rule.is_none_or(|f| first.line < f.line) {
            first_rule = Some(first);
        }
        let rules = values(&ps);
        let value = if rules.len() == 1 {
            Value::Scalar(Some(rules[0].clone()))
        } else {
            Value::List(rules)
        };
        c.set(kind, value, first);
    }
    written.sort();
    if written.windows(2).any(|w| w[0].1 > w[1].1) {
        ctx.section(
            Severity::Warning,
            who,
            s,
            format!(
                "kubetrail runs modify rules in a fixed order ({}), not in the order they are \
                 written as Fluent Bit does: check that the result is the same",
                MODIFY_ORDER.join(", ")
            ),
        );
    }
    if let Some(first) = first_rule {
        let key = first.lower_key();
        ctx.note_at(
            who,
            first,
            &key,
            "kubetrail's modify works on the record's own fields beside the original object, \
             not inside it: a key added here is a field of the record; a key of the Event or \
             audit event itself is under object and cannot be changed (use redact to remove \
             parts of it)",
        );
    }
    ok.then_some(c)
}

fn record_modifier(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Option<Component> {
    let mut c = Component::new(List::Filters, "record_modifier", "modify", s);
    let mut ok = true;
    let records = props.all("record");
    if let Some(first) = records.first().copied() {
        let rules = values(&records);
        for r in &rules {
            if let Some(k) = written_key("set", r) {
                ctx.written_keys.insert(k);
            }
        }
        let value = if rules.len() == 1 {
            Value::Scalar(Some(rules[0].clone()))
        } else {
            Value::List(rules)
        };
        c.set("set", value, first);
        ctx.note_at(
            who,
            first,
            "set",
            "record_modifier is read as kubetrail's modify: Record → set, Remove_key → remove; \
             the keys are fields of the record beside the original object",
        );
    }
    let removes = props.all("remove_key");
    if let Some(first) = removes.first().copied() {
        let rules = values(&removes);
        let value = if rules.len() == 1 {
            Value::Scalar(Some(rules[0].clone()))
        } else {
            Value::List(rules)
        };
        c.set("remove", value, first);
    }
    for key in ["allowlist_key", "whitelist_key"] {
        for p in props.all(key) {
            ctx.error_at(
                who,
                p,
                "not supported: use a redact filter to remove what should not be kept",
            );
            ok = false;
        }
    }
    for p in props.all("uuid_key") {
        ctx.error_at(
            who,
            p,
            "not supported: every kubetrail record has a stable id",
        );
        ok = false;
    }
    ok.then_some(c)
}
