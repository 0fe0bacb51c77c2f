//! The `redact` filter: removes or masks fields of records, and by default strips the request
//! and response bodies of audit events about Secrets, so Secret contents never reach an output.
//!
//! # Configuration
//!
//! ```yaml
//! filters:
//!   - name: redact
//!     match: k8s.audit
//!     remove: [object.requestObject.metadata.managedFields, user_agent]
//!     mask: [object.requestObject.data, object.responseObject.data, source_ips]
//!     mask_with: "<redacted>"
//!     # secrets: keep    # only if Secret bodies really must be recorded
//! ```
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `remove` | list of paths | delete these fields |
//! | `mask` | list of paths | replace the values with `mask_with` |
//! | `mask_with` | text, default `****` | the replacement |
//! | `secrets` | `remove` (default) or `keep` | strip the bodies of audit events about Secrets |
//!
//! Lists are YAML lists or comma-separated text.
//!
//! # Paths
//!
//! Dotted, like grep's: a normalized field (`user_agent`, `user.groups`), or a place inside the
//! original object (`object.requestObject.data`); `object` alone is the whole original. A
//! number indexes a list (`source_ips.0`) and `*` stands for every member of an object or every
//! element of a list (`object.requestObject.spec.containers.*.env`). The envelope keys (`id`,
//! `time`, `kind`, `source`, `tag`) cannot be removed or masked. A path that is not in a record
//! is skipped.
//!
//! - `remove` deletes the field (a list element is taken out of its list).
//! - `mask` replaces a string, number or boolean with `mask_with` (a string). On an object or a
//!   list it masks every such value inside, keeping the keys and the shape, so
//!   `mask: object.requestObject.data` shows which keys a ConfigMap or Secret had but none of
//!   their values. `null` stays `null`.
//!
//! # Secrets
//!
//! Unless `secrets: keep` is written, every audit record (kind `k8s_audit`) whose `objectRef`
//! resource is `secrets` (the normalized `object_ref.resource` or the original's
//! `objectRef.resource`) loses `object.requestObject` and `object.responseObject`, whatever
//! its audit level. This happens even when the section has no other option. If the original
//! of such a record cannot be read at all, the whole original is dropped rather than passed on.
//!
//! # The original object
//!
//! A record's original stays the exact bytes received unless this filter changes something in
//! it. When it does, the original becomes a parsed tree with only the named parts changed;
//! everything else keeps its values (the JSON encoder may write the object keys in a different
//! order).

#[cfg(test)]
mod tests;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_core::fields::JsonStr;
use kubetrail_core::record::{ENVELOPE_KEYS, ORIGINAL_KEY};
use kubetrail_core::{Fields, Member, Original, Record, RecordKind};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::pipeline::Filter;

/// The default replacement of masked values.
pub const DEFAULT_MASK: &str = "****";
/// Keys removed from the original of an audit event about Secrets.
const SECRET_BODIES: [&str; 2] = ["requestObject", "responseObject"];

/// Where a path points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Into the normalized fields (first segment = field name).
    Fields(Vec<String>),
    /// Into the original object; empty = the whole original.
    Original(Vec<String>),
}

/// The `redact` filter.
#[derive(Debug, Clone)]
pub struct Redact {
    remove: Vec<Target>,
    mask: Vec<Target>,
    mask_with: Value,
    strip_secrets: bool,
}

impl Redact {
    /// Reads `remove`, `mask`, `mask_with` and `secrets`. Errors name the filter and the key.
    pub fn from_section(section: &mut Section) -> Result<Redact, ConfigError> {
        let remove = read_targets(section, "remove")?;
        let mask = read_targets(section, "mask")?;
        let mask_with = section.get_str_or("mask_with", DEFAULT_MASK)?;
        let strip_secrets = section.get_choice("secrets", &["remove", "keep"])? != Some("keep");
        Ok(Redact {
            remove,
            mask,
            mask_with: Value::String(mask_with),
            strip_secrets,
        })
    }

    /// The built-in protection the topology puts first in every pipeline: only the Secrets
    /// rule, so audit events about Secrets lose their bodies even without a `redact` filter.
    pub fn secrets_only() -> Redact {
        Redact {
            remove: Vec::new(),
            mask: Vec::new(),
            mask_with: Value::String(DEFAULT_MASK.into()),
            strip_secrets: true,
        }
    }

    /// Whether this filter was configured with `secrets: keep` (the explicit opt-out).
    pub fn keeps_secrets(&self) -> bool {
        !self.strip_secrets
    }

    fn edits_original(&self) -> bool {
        self.remove
            .iter()
            .chain(&self.mask)
            .any(|t| matches!(t, Target::Original(_)))
    }

