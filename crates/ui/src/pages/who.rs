//! An object's story, the answer of `kubetrail who` on a page: its state, each change with
//! the chain of causes that led to it (drawn the way a trace view draws spans: the first
//! cause at the top, each step indented under the step that caused it, the object's own
//! change last, every step with its actor, its time from the first cause and its records one
//! click away), every record about it, what it made, and what evidence is missing.

use kubetrail_core::Timestamp;
use kubetrail_query::{Cause, Change, Child, Story, WhoQuery, render};
use maud::{Markup, html};

use super::{Chrome, actor, clock, entry_head, entry_row, layout, object_link, raw_link, time};

/// The whole page: the form, and the story when an object was asked for.
pub fn page(q: &WhoQuery, answer: Option<Result<Story, String>>, chrome: &Chrome) -> Markup {
    let title = match &answer {
        Some(Ok(s)) => render::object(&s.object),
        _ => "Who did this?".to_string(),
    };
    let json = q
        .object
        .as_ref()
        .map(|_| format!("/who.json?{}", q.to_query_string()));
    layout(
        &title,
        chrome,
        json.as_deref(),
        html! {
            @match &answer {
                Some(Ok(story)) => (self::story(story)),
                Some(Err(e)) => {
                    h1 { "Who did this?" }
                    p.error role="alert" { (e) }
                }
                None => {
                    h1 { "Who did this?" }
                    p { "An object's story: every record about it, and for each of its changes the chain of causes that led to it." }
                }
            }
            (form(q))
        },
    )
}

fn form(q: &WhoQuery) -> Markup {
    html! {
        form.filters.who method="get" action="/who" aria-label="Another object" {
            div.field {
                label for="w-object" { "Object" }
                input #w-object type="text" name="object" required
                    value=[q.object.as_ref().map(ToString::to_string)]
                    placeholder="pod/web-0" autocomplete="off" spellcheck="false";
            }
            div.field {
                label for="w-namespace" { "Namespace" }
                input #w-namespace type="text" name="namespace" value=[q.namespace.clone()]
                    autocomplete="off" spellcheck="false";
            }
            div.field {
                label for="w-since" { "Since" }
                input #w-since type="text" name="since" value=[q.since.map(|t| t.to_string())]
                    placeholder="2h" autocomplete="off";
            }
            div.field {
                label for="w-until" { "Until" }
                input #w-until type="text" name="until" value=[q.until.map(|t| t.to_string())]
                    autocomplete="off";
            }
            div.actions { button type="submit" { "Show" } }
        }
    }
}

fn story(s: &Story) -> Markup {
    html! {
        h1 { (render::object(&s.object)) }
        p.meta {
            @if !s.uids.is_empty() {
                "uid " @for (i, u) in s.uids.iter().enumerate() {
                    @if i > 0 { ", " } code { (u) }
                }
                ". "
            }
            @if s.since.is_some() || s.until.is_some() {
                "Window: " (s.since.as_deref().unwrap_or("…")) " → " (s.until.as_deref().unwrap_or("now")) "."
            }
        }
        p #state class={ "state " (s.state.state) } {
            strong { (s.state.state) } ": " (s.state.detail)
            (records(&s.state.record_ids))
        }
        section #changes aria-labelledby="changes-h" {
            h2 #changes-h { "Changes and their causes" }
            @if s.changes.is_empty() {
                p.empty { "No change of this object is in the records." }
            }
            @for (i, c) in s.changes.iter().enumerate() {
                (chain(s, c, i))
            }
        }
        @if !s.missing.is_empty() {
            section #missing aria-labelledby="missing-h" {
                h2 #missing-h { "Missing evidence" }
                ul { @for m in &s.missing { li { (m) } } }
            }
        }
        @if !s.children.is_empty() {
            section #children aria-labelledby="children-h" {
                h2 #children-h { "What it made" }
                ul.tree { @for c in &s.children { (child(c)) } }
            }
        }
        section #steps aria-labelledby="steps-h" {
            h2 #steps-h { "Records about it (" (s.steps.len()) "), oldest first" }
            @if s.truncated {
                p.note { "The object has more records than one answer shows; the oldest are left out. Narrow the window to see them." }
            }
            table.records {
                caption.visually-hidden { "Every record about the object" }
                (entry_head())
                tbody { @for e in &s.steps { (entry_row(e)) } }
            }
        }
    }
}

/// The links to a step's records.
fn records(ids: &[String]) -> Markup {
    html! {
        @if !ids.is_empty() {
            span.records {
                @for (i, id) in ids.iter().enumerate() {
                    " " (raw_link(id, &if i == 0 { "record".to_string() } else { format!("record {}", i + 1) }))
                }
            }
        }
    }
}

/// `+1.234 s` from the first cause.
fn offset(from: Option<i64>, at: &str) -> Markup {
    let at = Timestamp::parse_rfc3339(at).map(Timestamp::unix_nanos);
    html! {
        @if let (Some(from), Some(at)) = (from, at) {
            span.offset title="time since the first cause" {
                "+" (format!("{:.3}", at.saturating_sub(from) as f64 / 1e9)) " s"
            }
        }
    }
}

/// One change and its causes, the first cause at the top and each step nested in the one
/// that caused it.
fn chain(s: &Story, c: &Change, index: usize) -> Markup {
    let first = c.causes.last().map_or(c.time.as_str(), |x| x.time.as_str());
    let from = Timestamp::parse_rfc3339(first).map(Timestamp::unix_nanos);
    let causes: Vec<&Cause> = c.causes.iter().rev().collect();
    let label = format!("change-{index}");
    html! {
        div.chain role="group" aria-labelledby=(label) {
            h3 #(label) {
                (time(&c.time)) " " (c.what.word())
                @if let Some(a) = &c.actor { " by " (a.display) }
            }
            (steps(s, c, &causes, from))
            @if let Some(m) = &c.missing {
                p.missing { span aria-hidden="true" { "? " } "Before this: " (m) }
            }
        }
    }
}

fn steps(s: &Story, c: &Change, causes: &[&Cause], from: Option<i64>) -> Markup {
    html! {
        ol.steps {
            @match causes.split_first() {
                Some((cause, rest)) => {
                    li.step.cause tabindex="-1" {
                        div.row {
                            (clock(&cause.time)) " " (offset(from, &cause.time)) " "
                            (object_link(&cause.object)) " "
                            span.what { (cause.summary) }
                            @if let Some(a) = &cause.actor { " by " (actor(a)) }
                            (records(&cause.record_ids))
                        }
                        p.link {
                            span aria-hidden="true" { "↳ " }
                            span.visually-hidden { "How this led to the next step: " }
                            (cause.link)
                        }
                        (steps(s, c, rest, from))
                    }
                }
                None => {
                    li.step.change tabindex="-1" {
                        div.row {
                            (clock(&c.time)) " " (offset(from, &c.time)) " "
                            (object_link(&s.object)) " "
                            span.what { (c.summary) }
                            @if let Some(a) = &c.actor { " by " (actor(a)) }
                            (records(&c.record_ids))
                        }
                    }
                }
            }
        }
    }
}

fn child(c: &Child) -> Markup {
    html! {
        li {
            (object_link(&c.object))
            ": created "
            @match &c.created { Some(t) => (time(t)), None => "(not in the records)" }
            "; " (c.state.detail)
            @if !c.children.is_empty() {
                ul { @for g in &c.children { (child(g)) } }
            }
        }
    }
}
