//! The configuration loader: YAML shaped like Fluent Bit's (`service`, `pipeline.inputs` /
//! `filters` / `outputs`, each with `name`), case-insensitive option names, `${ENV}`
//! expansion, and errors that name the file, the component, the key and its line, with the
//! closest valid key as a suggestion.
//!
//! Components read their options through [`Section`]'s typed getters. Every getter records the
//! key it was asked for, so [`Section::finish`] knows the component's valid keys without a
//! separate list and can report unknown keys with a suggestion.

mod tls;
pub mod values;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use tls::TlsOptions;
pub use values::{parse_bool, parse_duration, parse_size};
use yaml::{Node, NodeValue};

/// A configuration error. Its Display is the message a user sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid YAML: {message}")]
    Yaml {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Setting(Box<SettingError>),
}

/// A problem with one setting, or one component.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingError {
    pub file: Arc<Path>,
    /// e.g. `inputs[0] (kubernetes_events)`, or `service`.
    pub component: String,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.component)?;
        if let Some(key) = &self.key {
            write!(f, ": key '{key}'")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean '{s}'?)")?;
        }
        Ok(())
    }
}

/// What kind of section a [`Section`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Service,
    Input,
    Filter,
    Output,
}

impl SectionKind {
    fn list_name(self) -> &'static str {
        match self {
            SectionKind::Service => "service",
            SectionKind::Input => "inputs",
            SectionKind::Filter => "filters",
            SectionKind::Output => "outputs",
        }
    }
}

/// A setting's value as written (after the YAML parse, before interpretation).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar; `None` for YAML null.
    Scalar(Option<String>),
    List(Vec<String>),
    /// A nested mapping (e.g. `tls: {verify: off}` or `headers: {X-Team: sre}`); keys as written.
    Map(Vec<(String, usize, Value)>),
}

#[derive(Debug, Clone)]
struct Entry {
    written_key: String,
    line: usize,
    value: Value,
    /// The file the entry was written in, when it is not the section's (a Fluent Bit
    /// `[SERVICE]` can gather keys from several included files).
    file: Option<Arc<Path>>,
}

/// One component's settings (or the `service` section).
#[derive(Debug, Clone)]
pub struct Section {
    kind: SectionKind,
    index: usize,
    name: String,
    /// How labels name the component when it was written under another name (a Fluent Bit
    /// plugin read as a kubetrail component: `tail, read as audit_file`).
    display: Option<String>,
    line: usize,
    file: Arc<Path>,
    entries: BTreeMap<String, Entry>,
    asked: BTreeSet<String>,
    env: Arc<BTreeMap<String, String>>,
}

impl Section {
    /// Builds a section from key/value pairs (for tests and for commands such as `demo` that
    /// make their own pipeline). Keys are case-insensitive.
    pub fn from_pairs(kind: SectionKind, name: &str, pairs: &[(&str, &str)]) -> Section {
        let mut entries = BTreeMap::new();
        for (k, v) in pairs {
            entries.insert(
                k.to_ascii_lowercase(),
                Entry {
                    written_key: k.to_string(),
                    line: 0,
                    value: Value::Scalar(Some(v.to_string())),
                    file: None,
                },
            );
        }
        Section {
            kind,
            index: 0,
            name: name.to_string(),
            display: None,
            line: 0,
            file: Arc::from(Path::new("<built-in>")),
            entries,
            asked: ["name".to_string()].into(),
            env: Arc::new(BTreeMap::new()),
        }
    }

    /// Adds or replaces a list-valued setting (for built-in pipelines).
    pub fn set_list(&mut self, key: &str, items: Vec<String>) {
        self.entries.insert(
            key.to_ascii_lowercase(),
            Entry {
                written_key: key.to_string(),
                line: 0,
                value: Value::List(items),
                file: None,
            },
        );
    }

    /// An empty section, for readers of other formats (Fluent Bit's), which then add the
    /// settings with [`Section::insert`]. `env` holds the variables `${VAR}` expands from
    /// before the process environment.
    pub fn new(
        kind: SectionKind,
        index: usize,
        name: &str,
        file: Arc<Path>,
        line: usize,
        env: Arc<BTreeMap<String, String>>,
    ) -> Section {
        Section {
            kind,
            index,
            name: name.to_ascii_lowercase(),
            display: None,
            line,
            file,
            entries: BTreeMap::new(),
            asked: ["name".to_string()].into(),
            env,
        }
    }

