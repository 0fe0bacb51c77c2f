//! Diagnostics of the Fluent Bit reader: errors (the file cannot be used as it is) and warnings
//! (something that has no effect in kubetrail, or behaves differently), each pointing at the
//! file and line, the component and the key, the same way kubetrail's own configuration
//! errors do.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something kubetrail cannot do: the configuration is refused.
    Error,
    /// Something that has no effect in kubetrail: reported, the configuration is used.
    Warning,
    /// A place where kubetrail's meaning differs from Fluent Bit's (better, or by design):
    /// shown by `check` and as a comment by `migrate`.
    Note,
}

/// Which list of the translated configuration a diagnostic is about (for `migrate`'s comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    Service,
    Inputs,
    Filters,
    Outputs,
}

/// Where in the translated configuration a diagnostic belongs: a component, and one of its
/// (kubetrail) keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub list: List,
    pub index: usize,
    pub key: Option<String>,
}

/// One problem found in a Fluent Bit configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Arc<Path>,
    pub line: Option<usize>,
    /// `[INPUT] tail`, `[SERVICE]`, `pipeline.outputs[1] es`, ...; none for file-level problems.
    pub component: Option<String>,
    /// The key as written.
    pub key: Option<String>,
    pub message: String,
    /// Where `migrate` writes it as a comment.
    pub anchor: Option<Box<Anchor>>,
}

impl Diagnostic {
    /// A file-level error (syntax, includes, variables).
    pub fn error(file: &Arc<Path>, line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            line: (line > 0).then_some(line),
            component: None,
            key: None,
            message: message.into(),
            anchor: None,
        }
    }

    /// A file-level warning.
    pub fn warning(file: &Arc<Path>, line: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(c) = &self.component {
            write!(f, ": {c}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key '{k}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Severity {
    /// How `check` prefixes it.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}
