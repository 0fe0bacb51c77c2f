//! A YAML tree with line numbers, built from yaml-rust2's event stream.
//!
//! Every scalar stays a string (Fluent Bit semantics: `on`, `30s`, `512k` are all text that the
//! component interprets), and every node remembers the line it started on so configuration
//! errors can point at it. The one YAML reader of the workspace: the configuration loader, the
//! Fluent Bit YAML reader and the kubeconfig reader all build on it. yaml-rust2 is a maintained
//! pure-Rust YAML 1.2 parser whose event stream carries positions (serde-based YAML crates lose
//! them past the first error).

use yaml_rust2::Event;
use yaml_rust2::parser::{MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A YAML node and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// A scalar; `None` for a YAML null (`~`, or nothing after the colon).
    Scalar(Option<String>),
    Seq(Vec<Node>),
    /// Keys with their lines, in document order (duplicates kept so they can be reported).
    Map(Vec<(String, usize, Node)>),
}

/// A YAML syntax error with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

enum Frame {
    /// Start line, anchor id (0: none), items.
    Seq(usize, usize, Vec<Node>),
    /// Start line, anchor id, entries, the key waiting for its value.
    Map(
        usize,
        usize,
        Vec<(String, usize, Node)>,
        Option<(String, usize)>,
    ),
}

/// How many nodes alias expansion may add to a document, in all: a few small anchors reused
/// are fine, a "billion laughs" document is refused.
const ALIAS_NODE_BUDGET: usize = 10_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    error: Option<YamlError>,
    /// Whether aliases are expanded (else they are an error).
    aliases: bool,
    anchors: std::collections::HashMap<usize, Node>,
    alias_nodes: usize,
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        NodeValue::Scalar(_) => 0,
        NodeValue::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeValue::Map(entries) => entries.iter().map(|(_, _, n)| count_nodes(n)).sum(),
    }
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 && self.aliases {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => {
                    let key = match node.value {
                        NodeValue::Scalar(s) => s.unwrap_or_default(),
                        _ => {
                            self.error.get_or_insert(YamlError {
                                line: node.line,
                                message: "a mapping key must be a plain value".into(),
                            });
                            String::new()
                        }
                    };
                    *pending = Some((key, node.line));
                }
                Some((key, line)) => entries.push((key, line, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(s, style, anchor, _) => {
                let plain_null = matches!(style, yaml_rust2::scanner::TScalarStyle::Plain)
                    && (s == "~" || s == "null" || s.is_empty());
                let value = if plain_null { None } else { Some(s) };
                self.push_node(
                    Node {
                        line,
                        value: NodeValue::Scalar(value),
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(line, anchor, Vec::new()))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(line, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(l, anchor, items)) => (
                        Node {
                            line: l,
                            value: NodeValue::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map(l, anchor, entries, _)) => (
                        Node {
                            line: l,
                            value: NodeValue::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => {
                let target = if self.aliases {
                    self.anchors.get(&id).cloned()
                } else {
                    None
                };
                let node = match target {
                    Some(n) => {
                        self.alias_nodes += count_nodes(&n);
                        if self.alias_nodes > ALIAS_NODE_BUDGET {
                            self.error.get_or_insert(YamlError {
                                line,
                                message: format!(
                                    "aliases expand to more than {ALIAS_NODE_BUDGET} nodes"
                                ),
                            });
                        }
                        n
                    }
                    None => {
                        self.error.get_or_insert(YamlError {
                            line,
                            message: if self.aliases {
                                "an alias to an unknown anchor".into()
                            } else {
                                "YAML aliases are not supported in kubetrail configuration".into()
                            },
                        });
                        Node {
                            line,
                            value: NodeValue::Scalar(None),
                        }
                    }
                };
                self.push_node(node, 0);
            }
            _ => {}
        }
    }
}

/// Parses one YAML document into a [`Node`]. An empty document is an empty map. Aliases are an
/// error (configuration files do not need them, and Fluent Bit refuses them too).
pub fn parse(text: &str) -> Result<Node, YamlError> {
    parse_document(text, false)
}

/// Like [`parse`], but aliases (`*name`) are replaced by a copy of their anchor's node, as
/// kubeconfig readers do; the copies may add at most a bounded number of nodes.
pub fn parse_with_aliases(text: &str) -> Result<Node, YamlError> {
    parse_document(text, true)
}

fn parse_document(text: &str, aliases: bool) -> Result<Node, YamlError> {
    let mut builder = Builder {
        aliases,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: NodeValue::Map(Vec::new()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_and_scalars_as_strings() {
        let doc = "a: on\nb:\n  - 1\n  - x\nc:\n  d: 30s\ne:\n";
        let n = parse(doc).unwrap();
        let NodeValue::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].0, "a");
        assert_eq!(entries[0].1, 1);
        assert_eq!(entries[0].2.value, NodeValue::Scalar(Some("on".into())));
        assert_eq!(entries[1].1, 2);
        let NodeValue::Seq(items) = &entries[1].2.value else {
            panic!()
        };
        assert_eq!(items[1].line, 4);
        let NodeValue::Map(inner) = &entries[2].2.value else {
            panic!()
        };
        assert_eq!((inner[0].0.as_str(), inner[0].1), ("d", 6));
        assert_eq!(entries[3].2.value, NodeValue::Scalar(None));
    }

    #[test]
    fn quoted_empty_is_not_null() {
        let n = parse("k: \"\"\n").unwrap();
        let NodeValue::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].2.value, NodeValue::Scalar(Some(String::new())));
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
    }

    #[test]
    fn aliases_expand_only_when_allowed() {
        let doc = "a: &x {k: v}\nb: *x\n";
        assert!(parse(doc).unwrap_err().message.contains("aliases"));
        let n = parse_with_aliases(doc).unwrap();
        let NodeValue::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].2.value, entries[1].2.value);
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n";
        assert!(
            parse_with_aliases(laughs)
                .unwrap_err()
                .message
                .contains("more than")
        );
        assert!(parse_with_aliases("a: *nope\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z:\\- \\n\\[\\]{}\"'&*!|>#]{0,60}") {
            let _ = parse(&s);
            let _ = parse_with_aliases(&s);
        }
    }
}
