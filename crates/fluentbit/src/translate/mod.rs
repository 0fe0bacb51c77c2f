//! From what a Fluent Bit configuration says ([`Document`]) to kubetrail's configuration
//! ([`Migration`]): each plugin kubetrail has becomes its component, each option its option
//! (renamed where kubetrail's name differs), every key keeping the file and line it was
//! written on. An option kubetrail does not have is an error that says what to use instead;
//! one with no effect here is a warning; a place where kubetrail means something else than
//! Fluent Bit is a note. Nothing is dropped without one of the three.

mod catalog;
mod filters;
mod inputs;
mod outputs;
mod service;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use kubetrail_core::config::{Value, expand_env};

use crate::diag::{Anchor, Diagnostic, List, Severity};
use crate::document::{Document, Format, Property, Section, SectionKind};

/// One setting of a translated component.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// kubetrail's key.
    pub key: String,
    pub value: Value,
    /// Where the Fluent Bit option it comes from was written (the section's header for a
    /// setting the translation adds).
    pub file: Arc<Path>,
    pub line: usize,
}

/// One translated component (or the service section).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub list: List,
    /// kubetrail's component name (empty for the service section).
    pub name: String,
    /// The Fluent Bit plugin name as written, lower-cased.
    pub plugin: String,
    pub file: Arc<Path>,
    pub line: usize,
    pub settings: Vec<Setting>,
}

impl Component {
    fn new(list: List, plugin: &str, name: &str, section: &Section) -> Component {
        Component {
            list,
            name: name.to_string(),
            plugin: plugin.to_ascii_lowercase(),
            file: section.file.clone(),
            line: section.line,
            settings: Vec::new(),
        }
    }

    /// Sets `key` from a Fluent Bit property (replacing an earlier value of the same key).
    fn set(&mut self, key: &str, value: Value, from: &Property) {
        self.put(key, value, from.file.clone(), from.line);
    }

    /// Sets `key` to a value the translation adds, placed at the component's header.
    fn add(&mut self, key: &str, value: &str) {
        let (file, line) = (self.file.clone(), self.line);
        self.put(key, Value::Scalar(Some(value.to_string())), file, line);
    }

    fn put(&mut self, key: &str, value: Value, file: Arc<Path>, line: usize) {
        self.settings.retain(|s| !s.key.eq_ignore_ascii_case(key));
        self.settings.push(Setting {
            key: key.to_string(),
            value,
            file,
            line,
        });
    }

    /// The value of `key` if set to a single value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key.eq_ignore_ascii_case(key))
            .and_then(|s| match &s.value {
                Value::Scalar(v) => Some(v.as_deref().unwrap_or("")),
                _ => None,
            })
    }

    pub fn has(&self, key: &str) -> bool {
        self.settings
            .iter()
            .any(|s| s.key.eq_ignore_ascii_case(key))
    }
}

/// A variable of the translated configuration (`env:`).
#[derive(Clone, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Set when Fluent Bit read the value from a file (`uri: file://...`): the value is used
    /// but never printed (it is a secret, typically).
    pub uri: Option<String>,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.uri.is_some() {
            "<from a file>"
        } else {
            &self.value
        };
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &value)
            .field("uri", &self.uri)
            .finish()
    }
}

/// A whole translated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub format: Format,
    pub path: std::path::PathBuf,
    pub env: Vec<EnvVar>,
    pub service: Component,
    pub inputs: Vec<Component>,
    pub filters: Vec<Component>,
    pub outputs: Vec<Component>,
    /// Errors, warnings and notes, in the order found (the reader's warnings first).
    pub diagnostics: Vec<Diagnostic>,
}

impl Migration {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The variables `${VAR}` expands from (before the process environment).
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect()
    }
}

/// The properties of one section, each marked once something has read it.
pub(crate) struct Props<'a> {
    pub section: &'a Section,
    used: Vec<bool>,
}

