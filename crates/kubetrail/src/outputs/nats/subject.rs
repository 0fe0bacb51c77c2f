//! Subject templates: `kubetrail.{kind}.{namespace|object_ref.namespace}`.
//!
//! A placeholder is a dotted path into the encoded record (`kind`, `involved_object.kind`,
//! `object.metadata.name` inside the original), or several separated by `|`, the first that
//! holds a non-empty string, number or boolean winning. Substituted values are made safe as
//! one subject token: whitespace, control characters, `.`, `*` and `>` become `_`, an empty
//! or missing value is `_`, and a value is cut at 128 bytes. So every subject a template
//! makes has the same number of tokens, and the stream's subject filter is the template with
//! each placeholder-holding token replaced by `*`.
//!
//! Values are read from the record JSON in one pass that only looks at the paths the
//! template names (everything else, the original object included, is skipped unparsed).

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The longest substituted value, in bytes.
const MAX_TOKEN: usize = 128;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// Alternatives, each a slot in the extracted values.
    Field(Vec<usize>),
}

/// A parsed subject template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// The paths the template reads, indexed by slot.
    paths: Vec<Vec<String>>,
    trie: Trie,
}

/// Paths to read, as a tree of keys.
#[derive(Debug, Clone, Default)]
struct Trie {
    slot: Option<usize>,
    children: HashMap<String, Trie>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut paths: Vec<Vec<String>> = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("'{s}': a '{{' is not closed"))?;
                    let inner = &rest[1..end];
                    let mut slots = Vec::new();
                    for alt in inner.split('|') {
                        let path: Vec<String> = alt.trim().split('.').map(str::to_string).collect();
                        if path.iter().any(|p| p.is_empty() || p.contains(['{', '}'])) {
                            return Err(format!("'{s}': '{{{inner}}}' is not a field path"));
                        }
                        let slot = match paths.iter().position(|p| *p == path) {
                            Some(i) => i,
                            None => {
                                paths.push(path);
                                paths.len() - 1
                            }
                        };
                        slots.push(slot);
                    }
                    parts.push(Part::Field(slots));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let lit = &rest[..end];
                    if lit.contains('}') {
                        return Err(format!("'{s}': a '}}' without its '{{'"));
                    }
                    if let Some(c) = lit
                        .chars()
                        .find(|c| c.is_whitespace() || c.is_control() || *c == '*' || *c == '>')
                    {
                        return Err(format!("'{s}': {c:?} is not allowed in a subject"));
                    }
                    parts.push(Part::Literal(lit.to_string()));
                    rest = &rest[end..];
                }
            }
        }
        let t = Template {
            parts,
            trie: Trie::build(&paths),
            paths,
        };
        if t.filter().split('.').any(str::is_empty) {
            return Err(format!(
                "'{s}': a subject has no empty tokens (no leading, trailing or double '.')"
            ));
        }
        Ok(t)
    }

    /// The stream subject filter that covers every subject this template makes.
    pub fn filter(&self) -> String {
        // Build with a marker per placeholder, then turn each token holding one into `*`.
        let mut marked = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => marked.push_str(l),
                Part::Field(_) => marked.push('\u{1}'),
            }
        }
        marked
            .split('.')
            .map(|tok| if tok.contains('\u{1}') { "*" } else { tok })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The subject for one encoded record. Records that are not JSON objects get `_` for
    /// every placeholder.
    pub fn render(&self, record: &[u8]) -> String {
        let mut values: Vec<Option<String>> = vec![None; self.paths.len()];
        if !self.paths.is_empty() {
            let mut de = serde_json::Deserializer::from_slice(record);
            let _ = Walk {
                node: &self.trie,
                out: &mut values,
            }
            .deserialize(&mut de);
        }
        let mut s = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Part::Literal(l) => s.push_str(l),
                Part::Field(slots) => {
                    let v = slots
                        .iter()
                        .find_map(|i| values[*i].as_deref().filter(|v| !v.is_empty()));
                    push_token(&mut s, v.unwrap_or(""));
                }
            }
        }
        s
    }
}

