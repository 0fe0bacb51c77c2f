//! The classic reader against Fluent Bit's rules, case by case, and property tests.

use std::path::Path;

use kubetrail_core::config::Value;
use proptest::prelude::*;

use super::*;
use crate::files::Memory;

fn parse(text: &str) -> Result<Document, Diagnostic> {
    read_text(text.as_bytes(), Path::new("/etc/fb/fluent-bit.conf"))
}

fn err(text: &str) -> (Option<usize>, String) {
    let d = parse(text).unwrap_err();
    (d.line, d.message)
}

fn props(s: &Section) -> Vec<(String, String, usize)> {
    s.properties
        .iter()
        .map(|p| {
            let Value::Scalar(Some(v)) = &p.value else {
                panic!("{p:?}")
            };
            (p.key.clone(), v.clone(), p.line)
        })
        .collect()
}

fn kv(k: &str, v: &str, line: usize) -> (String, String, usize) {
    (k.to_string(), v.to_string(), line)
}

#[test]
fn sections_keys_values_comments() {
    let doc = parse(
        "# top comment\n[SERVICE]\n    Flush   1\n\n    # indented comment\n[INPUT]\n    Name  tail\n    Path  /var/log/a.log  \n    Regex a b c\n    Regex d\n[Output]\n    Name stdout\n    Match *",
    )
    .unwrap();
    let service = doc.service.unwrap();
    assert_eq!(props(&service), vec![kv("Flush", "1", 3)]);
    assert_eq!(doc.sections.len(), 2);
    assert_eq!(doc.sections[0].kind, SectionKind::Input);
    assert_eq!(doc.sections[0].line, 6);
    assert_eq!(
        props(&doc.sections[0]),
        vec![
            kv("Name", "tail", 7),
            kv("Path", "/var/log/a.log", 8),
            kv("Regex", "a b c", 9),
            kv("Regex", "d", 10),
        ]
    );
    assert_eq!(doc.sections[1].kind, SectionKind::Output);
    assert_eq!(doc.sections[1].header, "Output");
    assert_eq!(props(&doc.sections[1])[1], kv("Match", "*", 13));
    assert!(doc.warnings.is_empty());
}

#[test]
fn crlf_and_values_with_spaces_and_equals() {
    let doc = parse("[OUTPUT]\r\n  Name pgsql\r\n  Connection_Options  -c statement_timeout=0\r\n")
        .unwrap();
    assert_eq!(
        props(&doc.sections[0]),
        vec![
            kv("Name", "pgsql", 2),
            kv("Connection_Options", "-c statement_timeout=0", 3)
        ]
    );
}

#[test]
fn section_kinds_follow_fluent_bits_prefix_rule() {
    for (header, kind) in [
        ("SERVICE", SectionKind::Service),
        ("service", SectionKind::Service),
        ("S", SectionKind::Service),
        ("", SectionKind::Service),
        ("INPUT", SectionKind::Input),
        ("Inputs", SectionKind::Input),
        ("IN", SectionKind::Input),
        ("FILTER", SectionKind::Filter),
        ("OUTPUT", SectionKind::Output),
        ("outputs", SectionKind::Output),
        ("PARSER", SectionKind::Parser),
        ("P", SectionKind::Parser),
        ("MULTILINE_PARSER", SectionKind::MultilineParser),
        ("CUSTOM", SectionKind::Custom),
        ("CUSTOMS", SectionKind::Custom),
        ("PLUGINS", SectionKind::Plugins),
        ("UPSTREAM_SERVERS", SectionKind::UpstreamServers),
        ("STREAM_PROCESSOR", SectionKind::StreamProcessor),
        ("INPUT ", SectionKind::Other),
        ("INPUTX", SectionKind::Other),
        ("FOO", SectionKind::Other),
    ] {
        assert_eq!(section_kind(header), kind, "[{header}]");
    }
}

#[test]
fn several_service_sections_are_one() {
    let doc = parse("[SERVICE]\n  Flush 1\n[INPUT]\n  Name x\n[SERVICE]\n  Grace 3\n").unwrap();
    let s = doc.service.unwrap();
    assert_eq!(props(&s), vec![kv("Flush", "1", 2), kv("Grace", "3", 6)]);
    assert_eq!(doc.sections.len(), 1);
}

#[test]
fn header_errors_and_trailing_text() {
    assert_eq!(
        err("[INPUT\n  Name x\n"),
        (
            Some(1),
            "'[INPUT': a section header needs its closing ']'".into()
        )
    );
    let doc = parse("[INPUT] # a comment\n  Name x\n[OUTPUT] extra\n  Name y\n").unwrap();
    assert_eq!(doc.warnings.len(), 1);
    assert_eq!(doc.warnings[0].line, Some(3));
    assert!(doc.warnings[0].message.contains("'extra'"));
}

