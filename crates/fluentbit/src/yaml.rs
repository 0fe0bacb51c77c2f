//! Fluent Bit's YAML format (`fluent-bit.yaml`), read by Fluent Bit's rules
//! (`src/config_format/flb_cf_yaml.c`):
//!
//! - Top-level sections: `env` (a map of names to values, or a list of `{name, value}` /
//!   `{name, uri: file://..., refresh_interval}`), `includes` (a list of files, relative to the
//!   including file's directory, `*` globs allowed), `service` (once in all the files),
//!   `pipeline` (`inputs`, `filters`, `outputs`: lists of maps), `customs`, `parsers`,
//!   `multiline_parsers`, `stream_processor`, `plugins`, `upstream_servers`; any other
//!   top-level key is a section Fluent Bit ignores.
//! - Section names compare case-insensitively. Property keys in camelCase become snake_case
//!   (`readFromHead` is `read_from_head`) when they start with a lower-case letter and hold no
//!   `_`, as Fluent Bit translates them.
//! - Values are text whatever their YAML type (`on`, `5`, `true` are strings); a property may
//!   be a list of values (`regex: [a, b]`) or a map (Fluent Bit's groups, e.g. `processors`).
//!   Aliases are refused, as libyaml's events are by Fluent Bit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubetrail_core::config::Value;
use kubetrail_core::config::yaml::{self, Node, NodeValue};

use crate::diag::Diagnostic;
use crate::document::{Document, Format, Property, Section, SectionKind, Variable};
use crate::files::{FileId, Files};

/// Reads a YAML configuration and everything it includes; the first error stops the reading.
pub fn read(files: &dyn Files, path: &Path) -> Result<Document, Diagnostic> {
    let mut reader = Reader {
        files,
        seen: Vec::new(),
        service_at: None,
        doc: Document::empty(Format::Yaml, path),
    };
    let file: Arc<Path> = Arc::from(path);
    let (id, bytes) = files
        .read(path)
        .map_err(|e| Diagnostic::error(&file, 0, format!("cannot read the file: {e}")))?;
    reader.read_bytes(file, id, &bytes)?;
    Ok(reader.doc)
}

/// Reads YAML configuration text that includes nothing (for fuzzing and tests).
pub fn read_text(text: &[u8], path: &Path) -> Result<Document, Diagnostic> {
    let none = crate::files::Memory::default();
    let mut reader = Reader {
        files: &none,
        seen: Vec::new(),
        service_at: None,
        doc: Document::empty(Format::Yaml, path),
    };
    reader.read_bytes(Arc::from(path), FileId::Name(path.to_path_buf()), text)?;
    Ok(reader.doc)
}

/// Fluent Bit's key translation for YAML: `camelCase` becomes `camel_case` when the key starts
/// with a lower-case letter and holds no `_`; keys with `_` are lower-cased; others are kept.
pub fn translate_key(key: &str) -> String {
    if !key.starts_with(|c: char| c.is_ascii_lowercase()) {
        return key.to_string();
    }
    if key.contains('_') {
        return key.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

struct Reader<'a> {
    files: &'a dyn Files,
    /// Files read so far (Fluent Bit refuses to include a file twice).
    seen: Vec<FileId>,
    /// Where `service` was defined (it may be defined once).
    service_at: Option<(Arc<Path>, usize)>,
    doc: Document,
}

fn err(file: &Arc<Path>, line: usize, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(file, line, message)
}

/// A scalar's text (null is empty), or an error naming `what`.
fn scalar<'n>(file: &Arc<Path>, node: &'n Node, what: &str) -> Result<&'n str, Diagnostic> {
    match &node.value {
        NodeValue::Scalar(s) => Ok(s.as_deref().unwrap_or("")),
        _ => Err(err(
            file,
            node.line,
            format!("{what} must be a single value"),
        )),
    }
}

