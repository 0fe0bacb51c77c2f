//! Fluent Bit's classic format (`fluent-bit.conf`), read by Fluent Bit's own rules
//! (`src/config_format/flb_cf_fluentbit.c`), so that a file Fluent Bit accepts is read the same
//! way here and a file it refuses is refused, with a message that says why:
//!
//! - Lines end at `\n` (a `\r` before it is dropped). An empty line, or one whose first
//!   character is `#`, is skipped.
//! - `@INCLUDE path` (the keyword in any case, one space, then the path exactly as written):
//!   a path with `*` is a glob; a relative path is looked up as written (from the working
//!   directory) and then in the directory of the main file (not of the including file). A glob
//!   that matches nothing, a missing file, or a file read a second time is an error. Included
//!   files are read where the directive stands.
//! - `@SET name=value` defines a variable for `${name}`; other `@` lines are errors (Fluent
//!   Bit ignores them).
//! - `[NAME]` starts a section; its kind is the first of SERVICE, PARSER, MULTILINE_PARSER,
//!   STREAM_PROCESSOR, PLUGINS, UPSTREAM_SERVERS, CUSTOM(S), INPUT(S), FILTER(S), OUTPUT(S)
//!   that NAME is a case-insensitive prefix of. Several `[SERVICE]` sections are one.
//! - Keys must be indented. The first key line of a file sets the file's indentation (its
//!   leading spaces and tabs); every later key line must start with exactly that, optionally
//!   followed by exactly as much again (a nested line), and nothing else: less is "too low", a
//!   tab for a space is "inconsistent", anything between is "extra indentation". An indented
//!   line whose next character is `#` is a comment, and a line of only the indentation is
//!   blank; a line of spaces shorter than the indentation is refused, as Fluent Bit does.
//! - A key line is the key, one space, and the value: the key ends at the first space (a tab
//!   does not end it), key and value are trimmed, the key compares case-insensitively. A key
//!   without a value is an error. A key given several times keeps every value (multi-valued
//!   options such as `Header` or `Regex` take them all).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubetrail_core::config::Value;

use crate::diag::Diagnostic;
use crate::document::{Document, Format, Property, Section, SectionKind, Variable};
use crate::files::{FileId, Files};

/// Fluent Bit's limit on the number of files one configuration may read.
const FILE_LIMIT: usize = 1000;

/// Reads a classic configuration and everything it includes. The first error stops the
/// reading, as in Fluent Bit.
pub fn read(files: &dyn Files, path: &Path) -> Result<Document, Diagnostic> {
    let mut reader = Reader {
        files,
        root: files.root_dir(path),
        seen: HashSet::new(),
        doc: Document::empty(Format::Classic, path),
    };
    let file: Arc<Path> = Arc::from(path);
    let (id, bytes) = files
        .read(path)
        .map_err(|e| Diagnostic::error(&file, 0, format!("cannot read the file: {e}")))?;
    reader.read_text(file, id, &bytes)?;
    Ok(reader.doc)
}

/// Reads classic configuration text that includes nothing (for fuzzing and tests: an
/// `@INCLUDE` is an error since there are no files).
pub fn read_text(text: &[u8], path: &Path) -> Result<Document, Diagnostic> {
    let none = crate::files::Memory::default();
    let mut reader = Reader {
        files: &none,
        root: PathBuf::new(),
        seen: HashSet::new(),
        doc: Document::empty(Format::Classic, path),
    };
    reader.read_text(Arc::from(path), FileId::Name(path.to_path_buf()), text)?;
    Ok(reader.doc)
}

struct Reader<'a> {
    files: &'a dyn Files,
    /// The main file's directory.
    root: PathBuf,
    seen: HashSet<FileId>,
    doc: Document,
}

/// Where the current section of a file is.
#[derive(Clone, Copy)]
enum Current {
    None,
    Service,
    Section(usize),
}