#[test]
fn keys_must_be_indented() {
    // The 2023 kubernetes_events documentation example: refused at its first key.
    let (line, message) = err("[SERVICE]\nflush           1\nlog_level       info\n");
    assert_eq!(line, Some(2));
    assert!(
        message.starts_with("key 'flush' is not indented"),
        "{message}"
    );
    // Indented in one section, not in the next.
    let (line, message) = err("[SERVICE]\n    flush 1\n[INPUT]\nname x\n");
    assert_eq!(line, Some(4));
    assert!(
        message.starts_with("key 'name' is not indented"),
        "{message}"
    );
}

#[test]
fn the_first_key_line_sets_the_files_indentation() {
    // Two spaces in the whole file, including later sections.
    let doc = parse("[A]\n  k v\n[B]\n  k2 v2\n").unwrap();
    assert_eq!(props(&doc.sections[1]), vec![kv("k2", "v2", 4)]);
    // Exactly twice as deep is a nested line, read into the section.
    let doc = parse("[A]\n  k v\n    k2 v2\n").unwrap();
    assert_eq!(props(&doc.sections[0]).len(), 2);
    let (line, message) = err("[A]\n    k v\n  k2 v2\n");
    assert_eq!(line, Some(3));
    assert!(
        message.starts_with(
            "indentation level is too low: this file's keys are indented with 4 spaces (line 2)"
        ),
        "{message}"
    );
    let (line, message) = err("[A]\n    k v\n      k2 v2\n");
    assert_eq!(line, Some(3));
    assert!(message.starts_with("extra indentation"), "{message}");
    let (line, message) = err("[A]\n    k v\n\tk2 v2\n");
    assert_eq!(line, Some(3));
    assert!(
        message.starts_with("inconsistent use of tabs and spaces"),
        "{message}"
    );
    let (line, message) = err("[A]\n\tk v\n    k2 v2\n");
    assert_eq!(line, Some(3));
    assert!(message.contains("1 tab"), "{message}");
}

#[test]
fn blank_and_comment_lines_within_indentation() {
    // A line of exactly the indentation is blank; a comment at the indentation is skipped.
    let doc = parse("[A]\n    k v\n    \n    # c\n        # nested comment\n    k2 v2\n").unwrap();
    assert_eq!(props(&doc.sections[0]).len(), 2);
    // Fewer spaces than the indentation: Fluent Bit refuses the line.
    let (line, message) = err("[A]\n    k v\n  \n    k2 v2\n");
    assert_eq!(line, Some(3));
    assert!(
        message.starts_with("a line of only spaces or tabs"),
        "{message}"
    );
    // A comment indented less than the keys is refused too.
    let (line, _) = err("[A]\n    k v\n  # c\n");
    assert_eq!(line, Some(3));
    // A comment in column 0 is always a comment.
    parse("[A]\n    k v\n# c\n    k2 v2\n").unwrap();
    // A whitespace-only line before the first key sets the indentation (so four spaces are
    // its nested level, and three are refused).
    parse("[A]\n  \n    k v\n").unwrap();
    let (line, _) = err("[A]\n  \n   k v\n");
    assert_eq!(line, Some(3));
}

#[test]
fn key_value_separation() {
    let (line, message) = err("[A]\n  Name\n");
    assert_eq!((line, message.as_str()), (Some(2), "'Name' has no value"));
    let (_, message) = err("[A]\n  Name\tstdout\n");
    assert!(message.contains("separated by a space"), "{message}");
    // One space and nothing after it: Fluent Bit's "key has an empty value".
    let (_, message) = err("[A]\n  Name \n");
    assert_eq!(message, "key 'Name' has an empty value");
    // More spaces: the value is trimmed to empty, and accepted.
    let doc = parse("[A]\n  Name   \n").unwrap();
    assert_eq!(props(&doc.sections[0]), vec![kv("Name", "", 2)]);
    // A tab inside the key stays in the key (the key ends at the first space).
    let doc = parse("[A]\n  Na\tme x y\n").unwrap();
    assert_eq!(props(&doc.sections[0]), vec![kv("Na\tme", "x y", 2)]);
}

#[test]
fn keys_outside_sections_and_groups() {
    let (line, message) = err("  Name x\n");
    assert_eq!(line, Some(1));
    assert_eq!(message, "key 'Name' is outside any [SECTION]");
    let (line, message) = err("[MULTILINE_PARSER]\n  name x\n  [rule] a\n");
    assert_eq!(line, Some(3));
    assert!(message.contains("groups"), "{message}");
}