impl<'a> Props<'a> {
    fn new(section: &'a Section) -> Props<'a> {
        Props {
            section,
            used: vec![false; section.properties.len()],
        }
    }

    /// Every property named `key` (case-insensitive), marked as read.
    pub fn all(&mut self, key: &str) -> Vec<&'a Property> {
        let mut out = Vec::new();
        for (i, p) in self.section.properties.iter().enumerate() {
            if p.key.eq_ignore_ascii_case(key) {
                self.used[i] = true;
                out.push(p);
            }
        }
        out
    }

    /// Marks a property as not read (for the readers after this one).
    pub fn unread(&mut self, p: &Property) {
        if let Some(i) = self
            .section
            .properties
            .iter()
            .position(|q| std::ptr::eq(q, p))
        {
            self.used[i] = false;
        }
    }

    /// The properties not read yet, marked as read.
    pub fn rest(&mut self) -> Vec<&'a Property> {
        let mut out = Vec::new();
        for (i, p) in self.section.properties.iter().enumerate() {
            if !self.used[i] {
                self.used[i] = true;
                out.push(p);
            }
        }
        out
    }
}

/// The translation's state: the document, the variables, the diagnostics so far.
pub(crate) struct Ctx<'d> {
    pub doc: &'d Document,
    pub vars: BTreeMap<String, String>,
    pub diagnostics: Vec<Diagnostic>,
    /// What the state directory comes from, if a Fluent Bit option says where durable state
    /// lives: (value, the property, what it was).
    pub data_dir: Option<(String, Property, String)>,
    /// `db.sync` values written on inputs, with the input they were written on.
    pub db_sync: Vec<(Property, Who)>,
    /// Top-level keys a `modify`-like filter writes: later `grep` rules read them as fields.
    pub written_keys: HashSet<String>,
}

/// Who a diagnostic is about.
#[derive(Clone)]
pub(crate) struct Who {
    pub label: String,
    pub anchor: Option<(List, usize)>,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        severity: Severity,
        who: &Who,
        file: &Arc<Path>,
        line: usize,
        key: Option<(&str, Option<&str>)>,
        message: String,
    ) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: file.clone(),
            line: (line > 0).then_some(line),
            component: Some(who.label.clone()),
            key: key.map(|(written, _)| written.to_string()),
            message,
            anchor: who.anchor.map(|(list, index)| {
                Box::new(Anchor {
                    list,
                    index,
                    key: key.and_then(|(_, kt)| kt.map(str::to_string)),
                })
            }),
        });
    }

    /// An error about a property (`kt_key`: the kubetrail key a `migrate` comment goes with).
    pub fn error_at(&mut self, who: &Who, p: &Property, message: impl Into<String>) {
        self.push(
            Severity::Error,
            who,
            &p.file,
            p.line,
            Some((&p.key, None)),
            message.into(),
        );
    }

    pub fn warn_at(&mut self, who: &Who, p: &Property, message: impl Into<String>) {
        self.push(
            Severity::Warning,
            who,
            &p.file,
            p.line,
            Some((&p.key, None)),
            message.into(),
        );
    }

    /// A note on a property that becomes kubetrail's `kt_key`.
    pub fn note_at(&mut self, who: &Who, p: &Property, kt_key: &str, message: impl Into<String>) {
        self.push(
            Severity::Note,
            who,
            &p.file,
            p.line,
            Some((&p.key, Some(kt_key))),
            message.into(),
        );
    }

    /// A diagnostic about a whole section.
    pub fn section(
        &mut self,
        severity: Severity,
        who: &Who,
        s: &Section,
        message: impl Into<String>,
    ) {
        self.push(severity, who, &s.file, s.line, None, message.into());
    }

    /// A note about a setting the translation adds (`kt_key`), placed at the section header.
    pub fn note_added(&mut self, who: &Who, s: &Section, kt_key: &str, message: impl Into<String>) {
        self.push(
            Severity::Note,
            who,
            &s.file,
            s.line,
            Some((kt_key, Some(kt_key))),
            message.into(),
        );
    }

    /// A property's single value, or an error if it is a list or a map.
    pub fn scalar<'p>(&mut self, who: &Who, p: &'p Property) -> Option<&'p str> {
        let v = p.scalar();
        if v.is_none() {
            self.error_at(who, p, "expects a single value, not a list or a map");
        }
        v
    }

    /// A property's value with `${VAR}` expanded (configuration variables first, then the
    /// process environment), for decisions the translation makes on it and to be written
    /// into kubetrail's configuration as it is. An unset variable is
    /// an error, as it is everywhere in kubetrail (Fluent Bit puts an empty string).
    pub fn expand(&mut self, who: &Who, p: &Property) -> Option<String> {
        let raw = self.scalar(who, p)?;
        match expand_env(raw, &self.vars) {
            // A `${` left in the result came from a variable's value, which Fluent Bit does
            // not expand again: kubetrail would, so it is written `$${` (a literal `${`).
            Ok(v) => Some(v.replace("${", "$${")),
            Err(var) => {
                self.error_at(who, p, format!("environment variable '{var}' is not set"));
                None
            }
        }
    }

    /// A boolean in Fluent Bit's words (`on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`).
    pub fn boolean(&mut self, who: &Who, p: &Property) -> Option<bool> {
        let v = self.expand(who, p)?;
        match kubetrail_core::config::parse_bool(&v) {
            Ok(b) => Some(b),
            Err(m) => {
                self.error_at(who, p, m);
                None
            }
        }
    }

    /// The last of several properties named the same: Fluent Bit takes the last value of a
    /// single-valued option; kubetrail does too, with a warning.
    pub fn last<'p>(&mut self, who: &Who, ps: &[&'p Property]) -> Option<&'p Property> {
        let last = ps.last().copied()?;
        if ps.len() > 1 {
            let first = ps[0];
            self.warn_at(
                who,
                last,
                format!(
                    "is given {} times (first at line {}): the last value is used, as in Fluent Bit",
                    ps.len(),
                    first.line
                ),
            );
        }
        Some(last)
    }
}

