//! A [`Migration`] as kubetrail YAML (what `kubetrail migrate` prints): the same settings
//! `run` uses, with the notes and warnings as comments where they apply, and each component
//! saying which Fluent Bit section it came from.

use std::fmt::Write;

use kubetrail_core::config::Value;

use crate::diag::{Diagnostic, List, Severity};
use crate::document::Format;
use crate::translate::{Component, Migration};

/// Comment lines are wrapped at this width.
const WIDTH: usize = 96;

impl Migration {
    /// kubetrail YAML with comments. The caller checks [`Migration::has_errors`] first.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let format = match self.format {
            Format::Classic => "classic",
            Format::Yaml => "YAML",
        };
        comment(
            &mut out,
            "",
            &format!(
                "kubetrail configuration translated by `kubetrail migrate` from this Fluent Bit {format} file:"
            ),
        );
        // The source path on a line of its own, never wrapped: the text around it does not
        // depend on how long the path is.
        let _ = writeln!(out, "#   {}", self.path.display());
        comment(
            &mut out,
            "",
            "kubetrail delivers every record exactly once across restarts: a record, its place \
             in each output's durable queue and its input's checkpoint are committed together \
             in one state database (service.data_dir).",
        );
        let (from_files, written): (Vec<_>, Vec<_>) =
            self.env.iter().partition(|v| v.uri.is_some());
        for v in from_files {
            comment(
                &mut out,
                "",
                &format!(
                    "{}: Fluent Bit reads it from {}; it is not written here: set {} in \
                     kubetrail's environment",
                    v.name,
                    v.uri.as_deref().unwrap_or(""),
                    v.name
                ),
            );
        }
        if !written.is_empty() {
            out.push_str("env:\n");
            for v in written {
                let _ = writeln!(out, "  {}: {}", key(&v.name, "  "), scalar(&v.value));
            }
        }
        if self.service.settings.is_empty() {
            // Its notes above it: a section of comments only would read as null.
            for d in self.notes(List::Service, 0) {
                comment(&mut out, "", &self.describe(d));
            }
            out.push_str("service: {}\n");
        } else {
            out.push_str("service:\n");
            self.settings(&mut out, &self.service, List::Service, 0, "  ");
        }
        if self.inputs.is_empty() && self.filters.is_empty() && self.outputs.is_empty() {
            out.push_str("pipeline: {}\n");
            return out;
        }
        out.push_str("pipeline:\n");
        for (list, name, cs) in [
            (List::Inputs, "inputs", &self.inputs),
            (List::Filters, "filters", &self.filters),
            (List::Outputs, "outputs", &self.outputs),
        ] {
            if cs.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {name}:");
            for (i, c) in cs.iter().enumerate() {
                self.component(&mut out, c, list, i);
            }
        }
        out
    }

    /// Warnings and notes about component `index` of `list`.
    fn notes(&self, list: List, index: usize) -> Vec<&Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity != Severity::Error)
            .filter(|d| {
                d.anchor
                    .as_ref()
                    .is_some_and(|a| a.list == list && a.index == index)
            })
            .collect()
    }

    fn component(&self, out: &mut String, c: &Component, list: List, index: usize) {
        let notes = self.notes(list, index);
        let keyed = |d: &&Diagnostic| {
            d.anchor
                .as_ref()
                .and_then(|a| a.key.as_deref())
                .is_some_and(|k| c.has(k))
        };
        let at = self.place(&c.file, c.line);
        let from = if c.plugin == c.name {
            format!("from Fluent Bit's {} ({at})", c.plugin)
        } else {
            format!("from Fluent Bit's {} ({at}), read as {}", c.plugin, c.name)
        };
        comment(out, "    ", &from);
        for d in notes.iter().filter(|d| !keyed(d)) {
            comment(out, "    ", &self.describe(d));
        }
        let _ = writeln!(out, "    - name: {}", scalar(&c.name));
        self.settings(out, c, list, index, "      ");
    }

    fn settings(&self, out: &mut String, c: &Component, list: List, index: usize, indent: &str) {
        let notes = self.notes(list, index);
        if list == List::Service {
            for d in notes.iter().filter(|d| {
                !d.anchor
                    .as_ref()
                    .and_then(|a| a.key.as_deref())
                    .is_some_and(|k| c.has(k))
            }) {
                comment(out, indent, &self.describe(d));
            }
        }
        // The routing keys first, then the rest in the order they were read.
        let first = ["alias", "tag", "match", "match_regex"];
        let mut settings: Vec<&crate::translate::Setting> = c.settings.iter().collect();
        settings.sort_by_key(|s| {
            first
                .iter()
                .position(|f| f.eq_ignore_ascii_case(&s.key))
                .unwrap_or(first.len())
        });
        for s in settings {
            for d in notes.iter().filter(|d| {
                d.anchor
                    .as_ref()
                    .and_then(|a| a.key.as_deref())
                    .is_some_and(|k| k.eq_ignore_ascii_case(&s.key))
            }) {
                comment(out, indent, &self.describe(d));
            }
            let k = key(&s.key.to_ascii_lowercase(), indent);
            match &s.value {
                Value::Scalar(v) => {
                    let _ = writeln!(out, "{indent}{k}: {}", scalar(v.as_deref().unwrap_or("")));
                }
                Value::List(items) => {
                    let _ = writeln!(out, "{indent}{k}:");
                    for item in items {
                        let _ = writeln!(out, "{indent}  - {}", scalar(item));
                    }
                }
                Value::Map(entries) => {
                    let _ = writeln!(out, "{indent}{k}:");
                    map(out, entries, &format!("{indent}  "));
                }
            }
        }
    }
}

