//! The small value types of the queries, each with a text form that fits a URL or a command
//! line: times (`2h`, `2026-12-06T23:00:00Z`), comma-separated lists, objects (`pod/web-0`),
//! page cursors and live-update positions.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kubetrail_activity::kinds::TypeSpec;
use kubetrail_core::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes through `Display` and deserializes through `FromStr`.
macro_rules! text_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A bound of a time window: a moment (RFC 3339) or a duration before now (`90s`, `30m`,
/// `2h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// A moment.
    At(Timestamp),
    /// This long before the query runs.
    Ago(Duration),
}

impl TimeSpec {
    /// The moment, for a query running at `now`.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::Ago(d) => Timestamp::from_unix_nanos(
                now.unix_nanos()
                    .saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            ),
        }
    }
}

impl FromStr for TimeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<TimeSpec, String> {
        let s = s.trim();
        if let Some(t) = Timestamp::parse_rfc3339(s) {
            return Ok(TimeSpec::At(t));
        }
        let (num, unit) = s.split_at(
            s.find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(s.len()),
        );
        let n: f64 = num.parse().map_err(|_| {
            format!("'{s}' is neither a time (RFC 3339) nor a duration (30m, 2h, 7d)")
        })?;
        let secs = match unit {
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 7.0 * 86_400.0,
            _ => return Err(format!("'{s}': unknown unit '{unit}' (s, m, h, d, w)")),
        };
        let d = Duration::try_from_secs_f64(n * secs).map_err(|e| format!("'{s}': {e}"))?;
        Ok(TimeSpec::Ago(d))
    }
}

impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSpec::At(t) => f.write_str(&t.to_rfc3339()),
            TimeSpec::Ago(d) => {
                let s = d.as_secs();
                if d.subsec_nanos() != 0 {
                    write!(f, "{}s", d.as_secs_f64())
                } else if s % 86_400 == 0 && s > 0 {
                    write!(f, "{}d", s / 86_400)
                } else if s % 3600 == 0 && s > 0 {
                    write!(f, "{}h", s / 3600)
                } else if s % 60 == 0 && s > 0 {
                    write!(f, "{}m", s / 60)
                } else {
                    write!(f, "{s}s")
                }
            }
        }
    }
}

text_serde!(TimeSpec);

/// A list written as comma-separated text (`delete,create`); empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl List {
    /// Whether the list is empty (matches anything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for List {
    type Err = String;
    fn from_str(s: &str) -> Result<List, String> {
        Ok(List(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

text_serde!(List);

/// An object or a type of objects as `kubectl` names them: `pod/web-0`, `deployment.apps/web`,
/// `nodes/node-1`, or a type alone (`pods`). The namespace is given apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The text as given.
    pub text: String,
    /// The type.
    pub ty: TypeSpec,
    /// The name, unless the spec names a whole type.
    pub name: Option<String>,
}

impl FromStr for ObjectSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<ObjectSpec, String> {
        let s = s.trim();
        let (ty, name) = match s.split_once('/') {
            Some((t, n)) => {
                if n.is_empty() || n.contains('/') {
                    return Err(format!("'{s}': expected KIND/NAME (e.g. pod/web-0)"));
                }
                (t, Some(n.to_string()))
            }
            None => (s, None),
        };
        let ty = TypeSpec::parse(ty).ok_or_else(|| format!("'{s}': '{ty}' is not a kind"))?;
        Ok(ObjectSpec {
            text: s.to_string(),
            ty,
            name,
        })
    }
}

impl fmt::Display for ObjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

text_serde!(ObjectSpec);

/// Where a record sits in the order records were stored: a live reader asks for what came
/// after the position it has seen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub i64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A place in a timeline ordered by time: where the next page starts (keyset pagination:
/// the record's time and its position break ties). Text form `TIME_NS.POSITION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    /// The record's position.
    pub position: i64,
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Cursor, String> {
        let bad = || format!("'{s}' is not a page cursor");
        let (t, p) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            time: t.parse().map_err(|_| bad())?,
            position: p.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.time, self.position)
    }
}

text_serde!(Cursor);

/// Which way a timeline runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The newest record first (a timeline page).
    #[default]
    Newest,
    /// The oldest first (a story, `kubetrail activity`).
    Oldest,
}

/// Which records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordClass {
    /// Audit events.
    Audit,
    /// Kubernetes Events.
    Event,
    /// Gap records (what kubetrail could not read).
    Gap,
}

impl RecordClass {
    /// The record kind this class stands for.
    pub fn record_kind(self) -> &'static str {
        match self {
            RecordClass::Audit => "k8s_audit",
            RecordClass::Event => "k8s_event",
            RecordClass::Gap => "gap",
        }
    }
}

/// A time as answers show it: RFC 3339 in UTC, microseconds.
pub fn rfc3339(ns: i64) -> String {
    let t = Timestamp::from_unix_nanos(ns.saturating_sub(ns.rem_euclid(1000)));
    t.to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_specs() {
        assert_eq!(
            "2h".parse::<TimeSpec>().unwrap(),
            TimeSpec::Ago(Duration::from_secs(7200))
        );
        assert_eq!(
            "90".parse::<TimeSpec>().unwrap(),
            TimeSpec::Ago(Duration::from_secs(90))
        );
        assert_eq!(
            "1.5m".parse::<TimeSpec>().unwrap(),
            TimeSpec::Ago(Duration::from_secs(90))
        );
        let at = "2026-12-06T23:00:00Z".parse::<TimeSpec>().unwrap();
        assert!(matches!(at, TimeSpec::At(_)));
        assert_eq!(at.to_string(), "2026-12-06T23:00:00Z");
        assert_eq!(TimeSpec::Ago(Duration::from_secs(7200)).to_string(), "2h");
        assert_eq!(TimeSpec::Ago(Duration::from_secs(90)).to_string(), "90s");
        assert!("2x".parse::<TimeSpec>().is_err());
        assert!("yesterday".parse::<TimeSpec>().is_err());
        let now = Timestamp::from_unix_nanos(10_000_000_000);
        assert_eq!(
            TimeSpec::Ago(Duration::from_secs(3))
                .resolve(now)
                .unix_nanos(),
            7_000_000_000
        );
    }

    #[test]
    fn objects_lists_cursors() {
        let o: ObjectSpec = "deploy/web".parse().unwrap();
        assert_eq!(
            (o.ty.resource.as_str(), o.name.as_deref()),
            ("deployments", Some("web"))
        );
        let t: ObjectSpec = "pods".parse().unwrap();
        assert_eq!(t.name, None);
        assert!("pod/".parse::<ObjectSpec>().is_err());
        assert!("pod/a/b".parse::<ObjectSpec>().is_err());
        assert_eq!(
            "delete, create,".parse::<List>().unwrap().0,
            vec!["delete", "create"]
        );
        let c: Cursor = "1700000000000000000.42".parse().unwrap();
        assert_eq!(c.to_string(), "1700000000000000000.42");
        assert!("x".parse::<Cursor>().is_err());
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
    }
}