/// Translates a document. `overrides` are variables that take precedence over the file's (for
/// tests; the command line passes none).
pub fn translate(doc: &Document, overrides: &BTreeMap<String, String>) -> Migration {
    let mut env: Vec<EnvVar> = Vec::new();
    for v in &doc.variables {
        match env.iter_mut().find(|e| e.name == v.name) {
            Some(e) => {
                e.value = v.value.clone();
                e.uri = v.uri.clone();
            }
            None => env.push(EnvVar {
                name: v.name.clone(),
                value: v.value.clone(),
                uri: v.uri.clone(),
            }),
        }
    }
    let mut vars: BTreeMap<String, String> = env
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut ctx = Ctx {
        doc,
        vars,
        diagnostics: doc.warnings.clone(),
        data_dir: None,
        db_sync: Vec::new(),
        written_keys: HashSet::new(),
    };
    warn_nested_variables(&mut ctx);
    let mut inputs = Vec::new();
    let mut filters = Vec::new();
    let mut outputs = Vec::new();
    let mut seen = [0usize; 3];
    for s in &doc.sections {
        match s.kind {
            SectionKind::Input => {
                if let Some(c) = inputs::translate(&mut ctx, s, seen[0], inputs.len()) {
                    inputs.push(c);
                }
                seen[0] += 1;
            }
            SectionKind::Filter => {
                if let Some(c) = filters::translate(&mut ctx, s, seen[1], filters.len()) {
                    filters.push(c);
                }
                seen[1] += 1;
            }
            SectionKind::Output => {
                if let Some(c) = outputs::translate(&mut ctx, s, seen[2], outputs.len()) {
                    outputs.push(c);
                }
                seen[2] += 1;
            }
            _ => other_section(&mut ctx, s),
        }
    }
    let service = service::translate(&mut ctx);
    Migration {
        format: doc.format,
        path: doc.path.clone(),
        env,
        service,
        inputs,
        filters,
        outputs,
        diagnostics: ctx.diagnostics,
    }
}