/// The indentation a file's first key line set.
struct Indent {
    text: String,
    line: usize,
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn describe_indent(s: &str) -> String {
    let spaces = s.bytes().filter(|b| *b == b' ').count();
    let tabs = s.len() - spaces;
    match (spaces, tabs) {
        (n, 0) => format!("{n} space{}", if n == 1 { "" } else { "s" }),
        (0, n) => format!("{n} tab{}", if n == 1 { "" } else { "s" }),
        (s, t) => format!("{s} spaces and {t} tabs"),
    }
}

/// The section kind Fluent Bit gives a header (`get_section_type`: the header is compared
/// with each name over the header's length, so a prefix matches).
fn section_kind(name: &str) -> SectionKind {
    let n = name.len();
    let is = |full: &str| n <= full.len() && full[..n].eq_ignore_ascii_case(name);
    if is("service") {
        SectionKind::Service
    } else if is("parser") {
        SectionKind::Parser
    } else if is("multiline_parser") {
        SectionKind::MultilineParser
    } else if is("stream_processor") {
        SectionKind::StreamProcessor
    } else if is("plugins") {
        SectionKind::Plugins
    } else if is("upstream_servers") {
        SectionKind::UpstreamServers
    } else if is("custom") || is("customs") {
        SectionKind::Custom
    } else if is("input") || is("inputs") {
        SectionKind::Input
    } else if is("filter") || is("filters") {
        SectionKind::Filter
    } else if is("output") || is("outputs") {
        SectionKind::Output
    } else {
        SectionKind::Other
    }
}

/// Trims spaces, tabs and line breaks at both ends (Fluent Bit's `flb_sds_trim`).
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

impl Reader<'_> {
    fn read_text(&mut self, file: Arc<Path>, id: FileId, bytes: &[u8]) -> Result<(), Diagnostic> {
        if self.doc.files.len() >= FILE_LIMIT {
            return Err(Diagnostic::error(
                &file,
                0,
                format!("more than {FILE_LIMIT} files are included (Fluent Bit's limit)"),
            ));
        }
        if !self.seen.insert(id) {
            return Err(Diagnostic::error(
                &file,
                0,
                "this file is read a second time (Fluent Bit reads each file once: an @INCLUDE \
                 cycle, or the same file included twice)",
            ));
        }
        self.doc.files.push(file.clone());
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            Diagnostic::error(&file, line, "is not UTF-8 text")
        })?;
        let mut current = Current::None;
        let mut indent: Option<Indent> = None;
        let mut rest = text;
        let mut line_no = 0usize;
        while !rest.is_empty() {
            let (raw, next) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let ended = next.len() < rest.len() - raw.len();
            rest = next;
            line_no += 1;
            let line = if ended {
                raw.strip_suffix('\r').unwrap_or(raw)
            } else {
                raw
            };
            self.line(&file, line_no, line, &mut current, &mut indent)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        file: &Arc<Path>,
        n: usize,
        line: &str,
        current: &mut Current,
        indent: &mut Option<Indent>,
    ) -> Result<(), Diagnostic> {
        let b = line.as_bytes();
        if b.is_empty() || b[0] == b'#' {
            return Ok(());
        }
        if b.len() > 9 && b[..9].eq_ignore_ascii_case(b"@INCLUDE ") {
            return self.include(file, n, &line[9..]);
        }
        if b[0] == b'@' && b.len() > 3 {
            return self.directive(file, n, line);
        }
        if b[0] == b'[' {
            let Some(end) = line.find(']') else {
                return Err(Diagnostic::error(
                    file,
                    n,
                    format!("'{line}': a section header needs its closing ']'"),
                ));
            };
            let name = &line[1..end];
            let after = line[end + 1..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                self.doc.warnings.push(Diagnostic::warning(
                    file,
                    n,
                    format!("'{after}' after the section header is ignored (as Fluent Bit does)"),
                ));
            }
            *current = self.open_section(file, n, name);
            return Ok(());
        }
        let ind = match indent {
            Some(i) => i,
            None => {
                if !is_blank(b[0]) {
                    return Err(self.not_indented(file, n, line));
                }
                let width = b.iter().take_while(|c| is_blank(**c)).count();
                *indent = Some(Indent {
                    text: line[..width].to_string(),
                    line: n,
                });
                if width == b.len() {
                    return Ok(());
                }
                indent.as_ref().expect("just set")
            }
        };
        let level = check_indent(b, ind).map_err(|problem| {
            let shown = describe_indent(&ind.text);
            let message = match problem {
                IndentProblem::NotIndented => {
                    return self.not_indented(file, n, line);
                }
                IndentProblem::Mixed => format!(
                    "inconsistent use of tabs and spaces: this file's keys are indented with \
                     {shown} (line {})",
                    ind.line
                ),
                IndentProblem::TooLow if line.bytes().all(is_blank) => format!(
                    "a line of only spaces or tabs, shorter than this file's indentation ({shown}, \
                     line {}): Fluent Bit refuses it; make the line empty",
                    ind.line
                ),
                IndentProblem::TooLow => format!(
                    "indentation level is too low: this file's keys are indented with {shown} \
                     (line {})",
                    ind.line
                ),
                IndentProblem::Extra => format!(
                    "extra indentation: a key is indented with {shown} (line {}), or exactly \
                     twice that for a nested line",
                    ind.line
                ),
            };
            Diagnostic::error(file, n, message)
        })?;
        if level == b.len() || b[level] == b'#' {
            return Ok(());
        }
        let body = &line[level..];
        let Some(space) = body.find(' ') else {
            let message = if body.contains('\t') {
                format!(
                    "'{}': a key and its value are separated by a space (Fluent Bit does not take \
                     a tab there)",
                    body.trim()
                )
            } else {
                format!("'{}' has no value", body.trim())
            };
            return Err(Diagnostic::error(file, n, message));
        };
        let key = &body[..space];
        if key.starts_with('[') {
            return Err(Diagnostic::error(
                file,
                n,
                format!(
                    "'{}': groups inside a section are used only by Fluent Bit's multiline \
                     parsers, which kubetrail does not read",
                    key
                ),
            ));
        }
        let value = &body[space + 1..];
        if value.is_empty() {
            return Err(Diagnostic::error(
                file,
                n,
                format!("key '{key}' has an empty value"),
            ));
        }
        let property = Property {
            key: trim(key).to_string(),
            value: Value::Scalar(Some(trim(value).to_string())),
            file: file.clone(),
            line: n,
        };
        match *current {
            Current::None => Err(Diagnostic::error(
                file,
                n,
                format!("key '{}' is outside any [SECTION]", property.key),
            )),
            Current::Service => {
                if let Some(s) = self.doc.service.as_mut() {
                    s.properties.push(property);
                }
                Ok(())
            }
            Current::Section(i) => {
                self.doc.sections[i].properties.push(property);
                Ok(())
            }
        }
    }

    fn not_indented(&self, file: &Arc<Path>, n: usize, line: &str) -> Diagnostic {
        let key = line.split([' ', '\t']).next().unwrap_or(line);
        Diagnostic::error(
            file,
            n,
            format!(
                "key '{key}' is not indented: Fluent Bit reads the keys of a [SECTION] only when \
                 they are indented (it refuses this file)"
            ),
        )
    }

    fn open_section(&mut self, file: &Arc<Path>, n: usize, name: &str) -> Current {
        let kind = section_kind(name);
        if kind == SectionKind::Service {
            if self.doc.service.is_none() {
                self.doc.service = Some(Section {
                    kind,
                    header: name.to_string(),
                    file: file.clone(),
                    line: n,
                    properties: Vec::new(),
                });
            }
            return Current::Service;
        }
        self.doc.sections.push(Section {
            kind,
            header: name.to_string(),
            file: file.clone(),
            line: n,
            properties: Vec::new(),
        });
        Current::Section(self.doc.sections.len() - 1)
    }

    fn directive(&mut self, file: &Arc<Path>, n: usize, line: &str) -> Result<(), Diagnostic> {
        let Some(space) = line.find(' ') else {
            return Err(Diagnostic::error(
                file,
                n,
                format!("'{line}': a directive needs a value (@SET name=value, @INCLUDE file)"),
            ));
        };
        let command = trim(&line[1..space]);
        let params = trim(&line[space + 1..]);
        if !command.eq_ignore_ascii_case("SET") {
            return Err(Diagnostic::error(
                file,
                n,
                format!("unknown directive '@{command}' (Fluent Bit has @INCLUDE and @SET)"),
            ));
        }
        let Some(eq) = params.find('=') else {
            return Err(Diagnostic::error(
                file,
                n,
                format!("'@SET {params}': expected @SET name=value"),
            ));
        };
        let (name, value) = (&params[..eq], &params[eq + 1..]);
        if name != name.trim() || value != value.trim() {
            self.doc.warnings.push(Diagnostic::warning(
                file,
                n,
                format!(
                    "@SET {params}: the spaces around '=' belong to the name and the value (the \
                     variable is '{name}'), as in Fluent Bit"
                ),
            ));
        }
        self.doc.variables.push(Variable {
            name: name.to_string(),
            value: value.to_string(),
            uri: None,
            file: file.clone(),
            line: n,
        });
        Ok(())
    }

    fn include(&mut self, file: &Arc<Path>, n: usize, target: &str) -> Result<(), Diagnostic> {
        let paths = if target.contains('*') {
            let pattern = if Path::new(target).is_absolute() {
                target.to_string()
            } else {
                format!("{}/{target}", self.root.display())
            };
            let found = self
                .files
                .glob(&pattern)
                .map_err(|m| Diagnostic::error(file, n, format!("@INCLUDE {target}: {m}")))?;
            if found.is_empty() {
                return Err(Diagnostic::error(
                    file,
                    n,
                    format!(
                        "@INCLUDE {target}: '{pattern}' matches no file (Fluent Bit refuses this too)"
                    ),
                ));
            }
            found
        } else {
            let as_written = PathBuf::from(target);
            if self.files.exists(&as_written) {
                vec![as_written]
            } else if as_written.is_absolute() {
                return Err(Diagnostic::error(
                    file,
                    n,
                    format!("@INCLUDE '{target}': no such file"),
                ));
            } else {
                let in_root = self.root.join(target);
                if !self.files.exists(&in_root) {
                    return Err(Diagnostic::error(
                        file,
                        n,
                        format!(
                            "@INCLUDE '{target}': no such file (looked in the working directory \
                             and in {})",
                            self.root.display()
                        ),
                    ));
                }
                vec![in_root]
            }
        };
        for p in paths {
            let included: Arc<Path> = Arc::from(p.as_path());
            let (id, bytes) = self.files.read(&p).map_err(|e| {
                Diagnostic::error(
                    file,
                    n,
                    format!("@INCLUDE {target}: cannot read {}: {e}", p.display()),
                )
            })?;
            self.read_text(included, id, &bytes)?;
        }
        Ok(())
    }
}

enum IndentProblem {
    /// The file's indentation is empty (cannot happen once set) or the line starts unindented.
    NotIndented,
    Mixed,
    TooLow,
    Extra,
}

/// Fluent Bit's `check_indent`: the position where the key starts, or why the line's
/// indentation is refused.
fn check_indent(line: &[u8], indent: &Indent) -> Result<usize, IndentProblem> {
    let ind = indent.text.as_bytes();
    let mut i = 0;
    while i < ind.len() && i < line.len() && line[i] == ind[i] {
        i += 1;
    }
    if i < ind.len() {
        let c = line.get(i).copied().unwrap_or(0);
        return Err(if i == 0 && !is_blank(c) {
            IndentProblem::NotIndented
        } else if is_blank(c) {
            IndentProblem::Mixed
        } else {
            IndentProblem::TooLow
        });
    }
    let extra = line[i..].iter().take_while(|c| is_blank(**c)).count();
    if extra == 0 {
        Ok(i)
    } else if extra == ind.len() {
        Ok(i + extra)
    } else {
        Err(IndentProblem::Extra)
    }
}

#[cfg(test)]
mod tests;