#[test]
fn set_directives() {
    let doc = parse("@SET a=1\n@set b=x=y\n[A]\n  k ${a}\n").unwrap();
    let vars: Vec<(&str, &str)> = doc
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(vars, vec![("a", "1"), ("b", "x=y")]);
    // Spaces around '=' belong to the name and value, as in Fluent Bit: a warning says so.
    let doc = parse("@SET a = 1\n").unwrap();
    assert_eq!(doc.variables[0].name, "a ");
    assert_eq!(doc.warnings.len(), 1);
    assert_eq!(err("@SET a\n").1, "'@SET a': expected @SET name=value");
    assert!(err("@FOO bar\n").1.starts_with("unknown directive '@FOO'"));
    assert!(err("@SET\n").1.contains("needs a value"));
}

fn memory() -> Memory {
    Memory::default()
        .with(
            "/etc/fb/main.conf",
            "@INCLUDE sub/inputs.conf\n[OUTPUT]\n    Name stdout\n    Match *\n",
        )
        .with(
            "/etc/fb/sub/inputs.conf",
            "@INCLUDE more.conf\n[INPUT]\n  Name a\n",
        )
        // Resolved from the main file's directory, not the including file's.
        .with("/etc/fb/more.conf", "[INPUT]\n\tName b")
        .with("/etc/fb/sub/more.conf", "[INPUT]\n  Name wrong\n")
}

#[test]
fn includes_resolve_from_the_main_files_directory_with_their_own_indentation() {
    let doc = read(&memory(), Path::new("/etc/fb/main.conf")).unwrap();
    let names: Vec<&str> = doc
        .sections
        .iter()
        .map(|s| s.last("name").unwrap().scalar().unwrap())
        .collect();
    assert_eq!(names, vec!["b", "a", "stdout"]);
    assert_eq!(
        doc.sections[0].file.as_ref(),
        Path::new("/etc/fb/more.conf")
    );
    assert_eq!(doc.sections[0].properties[0].line, 2);
    assert_eq!(doc.files.len(), 3);
}

#[test]
fn include_errors() {
    let files = Memory::default().with("/c/main.conf", "@INCLUDE nope.conf\n");
    let d = read(&files, Path::new("/c/main.conf")).unwrap_err();
    assert_eq!(d.line, Some(1));
    assert!(
        d.message.starts_with("@INCLUDE 'nope.conf': no such file"),
        "{}",
        d.message
    );
    // The same file twice (Fluent Bit: "Read twice").
    let files = Memory::default()
        .with("/c/main.conf", "@INCLUDE a.conf\n@INCLUDE a.conf\n")
        .with("/c/a.conf", "[INPUT]\n  Name x\n");
    let d = read(&files, Path::new("/c/main.conf")).unwrap_err();
    assert!(d.message.contains("read a second time"), "{}", d.message);
    // A cycle.
    let files = Memory::default()
        .with("/c/main.conf", "@INCLUDE a.conf\n")
        .with("/c/a.conf", "@INCLUDE main.conf\n");
    assert!(read(&files, Path::new("/c/main.conf")).is_err());
    // Globs: sorted, from the main file's directory; no match is an error.
    let files = Memory::default()
        .with("/c/main.conf", "@INCLUDE conf.d/*.conf\n")
        .with("/c/conf.d/b.conf", "[OUTPUT]\n  Name b\n")
        .with("/c/conf.d/a.conf", "[INPUT]\n  Name a\n");
    let doc = read(&files, Path::new("/c/main.conf")).unwrap();
    assert_eq!(doc.sections[0].last("name").unwrap().scalar(), Some("a"));
    let files = Memory::default().with("/c/main.conf", "@INCLUDE conf.d/*.conf\n");
    let d = read(&files, Path::new("/c/main.conf")).unwrap_err();
    assert!(d.message.contains("matches no file"), "{}", d.message);
    // `@INCLUDE` takes the rest of the line as it is: two spaces make a path with a space.
    let files = Memory::default()
        .with("/c/main.conf", "@INCLUDE  a.conf\n")
        .with("/c/a.conf", "");
    assert!(read(&files, Path::new("/c/main.conf")).is_err());
}

#[test]
fn not_utf8() {
    let d = read_text(b"[A]\n  k \xff\n", Path::new("x.conf")).unwrap_err();
    assert_eq!((d.line, d.message.as_str()), (Some(2), "is not UTF-8 text"));
}

/// A configuration made of sections with keys, written with one indentation, blank lines and
/// comments between: what the reader must give back, lines included.
#[derive(Debug, Clone)]
struct Generated {
    indent: String,
    sections: Vec<(String, Vec<(String, String)>)>,
    /// Before each line of content: blank lines, comment lines.
    noise: Vec<u8>,
    crlf: bool,
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_.]{0,12}"
}