fn map(out: &mut String, entries: &[(String, usize, Value)], indent: &str) {
    for (k, _, v) in entries {
        match v {
            Value::Scalar(s) => {
                let _ = writeln!(
                    out,
                    "{indent}{}: {}",
                    key(k, indent),
                    scalar(s.as_deref().unwrap_or(""))
                );
            }
            Value::List(items) => {
                let _ = writeln!(out, "{indent}{}:", key(k, indent));
                for item in items {
                    let _ = writeln!(out, "{indent}  - {}", scalar(item));
                }
            }
            Value::Map(inner) => {
                let _ = writeln!(out, "{indent}{}:", key(k, indent));
                map(out, inner, &format!("{indent}  "));
            }
        }
    }
}

impl Migration {
    /// `line 7` in the main file, `inputs.conf:7` in another (relative to the main file's
    /// directory when it is below it).
    fn place(&self, file: &std::path::Path, line: usize) -> String {
        if file == self.path {
            return format!("line {line}");
        }
        let dir = self.path.parent().unwrap_or(std::path::Path::new(""));
        let shown = file.strip_prefix(dir).unwrap_or(file);
        format!("{}:{line}", shown.display())
    }

    /// A diagnostic as a comment: what it says, and where the Fluent Bit key is.
    fn describe(&self, d: &Diagnostic) -> String {
        let what = match d.severity {
            Severity::Warning => "warning: ",
            _ => "",
        };
        let key = d
            .key
            .as_deref()
            .map(|k| format!("{k}: "))
            .unwrap_or_default();
        let at = d
            .line
            .map(|l| format!(" ({})", self.place(&d.file, l)))
            .unwrap_or_default();
        format!("{what}{key}{}{at}", d.message)
    }
}

/// Writes `text` as `#` comment lines, wrapped.
fn comment(out: &mut String, indent: &str, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "{indent}# {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

/// A key at `indent`, quoted when it must be. YAML reads an implicit key (`key: value`) of at
/// most 1024 characters, so a longer one is written as an explicit key (`? key` then `: value`
/// on the next line, at the same indent).
fn key(k: &str, indent: &str) -> String {
    let s = scalar(k);
    if s.chars().count() > MAX_IMPLICIT_KEY {
        format!("? {s}\n{indent}")
    } else {
        s
    }
}

/// The longest key written implicitly: YAML's limit, 1024, less room for the `: ` after it.
const MAX_IMPLICIT_KEY: usize = 1000;

/// A scalar as YAML: plain when it reads back as the same string, else quoted.
pub(crate) fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.trim() == s
        && !s.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`',
        ])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.chars().any(|c| c.is_control())
        && !matches!(s, "~" | "null" | "Null" | "NULL");
    if plain {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        return out;
    }
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use kubetrail_core::config::yaml::{NodeValue, parse};
    use proptest::prelude::*;

    use super::{key, scalar};

    /// What `key: <scalar>` reads back as, through kubetrail's YAML reader.
    fn read_back(s: &str) -> Option<String> {
        let doc = parse(&format!("k: {}\n", scalar(s))).ok()?;
        let NodeValue::Map(entries) = doc.value else {
            return None;
        };
        match &entries.first()?.2.value {
            NodeValue::Scalar(v) => Some(v.clone().unwrap_or_default()),
            _ => None,
        }
    }

    #[test]
    fn scalars_that_need_quotes_get_them() {
        for (s, want) in [
            ("plain", "plain"),
            ("${VAR}/x", "${VAR}/x"),
            ("*", "'*'"),
            ("{tag}", "'{tag}'"),
            ("", "''"),
            ("null", "'null'"),
            (" lead", "' lead'"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            ("line\nbreak", "\"line\\nbreak\""),
        ] {
            assert_eq!(scalar(s), want, "{s:?}");
        }
    }

    /// Keys of any length read back as themselves, at the top level and nested (YAML reads an
    /// implicit key of at most 1024 characters).
    #[test]
    fn long_keys_read_back() {
        for len in [10, 1000, 1001, 1024, 3000] {
            for k in ["k".repeat(len), "\u{c}".repeat(len)] {
                let doc = format!("outer:\n  {}: v\n  after: w\n", key(&k, "  "));
                let parsed =
                    parse(&doc).unwrap_or_else(|e| panic!("{len}: line {}: {}", e.line, e.message));
                let NodeValue::Map(top) = parsed.value else {
                    panic!("not a map");
                };
                let NodeValue::Map(entries) = &top[0].2.value else {
                    panic!("not a nested map");
                };
                let keys: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
                assert_eq!(keys, [k.as_str(), "after"], "{len}");
            }
        }
    }

    proptest! {
        #[test]
        fn every_string_reads_back_as_itself(s in "[ -~\\t\\n\\u{e9}\\u{1F600}]{0,40}") {
            prop_assert_eq!(read_back(&s), Some(s.clone()), "{}", scalar(&s));
        }
    }
}
