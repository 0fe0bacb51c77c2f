//! Answers as text for people (`kubetrail who`, `kubetrail activity`).

use std::fmt::Write;

use crate::model::{Actor, Cause, Change, Child, Entry, ObjectRef, Story};

/// `23:01:31.443` from RFC 3339 (with the date when `with_date`).
fn clock(t: &str, with_date: bool) -> String {
    let (date, hms) = date_and_clock(t);
    if with_date {
        format!("{date} {hms}")
    } else {
        hms
    }
}

/// (`2026-12-06`, `23:01:31.443`) of an RFC 3339 time in UTC, to the millisecond; a time the
/// record gives in whole seconds (a legacy Event's) is `23:01:31`, without claiming a
/// precision it does not have.
pub fn date_and_clock(t: &str) -> (&str, String) {
    let (date, rest) = t.split_once('T').unwrap_or(("", t));
    let rest = rest.trim_end_matches('Z');
    let hms = match rest.split_once('.') {
        Some((hms, frac)) => {
            let ms: String = frac.chars().chain("000".chars()).take(3).collect();
            format!("{hms}.{ms}")
        }
        None => rest.to_string(),
    };
    (date, hms)
}

fn date(t: &str) -> &str {
    t.split_once('T').map_or("", |(d, _)| d)
}

/// `Pod shop/web-0`.
pub fn object(o: &ObjectRef) -> String {
    let kind = o.kind.clone().unwrap_or_else(|| o.resource.clone());
    match &o.namespace {
        Some(ns) => format!("{kind} {ns}/{}", o.name),
        None => format!("{kind} {}", o.name),
    }
}

/// `alice (kubectl/v1.28.7, 10.0.0.7)`.
pub fn actor(a: &Actor) -> String {
    let mut s = a.display.clone();
    if a.external {
        let ua = a
            .user_agent
            .as_deref()
            .and_then(|u| u.split_whitespace().next());
        let parts: Vec<&str> = ua.into_iter().chain(a.source_ip.as_deref()).collect();
        if !parts.is_empty() {
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
    }
    s
}

fn by(a: &Option<Actor>) -> String {
    a.as_ref()
        .map(|a| format!(" by {}", actor(a)))
        .unwrap_or_default()
}

/// One timeline row.
pub fn entry(e: &Entry, with_date: bool) -> String {
    format!("{}  {}", stamp(&e.time, with_date), e.summary)
}

/// A timeline row's time: whole-second times padded to the width of the others, so that the
/// summaries line up.
fn stamp(t: &str, with_date: bool) -> String {
    let width = if with_date { 23 } else { 12 };
    format!("{:<width$}", clock(t, with_date))
}

fn cause_line(c: &Cause) -> String {
    format!(
        "{} {} {}{} — {}",
        clock(&c.time, false),
        object(&c.object),
        c.summary,
        by(&c.actor),
        c.link
    )
}

fn change(out: &mut String, c: &Change) {
    let _ = writeln!(
        out,
        "  {}  {}{}",
        clock(&c.time, false),
        c.summary,
        by(&c.actor)
    );
    for (depth, cause) in c.causes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}← {}",
            " ".repeat(14 + depth * 2),
            cause_line(cause)
        );
    }
    if let Some(m) = &c.missing {
        let _ = writeln!(out, "  {}? {}", " ".repeat(14 + c.causes.len() * 2), m);
    }
}

fn child(out: &mut String, c: &Child, depth: usize) {
    let _ = writeln!(
        out,
        "  {}{}: created {}; {}",
        "  ".repeat(depth),
        object(&c.object),
        c.created
            .as_deref()
            .map_or("(not in the records)".into(), |t| clock(t, false)),
        c.state.detail
    );
    for g in &c.children {
        child(out, g, depth + 1);
    }
}

fn count(children: &[Child]) -> usize {
    children.iter().map(|c| 1 + count(&c.children)).sum()
}

/// A story as text: the object, its records, its changes with their causes, its state,
/// what it made, what is missing.
pub fn story(s: &Story) -> String {
    let mut out = String::new();
    let uid = if s.uids.is_empty() {
        String::new()
    } else {
        format!("  (uid {})", s.uids.join(", "))
    };
    let _ = writeln!(out, "{}{uid}", object(&s.object));
    if s.since.is_some() || s.until.is_some() {
        let _ = writeln!(
            out,
            "window: {} → {}",
            s.since.as_deref().unwrap_or("…"),
            s.until.as_deref().unwrap_or("now")
        );
    }
    let _ = writeln!(out, "\nrecords ({}), oldest first:", s.steps.len());
    let mut day = "";
    for e in &s.steps {
        if date(&e.time) != day {
            day = date(&e.time);
            let _ = writeln!(out, "  {day}");
        }
        let _ = writeln!(out, "  {}", entry(e, false));
    }
    let _ = writeln!(out, "\nchanges and their causes (← caused by):");
    if s.changes.is_empty() {
        let _ = writeln!(out, "  none in the records");
    }
    for c in &s.changes {
        change(&mut out, c);
    }
    let _ = writeln!(out, "\nstate: {}", s.state.detail);
    if !s.children.is_empty() {
        let _ = writeln!(out, "\nmade ({} objects):", count(&s.children));
        for c in &s.children {
            child(&mut out, c, 0);
        }
    }
    if !s.missing.is_empty() {
        let _ = writeln!(out, "\nmissing evidence:");
        for m in &s.missing {
            let _ = writeln!(out, "  - {m}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        assert_eq!(clock("2026-12-06T23:01:31.443123Z", false), "23:01:31.443");
        assert_eq!(clock("2026-12-06T23:01:31Z", true), "2026-12-06 23:01:31");
        assert_eq!(clock("2026-12-06T23:01:31Z", false), "23:01:31");
        assert_eq!(clock("2026-12-06T23:01:31.4Z", false), "23:01:31.400");
        assert_eq!(clock("2026-12-06T23:01:31.000001Z", false), "23:01:31.000");
    }

    #[test]
    fn timeline_times_line_up_whatever_their_precision() {
        assert_eq!(stamp("2026-12-06T23:01:31Z", false), "23:01:31    ");
        assert_eq!(stamp("2026-12-06T23:01:31.5Z", false), "23:01:31.500");
        assert_eq!(
            stamp("2026-12-06T23:01:31Z", true),
            "2026-12-06 23:01:31    "
        );
        assert_eq!(
            stamp("2026-12-06T23:01:31.25Z", true),
            "2026-12-06 23:01:31.250"
        );
    }
}