    /// Applies the field edits to the normalized fields.
    fn edit_fields(&self, record: &mut Record) {
        if !self
            .remove
            .iter()
            .chain(&self.mask)
            .any(|t| matches!(t, Target::Fields(_)))
        {
            return;
        }
        // The fields map is moved into a Value and back so one set of path functions serves
        // both the fields and the original.
        let mut root = Value::Object(std::mem::take(&mut *record.fields));
        for t in &self.remove {
            if let Target::Fields(path) = t {
                remove_at(&mut root, path);
            }
        }
        for t in &self.mask {
            if let Target::Fields(path) = t {
                mask_at(&mut root, path, &self.mask_with);
            }
        }
        if let Value::Object(m) = root {
            record.fields = m.into();
        }
    }

    /// Applies the edits to the original: the Secrets rule, then `remove`, then `mask`.
    /// Returns whether anything changed.
    fn edit_tree(&self, v: &mut Value, secret: bool) -> bool {
        let mut changed = false;
        if secret && let Value::Object(m) = v {
            for key in SECRET_BODIES {
                changed |= m.remove(key).is_some();
            }
        }
        for t in &self.remove {
            if let Target::Original(path) = t {
                changed |= remove_at(v, path);
            }
        }
        for t in &self.mask {
            if let Target::Original(path) = t {
                changed |= mask_at(v, path, &self.mask_with);
            }
        }
        changed
    }

    fn edit_original(&self, record: &mut Record) {
        let check_secret = self.strip_secrets && record.kind == RecordKind::K8sAudit;
        if !check_secret && !self.edits_original() {
            return;
        }
        if self.remove.contains(&Target::Original(Vec::new())) {
            record.original = None;
            return;
        }
        // The normalized `object_ref` was read from the same bytes as the original, with
        // escapes decoded: when it is there, it settles the question without looking inside
        // the original. Without it (an event with no objectRef, or fields changed by an
        // earlier filter), the original itself is checked.
        let (fields_say_secret, fields_settle) = if check_secret {
            object_ref_says_secret(&record.fields)
        } else {
            (false, false)
        };
        let Some(original) = record.original.as_mut() else {
            return;
        };
        match original {
            Original::Value(v) => {
                let secret = fields_say_secret || (check_secret && names_secrets(v));
                self.edit_tree(v, secret);
            }
            Original::Raw(raw) => {
                let maybe_secret = fields_say_secret
                    || (check_secret && !fields_settle && might_name_secrets(raw.get()));
                if !maybe_secret && !self.edits_original() {
                    return;
                }
                // Only the Secrets question is open: a typed read of `objectRef.resource`
                // answers it without building the whole tree (events without an objectRef,
                // such as /healthz or discovery requests, often have `\u` escapes).
                if !fields_say_secret
                    && !self.edits_original()
                    && raw_names_secrets(raw.get()) == Some(false)
                {
                    return;
                }
                let mut v: Value = match serde_json::from_str(raw.get()) {
                    Ok(v) => v,
                    Err(e) => {
                        // Raw originals are valid JSON, so this is a tree too deep to parse.
                        // Fail closed when it may hold a Secret.
                        if maybe_secret {
                            tracing::warn!(
                                record = %record.id,
                                error = %e,
                                "cannot read the original of an audit event about Secrets; dropping the original"
                            );
                            record.original = None;
                        }
                        return;
                    }
                };
                let secret = fields_say_secret || (check_secret && names_secrets(&v));
                if self.edit_tree(&mut v, secret) {
                    *original = Original::Value(v);
                }
            }
        }
    }
}

impl Filter for Redact {
    fn apply(&self, record: &mut Record) -> bool {
        self.edit_fields(record);
        self.edit_original(record);
        true
    }
}

fn is_secrets(v: &Value) -> bool {
    v.as_str() == Some("secrets")
}

/// An `objectRef` (or the normalized `object_ref`) as far as the Secrets rule reads it.
#[derive(serde::Deserialize)]
struct ObjectRef<'a> {
    #[serde(borrow)]
    resource: Option<JsonStr<'a>>,
}

impl ObjectRef<'_> {
    /// Reads `member` when it is an object (a derived struct would also read an array, by
    /// position, where the tree finds no `resource`); `None` for any other shape.
    fn of(member: Member<'_>) -> Option<ObjectRef<'_>> {
        if member.is_object() {
            member.read()
        } else {
            None
        }
    }

    fn is_secrets(&self) -> bool {
        self.resource.as_deref() == Some("secrets")
    }
}

/// What the normalized `object_ref` says: (its `resource` is `secrets`, it is an object and so
/// settles the question). Read borrowed: nothing is decoded or allocated.
fn object_ref_says_secret(fields: &Fields) -> (bool, bool) {
    // An `object_ref` of another shape (not an object, a resource that is not a string)
    // settles nothing: the original is checked.
    match fields.get_member("object_ref").and_then(ObjectRef::of) {
        Some(o) => (o.is_secrets(), true),
        None => (false, false),
    }
}

