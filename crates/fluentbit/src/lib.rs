//! kubetrail-fluentbit: reads Fluent Bit's configuration files as they are (the classic
//! format and the YAML format, with their includes and variables, by Fluent Bit's own rules)
//! and translates them into kubetrail's configuration model, for the plugins kubetrail has.
//! What cannot be translated is an error naming the file, the line and what to use instead;
//! what has no effect is a warning; what means something else in kubetrail is a note.
//!
//! - [`classic`], [`yaml`]: the two readers, producing a [`Document`].
//! - [`translate()`]: a document → a [`Migration`] (kubetrail components with their lines).
//! - [`Migration::to_config`]: → the [`Config`] the pipeline is built from (`run`, `check`).
//! - [`Migration::to_yaml`]: → kubetrail YAML with comments (`migrate`).

pub mod classic;
mod config;
pub mod diag;
pub mod document;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
mod render;
mod translate;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use kubetrail_core::config::yaml::NodeValue;
use kubetrail_core::config::{Config, ConfigError};

pub use diag::{Diagnostic, Severity};
pub use document::{Document, Format};
pub use files::{Disk, Files, Memory};
pub use translate::{Component, EnvVar, Migration, Setting, translate};

/// Which language a configuration file speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// kubetrail's own YAML.
    Kubetrail,
    /// Fluent Bit's classic format.
    FluentBitClassic,
    /// Fluent Bit's YAML format.
    FluentBitYaml,
}

impl Dialect {
    pub fn describe(self) -> &'static str {
        match self {
            Dialect::Kubetrail => "kubetrail YAML",
            Dialect::FluentBitClassic => "Fluent Bit classic format",
            Dialect::FluentBitYaml => "Fluent Bit YAML format",
        }
    }
}

/// Service keys only Fluent Bit's YAML has (their presence makes a YAML file Fluent Bit's).
const FLUENT_BIT_SERVICE_KEYS: &[&str] = &[
    "flush",
    "daemon",
    "http_server",
    "http_port",
    "parsers_file",
    "plugins_file",
    "streams_file",
    "log_file",
    "health_check",
    "hot_reload",
    "coro_stack_size",
];

/// Top-level sections only Fluent Bit's YAML has.
const FLUENT_BIT_SECTIONS: &[&str] = &[
    "includes",
    "customs",
    "parsers",
    "multiline_parsers",
    "stream_processor",
    "plugins",
    "upstream_servers",
];

/// Plugin names only Fluent Bit has, by pipeline list (kubetrail reads them as Fluent Bit's).
fn fluent_bit_only(list: &str, name: &str) -> bool {
    match list {
        "inputs" => matches!(name, "tail" | "http") || translate::catalog_input(name),
        "filters" => name == "record_modifier" || translate::catalog_filter(name),
        "outputs" => {
            matches!(name, "es" | "pgsql" | "opensearch") || translate::catalog_output(name)
        }
        _ => false,
    }
}

