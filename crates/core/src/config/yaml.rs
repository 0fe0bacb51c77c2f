//! A YAML tree with line numbers, built from yaml-rust2's event stream.
//!
//! Every scalar stays a string (Fluent Bit semantics: `on`, `30s`, `512k` are all text that the
//! component interprets), and every node remembers the line it started on so configuration
//! errors can point at it.

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
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(String, usize, Node)>, Option<(String, usize)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
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
            Event::Scalar(s, style, _, _) => {
                let plain_null = matches!(style, yaml_rust2::scanner::TScalarStyle::Plain)
                    && (s == "~" || s == "null" || s.is_empty());
                let value = if plain_null { None } else { Some(s) };
                self.push_node(Node {
                    line,
                    value: NodeValue::Scalar(value),
                });
            }
            Event::SequenceStart(_, _) => self.stack.push(Frame::Seq(line, Vec::new())),
            Event::MappingStart(_, _) => self.stack.push(Frame::Map(line, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(l, items)) => Node {
                        line: l,
                        value: NodeValue::Seq(items),
                    },
                    Some(Frame::Map(l, entries, _)) => Node {
                        line: l,
                        value: NodeValue::Map(entries),
                    },
                    None => return,
                };
                self.push_node(node);
            }
            Event::Alias(_) => {
                self.error.get_or_insert(YamlError {
                    line,
                    message: "YAML aliases are not supported in kubetrail configuration".into(),
                });
                self.push_node(Node {
                    line,
                    value: NodeValue::Scalar(None),
                });
            }
            _ => {}
        }
    }
}

/// Parses one YAML document into a [`Node`]. An empty document is an empty map.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
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

    proptest! {
        #[test]
        fn never_panics(s in "[a-z:\\- \\n\\[\\]{}\"'&*!|>#]{0,60}") {
            let _ = parse(&s);
        }
    }
}
