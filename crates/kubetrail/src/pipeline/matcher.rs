//! Tag matching for filters and outputs: Fluent Bit's `match` (with `*` wildcards) and
//! `match_regex`.

use kubetrail_core::config::{ConfigError, Section};

/// Decides whether a record's tag is routed to a component.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `match`: `*` matches any run of characters (dots included); everything else literally.
    Wildcard(String),
    /// `match_regex`.
    Regex(regex::Regex),
}

impl Matcher {
    /// Reads `match` / `match_regex` from a filter or output section. Without either, the
    /// component matches every tag for outputs' convenience only when `default_all` is set.
    pub fn from_section(section: &mut Section, default_all: bool) -> Result<Matcher, ConfigError> {
        let m = section.get_str("match")?;
        let r = section.get_str("match_regex")?;
        match (m, r) {
            (Some(_), Some(_)) => {
                Err(section.error("match_regex", "use either match or match_regex, not both"))
            }
            (Some(m), None) => Ok(Matcher::Wildcard(m)),
            (None, Some(r)) => regex::Regex::new(&r).map(Matcher::Regex).map_err(|e| {
                section.error("match_regex", format!("invalid regular expression: {e}"))
            }),
            (None, None) if default_all => Ok(Matcher::Wildcard("*".into())),
            (None, None) => {
                Err(section.section_error("needs 'match' (e.g. match: '*') or 'match_regex'"))
            }
        }
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            Matcher::Wildcard(p) => wildcard(p.as_bytes(), tag.as_bytes()),
            Matcher::Regex(r) => r.is_match(tag),
        }
    }
}

/// Iterative glob with `*` only; linear in practice, no recursion on hostile patterns.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, t: &str| Matcher::Wildcard(p.into()).matches(t);
        assert!(m("*", "k8s.events"));
        assert!(m("k8s.*", "k8s.events"));
        assert!(!m("k8s.*", "audit.webhook"));
        assert!(m("*.events", "k8s.events"));
        assert!(m("k8s.events", "k8s.events"));
        assert!(!m("k8s.events", "k8s.events2"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
    }

    proptest! {
        #[test]
        fn star_matches_everything(t in "[a-z.]{0,20}") {
            prop_assert!(Matcher::Wildcard("*".into()).matches(&t));
            prop_assert!(Matcher::Wildcard(t.clone()).matches(&t));
        }
    }
}
