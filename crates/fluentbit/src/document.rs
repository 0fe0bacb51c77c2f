//! What a Fluent Bit configuration says, before any of it is interpreted: the sections in the
//! order Fluent Bit creates them (includes read where they appear), their properties with the
//! file and line each was written on, and the variables (`@SET`, YAML `env`). Both readers
//! (classic and YAML) produce this; the translation into kubetrail's model reads only this.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubetrail_core::config::Value;

use crate::diag::Diagnostic;

/// Which of Fluent Bit's two formats a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[SECTION]`s with indented `key value` lines (`.conf`).
    Classic,
    /// `service:`, `pipeline:` ... (`.yaml`, `.yml`).
    Yaml,
}

/// The kind of a section, as Fluent Bit decides it from the header (classic) or the
/// top-level key (YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    Service,
    Input,
    Filter,
    Output,
    Custom,
    Parser,
    MultilineParser,
    StreamProcessor,
    Plugins,
    UpstreamServers,
    /// A section Fluent Bit does not know (it ignores them).
    Other,
}

/// One property: `Key value` (classic) or `key: value` (YAML).
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The key as written (Fluent Bit compares keys case-insensitively).
    pub key: String,
    /// A scalar (classic values are always scalars), a YAML list, or a YAML map.
    pub value: Value,
    pub file: Arc<Path>,
    pub line: usize,
}

impl Property {
    /// The key as Fluent Bit compares it.
    pub fn lower_key(&self) -> String {
        self.key.to_ascii_lowercase()
    }

    /// The value when it is a single string (a YAML null reads as empty).
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s.as_deref().unwrap_or("")),
            _ => None,
        }
    }
}

/// A section: `[INPUT]` ... or one item of YAML `pipeline.inputs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub kind: SectionKind,
    /// The header as written (`INPUT`, `Input`, `multiline_parser`, ...).
    pub header: String,
    pub file: Arc<Path>,
    pub line: usize,
    pub properties: Vec<Property>,
}

impl Section {
    /// Every property whose key is `key` (case-insensitive), in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.properties
            .iter()
            .filter(move |p| p.key.eq_ignore_ascii_case(key))
    }

    /// The last property named `key` (Fluent Bit's last value wins for single-valued options).
    pub fn last(&self, key: &str) -> Option<&Property> {
        self.properties
            .iter()
            .rfind(|p| p.key.eq_ignore_ascii_case(key))
    }
}

/// A variable: `@SET name=value` or an entry of YAML `env`.
#[derive(Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub value: String,
    /// Where the value was read from, for a YAML `env` entry with `uri: file://...` (a
    /// secret, typically: it is used, never written out).
    pub uri: Option<String>,
    pub file: Arc<Path>,
    pub line: usize,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.uri.is_some() {
            "<from a file>"
        } else {
            &self.value
        };
        f.debug_struct("Variable")
            .field("name", &self.name)
            .field("value", &value)
            .field("uri", &self.uri)
            .field("file", &self.file)
            .field("line", &self.line)
            .finish()
    }
}

/// A whole configuration: the main file and everything it includes.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub format: Format,
    /// The main file.
    pub path: PathBuf,
    /// Every file read, the main file first.
    pub files: Vec<Arc<Path>>,
    /// Variables in the order they were defined (a later definition wins).
    pub variables: Vec<Variable>,
    /// All `[SERVICE]` sections merged into one (Fluent Bit keeps one service section), or
    /// none if the configuration has no service section.
    pub service: Option<Section>,
    /// Every other section in the order it was read.
    pub sections: Vec<Section>,
    /// Warnings found while reading (errors stop the reading).
    pub warnings: Vec<Diagnostic>,
}

impl Document {
    /// A document of `format` with main file `path` and nothing read yet.
    pub(crate) fn empty(format: Format, path: &Path) -> Self {
        Document {
            format,
            path: path.to_path_buf(),
            files: Vec::new(),
            variables: Vec::new(),
            service: None,
            sections: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The value of variable `name` (the last definition), if defined in the configuration.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().rev().find(|v| v.name == name)
    }
}