/// Fluent Bit does not expand `${...}` inside a variable's own value: say so where it matters.
fn warn_nested_variables(ctx: &mut Ctx) {
    for v in &ctx.doc.variables {
        if v.value.contains("${") {
            ctx.diagnostics.push(Diagnostic::warning(
                &v.file,
                v.line,
                format!(
                    "the value of '{}' holds '${{...}}', which is not expanded inside a variable \
                     (Fluent Bit neither): ${{{}}} reads as '{}'",
                    v.name, v.name, v.value
                ),
            ));
        }
    }
}

/// How diagnostics name a section: `[INPUT] tail` (classic), `inputs[0] (tail)` (YAML);
/// without a plugin name: `[INPUT]`, `inputs[0]` (`service` and other YAML sections: their
/// key).
pub(crate) fn label(doc: &Document, s: &Section, plugin: Option<&str>, index: usize) -> String {
    let listed = matches!(
        s.kind,
        SectionKind::Input | SectionKind::Filter | SectionKind::Output | SectionKind::Custom
    );
    match (doc.format, plugin) {
        (Format::Classic, Some(p)) => format!("[{}] {p}", s.header),
        (Format::Classic, None) => format!("[{}]", s.header),
        (Format::Yaml, Some(p)) if listed => format!("{}[{index}] ({p})", s.header),
        (Format::Yaml, None) if listed => format!("{}[{index}]", s.header),
        (Format::Yaml, _) => s.header.clone(),
    }
}

/// Sections that are not inputs, filters, outputs or the service.
fn other_section(ctx: &mut Ctx, s: &Section) {
    let who = Who {
        label: label(ctx.doc, s, None, 0),
        anchor: None,
    };
    let classic = ctx.doc.format == Format::Classic;
    match s.kind {
        SectionKind::Parser | SectionKind::MultilineParser if classic => ctx.section(
            Severity::Error,
            &who,
            s,
            "parser sections belong in a parsers file (Parsers_File), not in the main \
             configuration: Fluent Bit refuses them here too",
        ),
        SectionKind::Parser | SectionKind::MultilineParser => ctx.section(
            Severity::Warning,
            &who,
            s,
            "parsers are not used: kubetrail's audit_file reads each line as JSON",
        ),
        SectionKind::Custom => ctx.section(
            Severity::Error,
            &who,
            s,
            "custom plugins (calyptia, ...) are not supported by kubetrail",
        ),
        SectionKind::StreamProcessor => ctx.section(
            Severity::Error,
            &who,
            s,
            "kubetrail has no stream processor: use grep, modify and redact filters",
        ),
        SectionKind::Plugins => ctx.section(
            Severity::Warning,
            &who,
            s,
            "external plugins are not loaded by kubetrail (a plugin they define is reported \
             where it is used)",
        ),
        SectionKind::UpstreamServers => ctx.section(
            Severity::Warning,
            &who,
            s,
            "upstream servers are not used: kubetrail's outputs take one host each",
        ),
        _ => ctx.section(
            Severity::Warning,
            &who,
            s,
            format!(
                "unknown section '{}': Fluent Bit ignores it, and so does kubetrail",
                s.header
            ),
        ),
    }
}

/// What every pipeline section's translation starts from: who diagnostics name, the section's
/// properties not yet read, and its plugin name (with the property that gave it).
pub(crate) struct Opened<'a> {
    pub who: Who,
    pub props: Props<'a>,
    pub name: String,
    pub name_prop: Property,
}

/// Opens section `s` (the `fb_index`th of its kind in the Fluent Bit file, the `index`th of
/// `list` in kubetrail's): reads its plugin name and labels it; `None` when it has none (the
/// error is in the diagnostics).
pub(crate) fn open<'a>(
    ctx: &mut Ctx,
    s: &'a Section,
    list: List,
    fb_index: usize,
    index: usize,
) -> Option<Opened<'a>> {
    let mut who = Who {
        label: label(ctx.doc, s, None, fb_index),
        anchor: Some((list, index)),
    };
    let mut props = Props::new(s);
    let (name, name_prop) = plugin_name(ctx, s, &mut props, &mut who)?;
    who.label = label(ctx.doc, s, Some(&name), fb_index);
    Some(Opened {
        who,
        props,
        name,
        name_prop,
    })
}