impl Reader<'_> {
    fn read_bytes(&mut self, file: Arc<Path>, id: FileId, bytes: &[u8]) -> Result<(), Diagnostic> {
        if self.seen.contains(&id) {
            return Err(err(
                &file,
                0,
                "this file is included a second time (Fluent Bit includes each file once)",
            ));
        }
        self.seen.push(id);
        self.doc.files.push(file.clone());
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            err(&file, line, "is not UTF-8 text")
        })?;
        let root = yaml::parse(text)
            .map_err(|e| err(&file, e.line, format!("invalid YAML: {}", e.message)))?;
        let top = match root.value {
            NodeValue::Map(m) => m,
            NodeValue::Scalar(None) => Vec::new(),
            _ => return Err(err(&file, root.line, "the top level must be a mapping")),
        };
        for (key, line, node) in top {
            match key.to_ascii_lowercase().as_str() {
                "env" => self.env(&file, &node)?,
                "includes" => self.includes(&file, line, &node)?,
                "service" => {
                    if let Some((f, l)) = &self.service_at {
                        return Err(err(
                            &file,
                            line,
                            format!(
                                "'service' is defined a second time (first at {}:{l}); Fluent Bit \
                                 allows one",
                                f.display()
                            ),
                        ));
                    }
                    self.service_at = Some((file.clone(), line));
                    let properties = self.flat_properties(&file, &node, "service")?;
                    self.doc.service = Some(Section {
                        kind: SectionKind::Service,
                        header: key,
                        file: file.clone(),
                        line,
                        properties,
                    });
                }
                "pipeline" => self.pipeline(&file, &node)?,
                "customs" => self.plugin_list(&file, &node, SectionKind::Custom, &key)?,
                "parsers" => self.plugin_list(&file, &node, SectionKind::Parser, &key)?,
                "multiline_parsers" => {
                    self.plugin_list(&file, &node, SectionKind::MultilineParser, &key)?
                }
                "stream_processor" => {
                    self.plugin_list(&file, &node, SectionKind::StreamProcessor, &key)?
                }
                "plugins" => self.doc.sections.push(Section {
                    kind: SectionKind::Plugins,
                    header: key,
                    file: file.clone(),
                    line,
                    properties: Vec::new(),
                }),
                "upstream_servers" => self.doc.sections.push(Section {
                    kind: SectionKind::UpstreamServers,
                    header: key,
                    file: file.clone(),
                    line,
                    properties: Vec::new(),
                }),
                _ => self.doc.sections.push(Section {
                    kind: SectionKind::Other,
                    header: key,
                    file: file.clone(),
                    line,
                    properties: Vec::new(),
                }),
            }
        }
        Ok(())
    }

    fn env(&mut self, file: &Arc<Path>, node: &Node) -> Result<(), Diagnostic> {
        match &node.value {
            NodeValue::Scalar(None) => Ok(()),
            NodeValue::Map(m) => {
                for (name, line, v) in m {
                    let value = scalar(file, v, &format!("env '{name}'"))?;
                    self.doc.variables.push(Variable {
                        name: name.clone(),
                        value: value.to_string(),
                        uri: None,
                        file: file.clone(),
                        line: *line,
                    });
                }
                Ok(())
            }
            NodeValue::Seq(items) => {
                for item in items {
                    self.env_item(file, item)?;
                }
                Ok(())
            }
            NodeValue::Scalar(Some(_)) => Err(err(
                file,
                node.line,
                "env must be a map of names to values, or a list of {name, value}",
            )),
        }
    }

    /// One entry of the list form: `{name, value}` or `{name, uri: file://..., refresh_interval}`.
    fn env_item(&mut self, file: &Arc<Path>, item: &Node) -> Result<(), Diagnostic> {
        let NodeValue::Map(m) = &item.value else {
            return Err(err(
                file,
                item.line,
                "an env entry must be a map: {name, value}",
            ));
        };
        let (mut name, mut value, mut uri) = (None, None, None);
        for (k, line, v) in m {
            match k.to_ascii_lowercase().as_str() {
                "name" => name = Some(scalar(file, v, "env name")?.to_string()),
                "value" => value = Some(scalar(file, v, "env value")?.to_string()),
                "uri" => uri = Some((scalar(file, v, "env uri")?.to_string(), *line)),
                "refresh_interval" => self.doc.warnings.push(Diagnostic::warning(
                    file,
                    *line,
                    "env refresh_interval: kubetrail reads the variable's file once, at start",
                )),
                other => {
                    return Err(err(
                        file,
                        *line,
                        format!(
                            "unknown key '{other}' in an env entry (name, value, uri, refresh_interval)"
                        ),
                    ));
                }
            }
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Err(err(file, item.line, "an env entry has no name"));
        };
        let source = uri.as_ref().map(|(u, _)| u.clone());
        let value = match (value, uri) {
            (Some(v), None) => v,
            (None, Some((uri, line))) => {
                let Some(path) = uri.strip_prefix("file://") else {
                    return Err(err(
                        file,
                        line,
                        format!("env '{name}': uri '{uri}': only file:// URIs are supported"),
                    ));
                };
                let (_, bytes) = self.files.read(Path::new(path)).map_err(|e| {
                    err(file, line, format!("env '{name}': cannot read {path}: {e}"))
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    err(
                        file,
                        line,
                        format!("env '{name}': {path} is not UTF-8 text"),
                    )
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_string()
            }
            (Some(_), Some((_, line))) => {
                return Err(err(
                    file,
                    line,
                    format!("env '{name}': give value or uri, not both"),
                ));
            }
            (None, None) => {
                return Err(err(file, item.line, format!("env '{name}' has no value")));
            }
        };
        self.doc.variables.push(Variable {
            name,
            value,
            uri: source,
            file: file.clone(),
            line: item.line,
        });
        Ok(())
    }

    fn includes(&mut self, file: &Arc<Path>, line: usize, node: &Node) -> Result<(), Diagnostic> {
        let items = match &node.value {
            NodeValue::Seq(items) => items.clone(),
            NodeValue::Scalar(None) => Vec::new(),
            _ => return Err(err(file, line, "includes must be a list of files")),
        };
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for item in items {
            let target = scalar(file, &item, "an include")?.to_string();
            let joined = if Path::new(&target).is_absolute() {
                PathBuf::from(&target)
            } else {
                dir.join(&target)
            };
            let paths = if target.contains('*') {
                let pattern = joined.display().to_string();
                let found = self
                    .files
                    .glob(&pattern)
                    .map_err(|m| err(file, item.line, format!("include '{target}': {m}")))?;
                if found.is_empty() {
                    return Err(err(
                        file,
                        item.line,
                        format!("include '{target}': '{pattern}' matches no file"),
                    ));
                }
                found
            } else {
                vec![joined]
            };
            for p in paths {
                let (id, bytes) = self.files.read(&p).map_err(|e| {
                    err(
                        file,
                        item.line,
                        format!("include '{target}': cannot read {}: {e}", p.display()),
                    )
                })?;
                self.read_bytes(Arc::from(p.as_path()), id, &bytes)?;
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, file: &Arc<Path>, node: &Node) -> Result<(), Diagnostic> {
        let entries = match &node.value {
            NodeValue::Map(m) => m.clone(),
            NodeValue::Scalar(None) => Vec::new(),
            _ => return Err(err(file, node.line, "pipeline must be a map")),
        };
        for (key, line, list) in entries {
            let kind = match key.to_ascii_lowercase().as_str() {
                "inputs" => SectionKind::Input,
                "filters" => SectionKind::Filter,
                "outputs" => SectionKind::Output,
                _ => {
                    return Err(err(
                        file,
                        line,
                        format!(
                            "the pipeline component '{key}' is not valid: inputs, filters or outputs"
                        ),
                    ));
                }
            };
            self.plugin_list(file, &list, kind, &key)?;
        }
        Ok(())
    }

    fn plugin_list(
        &mut self,
        file: &Arc<Path>,
        node: &Node,
        kind: SectionKind,
        header: &str,
    ) -> Result<(), Diagnostic> {
        let items = match &node.value {
            NodeValue::Seq(items) => items,
            NodeValue::Scalar(None) => return Ok(()),
            _ => return Err(err(file, node.line, format!("{header} must be a list"))),
        };
        for item in items {
            let properties = self.plugin_properties(file, item, header)?;
            self.doc.sections.push(Section {
                kind: kind.clone(),
                header: header.to_string(),
                file: file.clone(),
                line: item.line,
                properties,
            });
        }
        Ok(())
    }

    /// The properties of a plugin: scalars, lists of scalars, and maps.
    fn plugin_properties(
        &self,
        file: &Arc<Path>,
        node: &Node,
        what: &str,
    ) -> Result<Vec<Property>, Diagnostic> {
        let NodeValue::Map(m) = &node.value else {
            return Err(err(
                file,
                node.line,
                format!("an entry of {what} must be a map of properties"),
            ));
        };
        let mut out = Vec::with_capacity(m.len());
        for (key, line, v) in m {
            let value = match &v.value {
                NodeValue::Scalar(s) => Value::Scalar(Some(s.clone().unwrap_or_default())),
                NodeValue::Seq(items) => {
                    let mut list = Vec::with_capacity(items.len());
                    for i in items {
                        list.push(scalar(file, i, &format!("an item of '{key}'"))?.to_string());
                    }
                    Value::List(list)
                }
                NodeValue::Map(_) => map_value(v),
            };
            out.push(Property {
                key: translate_key(key),
                value,
                file: file.clone(),
                line: *line,
            });
        }
        Ok(out)
    }

    /// `service` (and other flat sections): a map of keys to single values.
    fn flat_properties(
        &self,
        file: &Arc<Path>,
        node: &Node,
        what: &str,
    ) -> Result<Vec<Property>, Diagnostic> {
        let entries = match &node.value {
            NodeValue::Map(m) => m,
            NodeValue::Scalar(None) => return Ok(Vec::new()),
            _ => return Err(err(file, node.line, format!("{what} must be a map"))),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, line, v) in entries {
            let value = scalar(file, v, &format!("{what} '{key}'"))?;
            out.push(Property {
                key: translate_key(key),
                value: Value::Scalar(Some(value.to_string())),
                file: file.clone(),
                line: *line,
            });
        }
        Ok(out)
    }
}

/// A YAML map as a nested [`Value::Map`] (lists of non-scalars become empty strings).
fn map_value(node: &Node) -> Value {
    match &node.value {
        NodeValue::Scalar(s) => Value::Scalar(Some(s.clone().unwrap_or_default())),
        NodeValue::Seq(items) => Value::List(
            items
                .iter()
                .map(|i| match &i.value {
                    NodeValue::Scalar(s) => s.clone().unwrap_or_default(),
                    _ => String::new(),
                })
                .collect(),
        ),
        NodeValue::Map(m) => Value::Map(
            m.iter()
                .map(|(k, l, v)| (k.clone(), *l, map_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::Memory;

    fn read_mem(files: &Memory, path: &str) -> Result<Document, Diagnostic> {
        read(files, Path::new(path))
    }

    #[test]
    fn keys_translate_as_fluent_bit_does() {
        assert_eq!(translate_key("readFromHead"), "read_from_head");
        assert_eq!(translate_key("logLevel"), "log_level");
        assert_eq!(translate_key("db.sync"), "db.sync");
        assert_eq!(translate_key("tls.crtFile"), "tls.crt_file");
        // With an underscore: lower-cased; starting upper-case: as written.
        assert_eq!(translate_key("Kube_URL"), "Kube_URL");
        assert_eq!(translate_key("kube_URL"), "kube_url");
        assert_eq!(translate_key("Name"), "Name");
    }

    #[test]
    fn sections_values_and_lines() {
        let doc = read_text(
            b"service:\n  flush: 1\n  httpServer: on\npipeline:\n  inputs:\n    - name: tail\n      path: /a\n      regex:\n        - a b\n        - c d\n      group1:\n        a: b\n  outputs:\n    - name: stdout\n      match: '*'\n",
            Path::new("/c/f.yaml"),
        )
        .unwrap();
        let service = doc.service.unwrap();
        assert_eq!(service.properties[1].key, "http_server");
        assert_eq!(service.properties[1].line, 3);
        assert_eq!(doc.sections.len(), 2);
        let input = &doc.sections[0];
        assert_eq!(input.kind, SectionKind::Input);
        assert_eq!(input.line, 6);
        assert_eq!(
            input.properties[2].value,
            Value::List(vec!["a b".into(), "c d".into()])
        );
        assert!(matches!(input.properties[3].value, Value::Map(_)));
        assert_eq!(doc.sections[1].properties[1].scalar(), Some("*"));
    }

    #[test]
    fn structural_errors_name_the_line() {
        for (text, line, start) in [
            (
                "service:\n  a: 1\nservice:\n  b: 2\n",
                3,
                "'service' is defined a second time",
            ),
            (
                "pipeline:\n  processors: []\n",
                2,
                "the pipeline component 'processors' is not valid",
            ),
            (
                "pipeline:\n  inputs:\n    - just a string\n",
                3,
                "an entry of inputs must be a map",
            ),
            (
                "pipeline:\n  inputs:\n    - name: x\n      l: [[1]]\n",
                4,
                "an item of 'l' must be a single value",
            ),
            (
                "service:\n  a: [1]\n",
                2,
                "service 'a' must be a single value",
            ),
            ("- a\n", 1, "the top level must be a mapping"),
            (
                "a: &x 1\nb: *x\n",
                2,
                "invalid YAML: YAML aliases are not supported",
            ),
            ("env: 5\n", 1, "env must be a map"),
            ("env:\n  - value: x\n", 2, "an env entry has no name"),
        ] {
            let d = read_text(text.as_bytes(), Path::new("/c/f.yaml")).unwrap_err();
            assert_eq!(d.line, Some(line), "{text}: {}", d.message);
            assert!(d.message.starts_with(start), "{text}: {}", d.message);
        }
    }

    #[test]
    fn env_in_both_forms() {
        let files = Memory::default()
            .with(
                "/c/f.yaml",
                "env:\n  A: 1\nincludes: [more.yaml]\n",
            )
            .with(
                "/c/more.yaml",
                "env:\n  - name: B\n    value: two\n  - name: C\n    uri: file:///run/c\n    refresh_interval: 60\n",
            )
            .with("/run/c", "three\n");
        let doc = read_mem(&files, "/c/f.yaml").unwrap();
        let vars: Vec<(&str, &str)> = doc
            .variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(vars, vec![("A", "1"), ("B", "two"), ("C", "three")]);
        assert_eq!(doc.warnings.len(), 1);
        assert!(
            doc.warnings[0]
                .message
                .contains("reads the variable's file once")
        );
        let files = Memory::default().with("/c/f.yaml", "env:\n  - name: D\n    uri: https://x\n");
        let d = read_mem(&files, "/c/f.yaml").unwrap_err();
        assert!(d.message.contains("only file:// URIs"), "{}", d.message);
    }

    #[test]
    fn includes_resolve_from_the_including_file_and_glob() {
        let files = Memory::default()
            .with("/c/f.yaml", "includes:\n  - sub/a.yaml\n")
            .with("/c/sub/a.yaml", "includes:\n  - 'p*.yaml'\n")
            .with("/c/sub/p2.yaml", "pipeline:\n  outputs:\n    - name: two\n")
            .with("/c/sub/p1.yaml", "pipeline:\n  outputs:\n    - name: one\n");
        let doc = read_mem(&files, "/c/f.yaml").unwrap();
        let names: Vec<_> = doc
            .sections
            .iter()
            .map(|s| s.last("name").unwrap().scalar().unwrap().to_string())
            .collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(doc.files.len(), 4);
        let files = Memory::default().with("/c/f.yaml", "includes: [f.yaml]\n");
        let d = read_mem(&files, "/c/f.yaml").unwrap_err();
        assert!(
            d.message.contains("included a second time"),
            "{}",
            d.message
        );
        let files = Memory::default().with("/c/f.yaml", "includes: ['x/*.yaml']\n");
        let d = read_mem(&files, "/c/f.yaml").unwrap_err();
        assert!(d.message.contains("matches no file"), "{}", d.message);
        let files = Memory::default().with("/c/f.yaml", "includes: [gone.yaml]\n");
        let d = read_mem(&files, "/c/f.yaml").unwrap_err();
        assert_eq!(d.line, Some(1));
        assert!(
            d.message
                .starts_with("include 'gone.yaml': cannot read /c/gone.yaml"),
            "{}",
            d.message
        );
    }

    #[test]
    fn other_sections_are_kept_for_the_translation() {
        let doc = read_text(
            b"customs:\n  - name: calyptia\nparsers:\n  - name: json\n    format: json\nunknown:\n  a: b\n",
            Path::new("/c/f.yaml"),
        )
        .unwrap();
        let kinds: Vec<_> = doc.sections.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            [SectionKind::Custom, SectionKind::Parser, SectionKind::Other]
        );
    }
}
