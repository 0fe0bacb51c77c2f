//! Index names with a date pattern (`kubetrail-%Y.%m.%d`), rendered from each record's own
//! time (UTC) so that a record goes to the same index however late it is delivered.

use kubetrail_core::Timestamp;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `%Y`
    Year,
    /// `%y`
    Year2,
    /// `%m`
    Month,
    /// `%d`
    Day,
    /// `%H`
    Hour,
    /// `%j`
    DayOfYear,
}

/// A parsed index name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern {
    parts: Vec<Part>,
}

/// Characters Elasticsearch refuses in index names.
const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

impl IndexPattern {
    /// Parses a pattern: literal text plus `%Y` (year), `%y` (two digits), `%m`, `%d`, `%H`,
    /// `%j` (day of the year) and `%%`. The result must be a valid index name: lower case,
    /// none of `\ / * ? " < > | , # :` or spaces, not starting with `-`, `_` or `+`.
    pub fn parse(s: &str) -> Result<IndexPattern, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                if c.is_uppercase() {
                    return Err(format!("'{s}': index names must be lower case"));
                }
                if FORBIDDEN.contains(&c) || c.is_control() {
                    return Err(format!("'{s}': index names cannot contain {c:?}"));
                }
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => Part::Year,
                Some('y') => Part::Year2,
                Some('m') => Part::Month,
                Some('d') => Part::Day,
                Some('H') => Part::Hour,
                Some('j') => Part::DayOfYear,
                Some(o) => {
                    return Err(format!(
                        "'{s}': %{o} is not supported (use %Y %y %m %d %H %j %%)"
                    ));
                }
                None => return Err(format!("'{s}': ends with a lone %")),
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        match parts.first() {
            None => return Err("the index name is empty".into()),
            Some(Part::Literal(l)) if l.starts_with(['-', '_', '+']) => {
                return Err(format!(
                    "'{s}': index names cannot start with '-', '_' or '+'"
                ));
            }
            Some(Part::Literal(l)) if parts.len() == 1 && (l == "." || l == "..") => {
                return Err(format!("'{s}' is not a valid index name"));
            }
            _ => {}
        }
        Ok(IndexPattern { parts })
    }

    /// Whether the name depends on the record's time.
    pub fn is_dated(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    /// The index name for a record of time `t` (UTC).
    pub fn render(&self, t: Timestamp) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_nanos()))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Year => out.push_str(&format!("{:04}", dt.year())),
                Part::Year2 => out.push_str(&format!("{:02}", dt.year().rem_euclid(100))),
                Part::Month => out.push_str(&format!("{:02}", u8::from(dt.month()))),
                Part::Day => out.push_str(&format!("{:02}", dt.day())),
                Part::Hour => out.push_str(&format!("{:02}", dt.hour())),
                Part::DayOfYear => out.push_str(&format!("{:03}", dt.ordinal())),
            }
        }
        out
    }
}