fn value() -> impl Strategy<Value = String> {
    // No leading/trailing blanks (values are trimmed); anything printable inside.
    "[!-~]([ -~]{0,20}[!-~])?"
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![
            Just(" ".to_string()),
            Just("  ".to_string()),
            Just("    ".to_string()),
            Just("\t".to_string())
        ],
        prop::collection::vec(
            (
                prop_oneof![
                    Just("SERVICE"),
                    Just("INPUT"),
                    Just("FILTER"),
                    Just("OUTPUT"),
                    Just("input")
                ],
                prop::collection::vec((key(), value()), 0..6),
            ),
            0..6,
        ),
        prop::collection::vec(0u8..4, 64),
        any::<bool>(),
    )
        .prop_map(|(indent, sections, noise, crlf)| Generated {
            indent,
            sections: sections
                .into_iter()
                .map(|(h, kvs)| (h.to_string(), kvs))
                .collect(),
            noise,
            crlf,
        })
}

/// The text, and for each section (in order) its header line and its keys' lines.
fn render(g: &Generated) -> (String, Vec<(usize, Vec<usize>)>) {
    let mut out = String::new();
    let mut line = 0;
    let mut lines = Vec::new();
    let mut noise = g.noise.iter().cycle();
    let nl = if g.crlf { "\r\n" } else { "\n" };
    let mut emit = |out: &mut String, text: &str, line: &mut usize| {
        match noise.next() {
            Some(1) => {
                out.push_str(nl);
                *line += 1;
            }
            Some(2) => {
                out.push_str("# a comment");
                out.push_str(nl);
                *line += 1;
            }
            Some(3) => {
                out.push_str(&g.indent);
                out.push_str("# an indented comment");
                out.push_str(nl);
                *line += 1;
            }
            _ => {}
        }
        out.push_str(text);
        out.push_str(nl);
        *line += 1;
    };
    let mut any_key = false;
    for (header, kvs) in &g.sections {
        emit(&mut out, &format!("[{header}]"), &mut line);
        let header_line = line;
        let mut key_lines = Vec::new();
        for (k, v) in kvs {
            emit(&mut out, &format!("{}{k} {v}", g.indent), &mut line);
            key_lines.push(line);
            any_key = true;
        }
        lines.push((header_line, key_lines));
    }
    // An indented comment before any key would set the indentation itself: harmless, as it
    // is the same indentation.
    let _ = any_key;
    (out, lines)
}

proptest! {
    #[test]
    fn reads_back_what_was_written(g in generated()) {
        let (text, lines) = render(&g);
        let doc = parse(&text).unwrap();
        // Services merge; the rest keep their order.
        let mut service: Vec<(String, String, usize)> = Vec::new();
        let mut others = Vec::new();
        for ((header, kvs), (hl, kls)) in g.sections.iter().zip(&lines) {
            let ps: Vec<_> = kvs.iter().zip(kls).map(|((k, v), l)| kv(k, v, *l)).collect();
            if header == "SERVICE" {
                service.extend(ps);
            } else {
                others.push((header.clone(), *hl, ps));
            }
        }
        match &doc.service {
            Some(s) => prop_assert_eq!(props(s), service),
            None => prop_assert!(service.is_empty() && !g.sections.iter().any(|(h, _)| h == "SERVICE")),
        }
        prop_assert_eq!(doc.sections.len(), others.len());
        for (s, (header, hl, ps)) in doc.sections.iter().zip(others) {
            prop_assert_eq!(&s.header, &header);
            prop_assert_eq!(s.line, hl);
            prop_assert_eq!(props(s), ps);
        }
        prop_assert!(doc.warnings.is_empty());
    }

    #[test]
    fn a_line_indented_otherwise_is_refused_at_that_line(
        g in generated(),
        extra in prop_oneof![Just(" "), Just("\t"), Just("   ")],
    ) {
        let (text, lines) = render(&g);
        // Re-indent the first key after the one that set the indentation.
        let key_lines: Vec<usize> = lines.iter().flat_map(|(_, k)| k.clone()).collect();
        prop_assume!(key_lines.len() >= 2);
        let target = key_lines[1];
        let indent_len = g.indent.len();
        let nl = if g.crlf { "\r\n" } else { "\n" };
        let mut out: Vec<String> = text.split(nl).map(str::to_string).collect();
        let original = out[target - 1].clone();
        let body = &original[indent_len..];
        let reindented = format!("{extra}{body}");
        // Skip the cases that are valid: the same indentation, or exactly twice it.
        prop_assume!(extra != g.indent && *extra != g.indent.repeat(2));
        out[target - 1] = reindented;
        let text = out.join(nl);
        let d = parse(&text).unwrap_err();
        prop_assert_eq!(d.line, Some(target), "{}", d.message);
    }

    #[test]
    fn never_panics_on_any_text(text in "[\\[\\]@#a-zA-Z0-9 \t\r\n=${}*.]{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_text(&bytes, Path::new("x.conf"));
    }
}