/// Appends `v` made safe as (part of) one subject token.
fn push_token(out: &mut String, v: &str) {
    if v.is_empty() {
        out.push('_');
        return;
    }
    let start = out.len();
    for c in v.chars() {
        if out.len() - start + c.len_utf8() > MAX_TOKEN {
            break;
        }
        if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

impl Trie {
    fn build(paths: &[Vec<String>]) -> Trie {
        let mut root = Trie::default();
        for (slot, path) in paths.iter().enumerate() {
            let mut node = &mut root;
            for key in path {
                node = node.children.entry(key.clone()).or_default();
            }
            node.slot = Some(slot);
        }
        root
    }
}

/// Walks a JSON value, storing the scalars found at the trie's slots.
struct Walk<'t, 'o> {
    node: &'t Trie,
    out: &'o mut Vec<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_, '_> {
    fn set(&mut self, v: String) {
        if let Some(slot) = self.node.slot {
            self.out[slot] = Some(v);
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.set(v.to_string());
        Ok(())
    }
    fn visit_string<E: de::Error>(mut self, v: String) -> Result<(), E> {
        self.set(v);
        Ok(())
    }
    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.set(v.to_string());
        Ok(())
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.set(v.to_string());
        Ok(())
    }
    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.set(v.to_string());
        Ok(())
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.set(v.to_string());
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(KeyLookup(self.node))? {
            match child {
                Some(node) => map.next_value_seed(Walk {
                    node,
                    out: &mut *self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let more = match self.node.children.get(&i.to_string()) {
                Some(node) => seq
                    .next_element_seed(Walk {
                        node,
                        out: &mut *self.out,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// A map key, looked up among a node's children without allocating.
struct KeyLookup<'t>(&'t Trie);

impl<'de, 't> DeserializeSeed<'de> for KeyLookup<'t> {
    type Value = Option<&'t Trie>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 't> Visitor<'de> for KeyLookup<'t> {
    type Value = Option<&'t Trie>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.children.get(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENT: &str = r#"{"id":"u:1","kind":"k8s_event","namespace":"fx","involved_object":{"kind":"Pod","name":"web.1"},"count":3,"object":{"metadata":{"name":"ev name"}}}"#;
    const AUDIT: &str = r#"{"id":"a:1","kind":"k8s_audit","verb":"get","object_ref":{"namespace":"kube-system","resource":"secrets"},"object":{"kind":"Event"}}"#;

    #[test]
    fn default_template() {
        let t = Template::parse("kubetrail.{kind}.{namespace|object_ref.namespace}").unwrap();
        assert_eq!(t.filter(), "kubetrail.*.*");
        assert_eq!(t.render(EVENT.as_bytes()), "kubetrail.k8s_event.fx");
        assert_eq!(
            t.render(AUDIT.as_bytes()),
            "kubetrail.k8s_audit.kube-system"
        );
        assert_eq!(t.render(br#"{"kind":"gap"}"#), "kubetrail.gap._");
        assert_eq!(t.render(b"not json"), "kubetrail._._");
    }

    #[test]
    fn nested_paths_numbers_and_sanitizing() {
        let t =
            Template::parse("k8s.{involved_object.name}.{object.metadata.name}.n{count}-{missing}")
                .unwrap();
        assert_eq!(t.filter(), "k8s.*.*.*");
        assert_eq!(t.render(EVENT.as_bytes()), "k8s.web_1.ev_name.n3-_");
        let t = Template::parse("x.{a}").unwrap();
        assert_eq!(t.render(br#"{"a":"*.> \t"}"#), "x._____");
        assert_eq!(t.render(br#"{"a":{"b":1}}"#), "x._");
        let long = format!(r#"{{"a":"{}"}}"#, "é".repeat(200));
        assert_eq!(t.render(long.as_bytes()).len(), 2 + MAX_TOKEN);
        let t = Template::parse("x.{a.1}").unwrap();
        assert_eq!(t.render(br#"{"a":["p","q"]}"#), "x.q");
    }

    #[test]
    fn invalid_templates() {
        for bad in [
            "", "a..b", ".a", "a.", "a.{b", "a.b}", "a b", "a.*", "a.>", "a.{}", "a.{b..c}",
            "a.{b|}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever a record holds, a rendered subject has the template's token count, and
        /// every token is non-empty and free of whitespace and wildcards.
        #[test]
        fn rendered_subjects_are_valid(a in any::<String>(), b in any::<String>()) {
            let t = Template::parse("p.{a}.{b|c}.s").unwrap();
            let rec = serde_json::json!({"a": a, "c": b}).to_string();
            let subject = t.render(rec.as_bytes());
            let tokens: Vec<&str> = subject.split('.').collect();
            prop_assert_eq!(tokens.len(), 4);
            for tok in tokens {
                prop_assert!(!tok.is_empty());
                prop_assert!(!tok.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '>'));
            }
        }
    }
}