    /// Adds a setting written at `line` of `file` (the section's file when `None`). Keys are
    /// case-insensitive; a key given twice is an error pointing at the second.
    pub fn insert(
        &mut self,
        key: &str,
        value: Value,
        file: Option<Arc<Path>>,
        line: usize,
    ) -> Result<(), ConfigError> {
        let lower = key.to_ascii_lowercase();
        if self.entries.contains_key(&lower) {
            return Err(ConfigError::Setting(Box::new(SettingError {
                file: file.unwrap_or_else(|| self.file.clone()),
                component: self.label(),
                key: Some(key.to_string()),
                line: (line > 0).then_some(line),
                message: "is given twice".into(),
                suggestion: None,
            })));
        }
        self.entries.insert(
            lower,
            Entry {
                written_key: key.to_string(),
                line,
                value,
                file,
            },
        );
        Ok(())
    }

    /// Names the component in messages as written (`tail, read as audit_file`) when it was
    /// configured under another name than the one it runs as.
    pub fn set_display_name(&mut self, display: impl Into<String>) {
        self.display = Some(display.into());
    }

    pub fn kind(&self) -> SectionKind {
        self.kind
    }

    /// The component name (`kubernetes_events`, `stdout`, ...); empty for `service`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Position among the sections of its kind.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How errors refer to this section: `inputs[0] (kubernetes_events)` or `service`.
    pub fn label(&self) -> String {
        match self.kind {
            SectionKind::Service => "service".to_string(),
            k => format!(
                "{}[{}] ({})",
                k.list_name(),
                self.index,
                self.display.as_deref().unwrap_or(&self.name)
            ),
        }
    }