/// The plugin name of a pipeline section, `${VAR}` expanded; errors when it has none.
pub(crate) fn plugin_name(
    ctx: &mut Ctx,
    s: &Section,
    props: &mut Props,
    who: &mut Who,
) -> Option<(String, Property)> {
    let names = props.all("name");
    let Some(p) = ctx.last(who, &names) else {
        ctx.section(
            Severity::Error,
            who,
            s,
            "has no 'Name' (which plugin is it?)",
        );
        return None;
    };
    let name = ctx.expand(who, p)?.trim().to_ascii_lowercase();
    if name.is_empty() {
        ctx.error_at(who, p, "is empty");
        return None;
    }
    Some((name, p.clone()))
}

/// Options every input, filter or output has in Fluent Bit, and what becomes of them.
/// Returns true if the property was handled.
pub(crate) fn common_option(ctx: &mut Ctx, who: &Who, c: &mut Component, p: &Property) -> bool {
    let key = p.lower_key();
    match key.as_str() {
        "alias" | "match" | "match_regex" => {
            c.set(&key, p.value.clone(), p);
            true
        }
        "log_level" | "log_suppress_interval" => {
            ctx.warn_at(
                who,
                p,
                "no effect: kubetrail has one log level, service.log_level",
            );
            true
        }
        "workers" | "threaded" => {
            ctx.warn_at(
                who,
                p,
                "no effect: kubetrail runs each component on its async runtime",
            );
            true
        }
        "processors" => {
            ctx.error_at(
                who,
                p,
                "processors are not supported by kubetrail: use filters (grep, modify, redact)",
            );
            true
        }
        "routes" => {
            ctx.error_at(
                who,
                p,
                "routes are not supported by kubetrail: route with tag and match",
            );
            true
        }
        k if k.starts_with("net.") => {
            ctx.warn_at(
                who,
                p,
                "no effect: kubetrail keeps its own connection settings (keepalive, timeouts)",
            );
            true
        }
        _ => false,
    }
}

/// Copies the rest of a section's properties under their own names: kubetrail's options
/// that Fluent Bit does not have may be written in a Fluent Bit file too, and kubetrail
/// reports any key its component does not know, with the closest valid one.
pub(crate) fn pass_through(c: &mut Component, rest: Vec<&Property>) {
    let mut groups: Vec<(String, Vec<&Property>)> = Vec::new();
    for p in rest {
        let k = p.lower_key();
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(p),
            None => groups.push((k, vec![p])),
        }
    }
    for (_, ps) in groups {
        if ps.len() == 1 {
            c.set(&ps[0].key, ps[0].value.clone(), ps[0]);
        } else {
            // Several values: a list (kubetrail reports it if the option takes one value).
            let items = ps
                .iter()
                .filter_map(|p| p.scalar().map(str::to_string))
                .collect();
            c.set(&ps[0].key, Value::List(items), ps[0]);
        }
    }
}

/// The values of a multi-valued option (each repeated key, or the items of a YAML list).
pub(crate) fn values(ps: &[&Property]) -> Vec<String> {
    let mut out = Vec::new();
    for p in ps {
        match &p.value {
            Value::Scalar(s) => out.push(s.clone().unwrap_or_default()),
            Value::List(items) => out.extend(items.iter().cloned()),
            Value::Map(_) => {}
        }
    }
    out
}

/// Whether `name` is a Fluent Bit input kubetrail does not have.
pub(crate) fn catalog_input(name: &str) -> bool {
    catalog::unsupported_input(name).is_some()
}

/// Whether `name` is a Fluent Bit filter kubetrail does not have.
pub(crate) fn catalog_filter(name: &str) -> bool {
    catalog::unsupported_filter(name).is_some()
}

/// Whether `name` is a Fluent Bit output kubetrail does not have.
pub(crate) fn catalog_output(name: &str) -> bool {
    catalog::unsupported_output(name).is_some()
}