/// Decides the dialect of a file: `.conf` is Fluent Bit's classic format (as Fluent Bit
/// decides by the extension); a file whose first line of content starts with `[` or `@` is too;
/// a YAML file is Fluent Bit's when it has something only Fluent Bit's YAML has (an
/// `includes`, `customs`, `parsers`... section, `env` as a list, a service key such as `flush`,
/// or a plugin such as `tail`, `es`, `pgsql`), and kubetrail's otherwise.
pub fn detect(path: &Path, text: &str) -> Dialect {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.as_deref() == Some("conf") {
        return Dialect::FluentBitClassic;
    }
    let yaml_ext = matches!(ext.as_deref(), Some("yaml" | "yml"));
    if !yaml_ext {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        if first.is_some_and(|l| l.starts_with('[') || l.starts_with('@')) {
            return Dialect::FluentBitClassic;
        }
    }
    let Ok(root) = kubetrail_core::config::yaml::parse(text) else {
        return Dialect::Kubetrail;
    };
    let NodeValue::Map(top) = root.value else {
        return Dialect::Kubetrail;
    };
    for (key, _, node) in &top {
        let key = key.to_ascii_lowercase();
        if FLUENT_BIT_SECTIONS.contains(&key.as_str()) {
            return Dialect::FluentBitYaml;
        }
        match (key.as_str(), &node.value) {
            ("env", NodeValue::Seq(_)) => return Dialect::FluentBitYaml,
            ("service", NodeValue::Map(m))
                if m.iter().any(|(k, _, _)| {
                    let k = yaml::translate_key(k).to_ascii_lowercase();
                    FLUENT_BIT_SERVICE_KEYS.contains(&k.as_str()) || k.starts_with("storage.")
                }) =>
            {
                return Dialect::FluentBitYaml;
            }
            ("pipeline", NodeValue::Map(m)) => {
                for (list, _, items) in m {
                    let list = list.to_ascii_lowercase();
                    let NodeValue::Seq(items) = &items.value else {
                        continue;
                    };
                    for item in items {
                        let NodeValue::Map(props) = &item.value else {
                            continue;
                        };
                        let name = props.iter().find_map(|(k, _, v)| match &v.value {
                            NodeValue::Scalar(Some(s)) if k.eq_ignore_ascii_case("name") => {
                                Some(s.trim().to_ascii_lowercase())
                            }
                            _ => None,
                        });
                        if name.is_some_and(|n| fluent_bit_only(&list, &n)) {
                            return Dialect::FluentBitYaml;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Dialect::Kubetrail
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// kubetrail's own YAML, or the translated configuration, has a problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Fluent Bit configuration has errors (with its warnings: errors first).
    #[error("{}", .0.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    FluentBit(Vec<Diagnostic>),
    /// `migrate` was given a file in kubetrail's own format.
    #[error("{0} is already in kubetrail's format")]
    AlreadyKubetrail(std::path::PathBuf),
}

/// A configuration ready to be built, with what the Fluent Bit reader had to say about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub dialect: Dialect,
    /// Warnings and notes (a Fluent Bit file only).
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads a Fluent Bit configuration into a [`Document`]: the YAML reader for
/// [`Dialect::FluentBitYaml`], the classic one otherwise.
pub fn read(files: &dyn Files, path: &Path, dialect: Dialect) -> Result<Document, Diagnostic> {
    match dialect {
        Dialect::FluentBitYaml => yaml::read(files, path),
        Dialect::FluentBitClassic | Dialect::Kubetrail => classic::read(files, path),
    }
}

/// The dialect of the file at `path` (read through `files`).
fn dialect_of(files: &dyn Files, path: &Path) -> Result<Dialect, ConfigError> {
    let (_, bytes) = files.read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(detect(path, &String::from_utf8_lossy(&bytes)))
}

/// What is reported when a file is refused: its errors, then its warnings (the notes on
/// meaning matter once the file can run).
pub fn refusal(mut all: Vec<Diagnostic>) -> Vec<Diagnostic> {
    all.retain(|d| d.severity != Severity::Note);
    all.sort_by_key(|d| d.severity);
    all
}

/// Reads and translates a Fluent Bit file (`overrides`: variables that win over the file's
/// and the environment's, for tests).
pub fn migration(
    files: &dyn Files,
    path: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<(Dialect, Migration), LoadError> {
    let dialect = dialect_of(files, path)?;
    if dialect == Dialect::Kubetrail {
        return Err(LoadError::AlreadyKubetrail(path.to_path_buf()));
    }
    let doc = read(files, path, dialect).map_err(|d| LoadError::FluentBit(vec![d]))?;
    Ok((dialect, translate(&doc, overrides)))
}

/// Loads any configuration file `run` and `check` take: kubetrail's YAML, or a Fluent Bit
/// file translated.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    load_with(&Disk, path, &BTreeMap::new())
}

/// [`load`] through `files`, with variable overrides (for tests).
pub fn load_with(
    files: &dyn Files,
    path: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Loaded, LoadError> {
    let dialect = dialect_of(files, path)?;
    if dialect == Dialect::Kubetrail {
        let (_, bytes) = files.read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        return Ok(Loaded {
            config: Config::parse(&text, path)?,
            dialect,
            diagnostics: Vec::new(),
        });
    }
    let (dialect, m) = migration(files, path, overrides)?;
    if m.has_errors() {
        return Err(LoadError::FluentBit(refusal(m.diagnostics)));
    }
    let config = m.to_config(overrides)?;
    Ok(Loaded {
        config,
        dialect,
        diagnostics: m.diagnostics,
    })
}