    /// The file this section came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// An error about `key` of this section, pointing at its line when it was written.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.line_of(key);
        ConfigError::Setting(Box::new(SettingError {
            file: self.file_of(key),
            component: self.label(),
            key: Some(key.to_string()),
            line,
            message: message.into(),
            suggestion: None,
        }))
    }

    /// An error about the section as a whole.
    pub fn section_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Setting(Box::new(SettingError {
            file: self.file.clone(),
            component: self.label(),
            key: None,
            line: (self.line > 0).then_some(self.line),
            message: message.into(),
            suggestion: None,
        }))
    }

    /// The file `key` was written in.
    fn file_of(&self, key: &str) -> Arc<Path> {
        self.entries
            .get(&key.to_ascii_lowercase())
            .and_then(|e| e.file.clone())
            .unwrap_or_else(|| self.file.clone())
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        self.find(&key.to_ascii_lowercase())
            .map(|(line, _)| line)
            .filter(|l| *l > 0)
    }

    /// The line and value of a lowercase dotted key, written whole or as nested maps split
    /// at any of its dots, at any depth (`ui.tls.crt_file` finds `ui: {tls: {crt_file: ..}}`).
    fn find(&self, lower: &str) -> Option<(usize, &Value)> {
        if let Some(e) = self.entries.get(lower) {
            return Some((e.line, &e.value));
        }
        lower
            .match_indices('.')
            .find_map(|(i, _)| match &self.entries.get(&lower[..i])?.value {
                Value::Map(m) => find_nested(m, &lower[i + 1..]),
                _ => None,
            })
    }

    /// The raw value of `key` (dotted keys also look inside nested maps: `tls.verify` finds
    /// `tls: {verify: ..}`, at any depth), and marks the key as known.
    pub fn get_value(&mut self, key: &str) -> Option<Value> {
        let lower = key.to_ascii_lowercase();
        let found = self.find(&lower).map(|(_, v)| v.clone());
        self.asked.insert(lower);
        found
    }

    /// Whether `key` was written (does not mark it as known).
    pub fn has(&self, key: &str) -> bool {
        self.find(&key.to_ascii_lowercase()).is_some()
    }

    /// A single string value, `${VAR}` expanded. A YAML null reads as an empty string.
    pub fn get_str(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get_value(key) {
            None => Ok(None),
            Some(Value::Scalar(s)) => self.expand(key, &s.unwrap_or_default()).map(Some),
            Some(_) => Err(self.error(key, "expects a single value, not a list or a map")),
        }
    }

    /// A string with a default.
    pub fn get_str_or(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.get_str(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn get_bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.typed(key, parse_bool)
    }

    pub fn get_duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.typed(key, parse_duration)
    }

    pub fn get_size(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.typed(key, parse_size)
    }

    pub fn get_u64(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.typed(key, |s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{}' is not a whole number", s.trim()))
        })
    }

    /// One of a fixed set of words (case-insensitive); returns the canonical spelling.
    pub fn get_choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ConfigError> {
        let Some(s) = self.get_str(key)? else {
            return Ok(None);
        };
        let t = s.trim();
        if let Some(c) = choices.iter().find(|c| c.eq_ignore_ascii_case(t)) {
            return Ok(Some(*c));
        }
        let mut err = match self.error(key, format!("'{t}' is not one of: {}", choices.join(", ")))
        {
            ConfigError::Setting(e) => e,
            other => return Err(other),
        };
        err.suggestion = closest(t, choices.iter().copied()).map(str::to_string);
        Err(ConfigError::Setting(err))
    }

    /// A list: a YAML sequence, or a comma-separated string.
    pub fn get_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get_value(key) {
            None => Ok(None),
            Some(Value::Scalar(None)) => Ok(Some(Vec::new())),
            Some(Value::Scalar(Some(s))) => {
                let s = self.expand(key, &s)?;
                Ok(Some(
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect(),
                ))
            }
            Some(Value::List(items)) => items
                .iter()
                .map(|i| self.expand(key, i))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::Map(_)) => Err(self.error(key, "expects a list, not a map")),
        }
    }

    /// A map of string values (e.g. HTTP headers), keys as written, values expanded.
    pub fn get_map(&mut self, key: &str) -> Result<Option<Vec<(String, String)>>, ConfigError> {
        match self.get_value(key) {
            None => Ok(None),
            Some(Value::Map(m)) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, _, v) in m {
                    match v {
                        Value::Scalar(s) => {
                            out.push((k.clone(), self.expand(key, &s.unwrap_or_default())?))
                        }
                        _ => return Err(self.error(key, format!("'{k}' must be a single value"))),
                    }
                }
                Ok(Some(out))
            }
            Some(Value::Scalar(None)) => Ok(Some(Vec::new())),
            Some(_) => Err(self.error(key, "expects a map of names to values")),
        }
    }

    fn typed<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get_str(key)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(|m| self.error(key, m)),
        }
    }

    fn expand(&self, key: &str, s: &str) -> Result<String, ConfigError> {
        expand_env(s, &self.env)
            .map_err(|var| self.error(key, format!("environment variable '{var}' is not set")))
    }

    /// Checks that every written key was asked for by the component. Call after reading all
    /// options. Unknown keys are errors naming the key and the closest valid one.
    pub fn finish(&self) -> Result<(), ConfigError> {
        for (lower, entry) in &self.entries {
            if self.asked.contains(lower) {
                continue;
            }
            if let Value::Map(m) = &entry.value
                && self.asked_under(lower)
            {
                if let Some((key, line)) = self.unasked_in(m, lower, &entry.written_key) {
                    return Err(self.unknown(&key, entry, line));
                }
                continue;
            }
            return Err(self.unknown(&entry.written_key, entry, entry.line));
        }
        Ok(())
    }

    /// Whether some key under `prefix.` was asked for.
    fn asked_under(&self, prefix: &str) -> bool {
        let p = format!("{prefix}.");
        self.asked.iter().any(|a| a.starts_with(&p))
    }

    /// The first key inside a nested map (at any depth) that no option asked for: its name
    /// as written, with the map's, and its line.
    fn unasked_in(
        &self,
        m: &[(String, usize, Value)],
        lower: &str,
        written: &str,
    ) -> Option<(String, usize)> {
        for (k, line, v) in m {
            let full = format!("{lower}.{}", k.to_ascii_lowercase());
            let shown = format!("{written}.{k}");
            if self.asked.contains(&full) {
                continue;
            }
            if let Value::Map(inner) = v
                && self.asked_under(&full)
            {
                if let Some(found) = self.unasked_in(inner, &full, &shown) {
                    return Some(found);
                }
                continue;
            }
            return Some((shown, *line));
        }
        None
    }

    fn unknown(&self, key: &str, entry: &Entry, line: usize) -> ConfigError {
        ConfigError::Setting(Box::new(SettingError {
            file: entry.file.clone().unwrap_or_else(|| self.file.clone()),
            component: self.label(),
            key: Some(key.to_string()),
            line: (line > 0).then_some(line),
            message: "unknown key".to_string(),
            suggestion: closest(
                &key.to_ascii_lowercase(),
                self.asked.iter().map(String::as_str),
            )
            .map(str::to_string),
        }))
    }
}