/// Whether an audit event's `objectRef.resource` is `secrets`.
fn names_secrets(original: &Value) -> bool {
    original
        .get("objectRef")
        .and_then(|o| o.get("resource"))
        .is_some_and(is_secrets)
}

/// Whether an audit event's `objectRef.resource` is `secrets`, read from its raw text without
/// building a tree; `None` when this reading cannot tell (duplicate keys, unexpected types),
/// and then the caller parses the whole tree, as [`names_secrets`] sees it.
fn raw_names_secrets(raw: &str) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow, rename = "objectRef")]
        object_ref: Option<&'a RawValue>,
    }
    // Derived structs also accept arrays (fields by position); the tree reads only objects.
    if !Member::Encoded(raw).is_object() {
        return None;
    }
    let ev: Event<'_> = serde_json::from_str(raw).ok()?;
    match ev.object_ref {
        None => Some(false),
        Some(o) => ObjectRef::of(Member::Encoded(o.get())).map(|o| o.is_secrets()),
    }
}

/// A cheap pre-check on raw JSON text before parsing it: the word can only be absent from the
/// text if it is absent from the parsed tree, unless it was written with `\u` escapes.
fn might_name_secrets(raw: &str) -> bool {
    raw.contains("secrets") || raw.contains("\\u")
}

/// Reads a list of paths from `key`.
fn read_targets(section: &mut Section, key: &str) -> Result<Vec<Target>, ConfigError> {
    let Some(items) = section.get_list(key)? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|p| parse_target(p).map_err(|m| section.error(key, m)))
        .collect()
}

fn parse_target(path: &str) -> Result<Target, String> {
    let path = path.trim();
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(format!("invalid path '{path}': empty part"));
    }
    let first = segments[0].as_str();
    if ENVELOPE_KEYS.contains(&first) {
        return Err(format!(
            "'{path}': the envelope keys ({}) cannot be removed or masked",
            ENVELOPE_KEYS.join(", ")
        ));
    }
    if first == ORIGINAL_KEY {
        return Ok(Target::Original(segments[1..].to_vec()));
    }
    if first == "*" {
        return Err(format!(
            "'{path}': a path cannot start with '*' (it would reach the envelope keys too)"
        ));
    }
    Ok(Target::Fields(segments))
}

/// The children of `v` that a path segment names: one member, one element, or all (`*`).
fn children<'v>(v: &'v mut Value, seg: &str) -> Vec<&'v mut Value> {
    match v {
        Value::Object(m) => {
            if seg == "*" {
                m.values_mut().collect()
            } else {
                m.get_mut(seg).into_iter().collect()
            }
        }
        Value::Array(a) => {
            if seg == "*" {
                a.iter_mut().collect()
            } else {
                seg.parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .into_iter()
                    .collect()
            }
        }
        _ => Vec::new(),
    }
}

/// Removes what `path` names below `v`; returns whether anything was removed.
fn remove_at(v: &mut Value, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => remove_child(v, last),
        [first, rest @ ..] => children(v, first)
            .into_iter()
            .fold(false, |changed, child| remove_at(child, rest) | changed),
    }
}

/// Removes the member or element `key` of `v` (all of them for `*`).
fn remove_child(v: &mut Value, key: &str) -> bool {
    match v {
        Value::Object(m) if key == "*" => {
            let changed = !m.is_empty();
            m.clear();
            changed
        }
        Value::Object(m) => m.remove(key).is_some(),
        Value::Array(a) if key == "*" => {
            let changed = !a.is_empty();
            a.clear();
            changed
        }
        Value::Array(a) => match key.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Masks what `path` names below `v` (the whole of `v` for an empty path); returns whether
/// anything changed.
fn mask_at(v: &mut Value, path: &[String], with: &Value) -> bool {
    match path.split_first() {
        None => mask_all(v, with),
        Some((first, rest)) => children(v, first)
            .into_iter()
            .fold(false, |changed, child| mask_at(child, rest, with) | changed),
    }
}

/// Replaces every scalar in `v` by `with`. Recursion depth is bounded by the tree's depth,
/// which serde_json's parser limits to 128 for anything that came from outside.
fn mask_all(v: &mut Value, with: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => m.values_mut().fold(false, |c, x| mask_all(x, with) | c),
        Value::Array(a) => a.iter_mut().fold(false, |c, x| mask_all(x, with) | c),
        scalar => {
            if scalar == with {
                false
            } else {
                *scalar = with.clone();
                true
            }
        }
    }
}