/// A lowercase dotted key inside a nested map: a key written whole, or a map and a key
/// inside it, split at any dot.
fn find_nested<'a>(m: &'a [(String, usize, Value)], key: &str) -> Option<(usize, &'a Value)> {
    if let Some((_, l, v)) = m.iter().find(|(k, _, _)| k.eq_ignore_ascii_case(key)) {
        return Some((*l, v));
    }
    key.match_indices('.').find_map(|(i, _)| {
        let (head, tail) = (&key[..i], &key[i + 1..]);
        m.iter().find_map(|(k, _, v)| match v {
            Value::Map(inner) if k.eq_ignore_ascii_case(head) => find_nested(inner, tail),
            _ => None,
        })
    })
}

/// The closest candidate by edit distance, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Expands `${VAR}` using `env` first, then the process environment. `$${` is a literal `${`.
/// Returns the name of the first variable that is not set.
pub fn expand_env(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = env.get(name).cloned().or_else(|| std::env::var(name).ok());
        match value {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub service: Section,
    pub inputs: Vec<Section>,
    pub filters: Vec<Section>,
    pub outputs: Vec<Section>,
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: Arc<Path> = Arc::from(path);
        let root = yaml::parse(text).map_err(|e| ConfigError::Yaml {
            path: path.to_path_buf(),
            line: e.line,
            message: e.message,
        })?;
        let top_err =
            |line: usize, key: Option<&str>, message: String, suggestion: Option<&str>| {
                ConfigError::Setting(Box::new(SettingError {
                    file: file.clone(),
                    component: "configuration".into(),
                    key: key.map(str::to_string),
                    line: Some(line),
                    message,
                    suggestion: suggestion.map(str::to_string),
                }))
            };
        let NodeValue::Map(top) = root.value else {
            return Err(top_err(
                root.line,
                None,
                "the top level must be a mapping".into(),
                None,
            ));
        };
        let mut env = BTreeMap::new();
        let mut service_node = None;
        let mut pipeline_node = None;
        for (key, line, node) in top {
            match key.to_ascii_lowercase().as_str() {
                "service" => service_node = Some(node),
                "pipeline" => pipeline_node = Some(node),
                "env" => {
                    let NodeValue::Map(m) = node.value else {
                        return Err(top_err(line, Some("env"), "must be a mapping".into(), None));
                    };
                    for (k, _, v) in m {
                        if let NodeValue::Scalar(s) = v.value {
                            env.insert(k, s.unwrap_or_default());
                        }
                    }
                }
                other => {
                    let sugg = closest(other, ["service", "pipeline", "env"].into_iter());
                    return Err(top_err(
                        line,
                        Some(&key),
                        "unknown top-level key".into(),
                        sugg,
                    ));
                }
            }
        }
        let env = Arc::new(env);
        let service = match service_node {
            Some(n) => section_from(n, SectionKind::Service, 0, &file, &env)?,
            None => Section {
                kind: SectionKind::Service,
                index: 0,
                name: String::new(),
                display: None,
                line: 0,
                file: file.clone(),
                entries: BTreeMap::new(),
                asked: BTreeSet::new(),
                env: env.clone(),
            },
        };
        let mut config = Config {
            path: path.to_path_buf(),
            service,
            inputs: Vec::new(),
            filters: Vec::new(),
            outputs: Vec::new(),
        };
        if let Some(p) = pipeline_node {
            let NodeValue::Map(m) = p.value else {
                return Err(top_err(
                    p.line,
                    Some("pipeline"),
                    "must be a mapping".into(),
                    None,
                ));
            };
            for (key, line, node) in m {
                let kind = match key.to_ascii_lowercase().as_str() {
                    "inputs" => SectionKind::Input,
                    "filters" => SectionKind::Filter,
                    "outputs" => SectionKind::Output,
                    other => {
                        let sugg = closest(other, ["inputs", "filters", "outputs"].into_iter());
                        return Err(top_err(
                            line,
                            Some(&key),
                            "unknown key under 'pipeline'".into(),
                            sugg,
                        ));
                    }
                };
                let items = match node.value {
                    NodeValue::Seq(items) => items,
                    NodeValue::Scalar(None) => Vec::new(),
                    _ => {
                        return Err(top_err(
                            line,
                            Some(&key),
                            "must be a list of components".into(),
                            None,
                        ));
                    }
                };
                let mut sections = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    sections.push(section_from(item, kind, i, &file, &env)?);
                }
                match kind {
                    SectionKind::Input => config.inputs = sections,
                    SectionKind::Filter => config.filters = sections,
                    _ => config.outputs = sections,
                }
            }
        }
        Ok(config)
    }
}

fn to_value(node: Node) -> Value {
    match node.value {
        NodeValue::Scalar(s) => Value::Scalar(s),
        NodeValue::Seq(items) => Value::List(
            items
                .into_iter()
                .map(|n| match n.value {
                    NodeValue::Scalar(s) => s.unwrap_or_default(),
                    _ => String::new(),
                })
                .collect(),
        ),
        NodeValue::Map(m) => {
            Value::Map(m.into_iter().map(|(k, l, n)| (k, l, to_value(n))).collect())
        }
    }
}

fn section_from(
    node: Node,
    kind: SectionKind,
    index: usize,
    file: &Arc<Path>,
    env: &Arc<BTreeMap<String, String>>,
) -> Result<Section, ConfigError> {
    let mut section = Section {
        kind,
        index,
        name: String::new(),
        display: None,
        line: node.line,
        file: file.clone(),
        entries: BTreeMap::new(),
        asked: BTreeSet::new(),
        env: env.clone(),
    };
    let NodeValue::Map(entries) = node.value else {
        return Err(section.section_error("must be a mapping of option names to values"));
    };
    for (key, line, value) in entries {
        let lower = key.to_ascii_lowercase();
        if let NodeValue::Seq(items) = &value.value
            && items
                .iter()
                .any(|i| !matches!(i.value, NodeValue::Scalar(_)))
        {
            return Err(section.error(&key, "a list here may only hold plain values"));
        }
        if section.entries.contains_key(&lower) {
            let mut e = section.error(&key, "is given twice");
            if let ConfigError::Setting(s) = &mut e {
                s.line = Some(line);
            }
            return Err(e);
        }
        section.entries.insert(
            lower,
            Entry {
                written_key: key,
                line,
                value: to_value(value),
                file: None,
            },
        );
    }
    if kind != SectionKind::Service {
        match section.get_str("name")? {
            Some(n) if !n.trim().is_empty() => section.name = n.trim().to_ascii_lowercase(),
            _ => return Err(section.section_error("has no 'name' (which component is it?)")),
        }
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
env:
  CLUSTER: prod-eu
service:
  data_dir: /tmp/kt
  Log_Level: debug
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: https://example:6443
      kube_watch_timeout: 10m
      namespaces: [default, kube-system]
      tls.verify: off
  filters:
    - name: modify
      match: '*'
      add: cluster ${CLUSTER}
  outputs:
    - name: stdout
      match: '*'
      headers:
        X-Team: sre
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/kubetrail.yaml"))
    }

    #[test]
    fn reads_sections_case_insensitively() {
        let mut c = parse(GOOD).unwrap();
        assert_eq!(
            c.service.get_str("log_level").unwrap().as_deref(),
            Some("debug")
        );
        let input = &mut c.inputs[0];
        assert_eq!(input.name(), "kubernetes_events");
        assert_eq!(
            input.get_str("KUBE_URL").unwrap().as_deref(),
            Some("https://example:6443")
        );
        assert_eq!(
            input.get_duration("kube_watch_timeout").unwrap(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            input.get_list("namespaces").unwrap().unwrap(),
            vec!["default", "kube-system"]
        );
        assert_eq!(input.get_bool("tls.verify").unwrap(), Some(false));
        input.get_str("tag").unwrap();
        input.finish().unwrap();
        assert_eq!(
            c.filters[0].get_str("add").unwrap().as_deref(),
            Some("cluster prod-eu")
        );
        let headers = c.outputs[0].get_map("headers").unwrap().unwrap();
        assert_eq!(headers, vec![("X-Team".to_string(), "sre".to_string())]);
    }

    #[test]
    fn unknown_key_names_file_component_line_and_suggestion() {
        let text = "pipeline:\n  inputs:\n    - name: kubernetes_events\n      kube_urll: x\n";
        let mut c = parse(text).unwrap();
        let s = &mut c.inputs[0];
        s.get_str("kube_url").unwrap();
        s.get_str("kube_namespace").unwrap();
        let msg = s.finish().unwrap_err().to_string();
        assert_eq!(
            msg,
            "/etc/kubetrail.yaml:4: inputs[0] (kubernetes_events): key 'kube_urll': unknown key (did you mean 'kube_url'?)"
        );
    }

    #[test]
    fn nested_maps_check_their_keys() {
        let text = "pipeline:\n  outputs:\n    - name: http\n      tls:\n        verify: off\n        ca_fil: /x\n";
        let mut c = parse(text).unwrap();
        let s = &mut c.outputs[0];
        assert_eq!(s.get_bool("tls.verify").unwrap(), Some(false));
        s.get_str("tls.ca_file").unwrap();
        let msg = s.finish().unwrap_err().to_string();
        assert!(
            msg.contains("key 'tls.ca_fil'") && msg.contains(":6:") && msg.contains("tls.ca_file"),
            "{msg}"
        );
    }

    #[test]
    fn maps_nest_at_any_depth() {
        let text = "service:\n  ui:\n    listen: 127.0.0.1:1\n    tls:\n      crt_file: /c\n      key_fil: /k\n  ui.tls.client_ca_file: /ca\n";
        let mut c = parse(text).unwrap();
        let s = &mut c.service;
        assert!(s.has("ui.tls.crt_file") && s.has("ui.tls") && !s.has("ui.tls.key_file"));
        assert_eq!(
            s.get_str("ui.listen").unwrap().as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(s.get_str("ui.tls.crt_file").unwrap().as_deref(), Some("/c"));
        assert_eq!(
            s.get_str("ui.tls.client_ca_file").unwrap().as_deref(),
            Some("/ca")
        );
        s.get_str("ui.tls.key_file").unwrap();
        let msg = s.finish().unwrap_err().to_string();
        assert!(
            msg.contains("key 'ui.tls.key_fil'")
                && msg.contains(":6:")
                && msg.contains("'ui.tls.key_file'"),
            "{msg}"
        );
        let e = s.error("ui.tls.crt_file", "x").to_string();
        assert!(e.contains(":5:"), "the line of a nested key: {e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let text =
            "pipeline:\n  inputs:\n    - name: kubernetes_events\n      kube_watch_timeout: soon\n";
        let mut c = parse(text).unwrap();
        let msg = c.inputs[0]
            .get_duration("kube_watch_timeout")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":4:") && msg.contains("kube_watch_timeout") && msg.contains("'soon'"),
            "{msg}"
        );
    }

    #[test]
    fn missing_env_var_is_an_error() {
        let text =
            "pipeline:\n  inputs:\n    - name: x\n      a: ${KUBETRAIL_TEST_SURELY_UNSET_VAR}\n";
        let mut c = parse(text).unwrap();
        let msg = c.inputs[0].get_str("a").unwrap_err().to_string();
        assert!(msg.contains("KUBETRAIL_TEST_SURELY_UNSET_VAR"), "{msg}");
    }

    #[test]
    fn structural_errors() {
        let e = parse("pipelne:\n  inputs: []\n").unwrap_err().to_string();
        assert!(e.contains("did you mean 'pipeline'"), "{e}");
        let e = parse("pipeline:\n  inputs:\n    - tag: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no 'name'"), "{e}");
        let e = parse("pipeline:\n  inputs:\n    - name: a\n      tag: x\n      TAG: y\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice") && e.contains(":5:"), "{e}");
        let e = parse("a: [\n").unwrap_err();
        assert!(matches!(e, ConfigError::Yaml { .. }), "{e}");
        let e = Config::load(Path::new("/nonexistent/kt.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/kt.yaml"), "{e}");
    }

    #[test]
    fn choice_suggests() {
        let text = "pipeline:\n  inputs:\n    - name: x\n      api: events.k8s.io/v2\n";
        let mut c = parse(text).unwrap();
        let e = c.inputs[0]
            .get_choice("api", &["events.k8s.io/v1", "core/v1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'events.k8s.io/v1'"), "{e}");
    }

    #[test]
    fn env_expansion_forms() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand_env("$${A}", &env).unwrap(), "${A}");
        assert_eq!(expand_env("${A", &env).unwrap(), "${A");
        assert_eq!(expand_env("${NOPE_KT_X}", &env).unwrap_err(), "NOPE_KT_X");
    }
}
