//! The timeline page: the filter form (a GET form: its fields are the query's inputs) and the
//! results (a table of records, newest first, with a link to the older ones). The results
//! part alone is what the script asks for when a filter changes, and what live updates add
//! rows to.

use kubetrail_query::{Entry, Order, Position, RecordClass, TimelinePage, TimelineQuery};
use maud::{Markup, html};

use super::{Chrome, entry_head, entry_row, layout, timeline_href};

/// The whole page.
pub fn page(q: &TimelineQuery, answer: Result<TimelinePage, String>, chrome: &Chrome) -> Markup {
    let json = format!("/timeline.json{}", query_suffix(q));
    layout(
        "Activity",
        chrome,
        Some(&json),
        html! {
            h1 { "Activity" }
            (filters(q))
            (results(q, &answer))
        },
    )
}

fn query_suffix(q: &TimelineQuery) -> String {
    let qs = q.to_query_string();
    if qs.is_empty() { qs } else { format!("?{qs}") }
}

fn text_field(name: &str, label: &str, value: Option<String>, hint: &str) -> Markup {
    let id = format!("f-{name}");
    let hint_id = format!("h-{name}");
    html! {
        div.field {
            label for=(id) { (label) }
            input #(id) type="text" name=(name) value=[value] autocomplete="off"
                spellcheck="false" aria-describedby=(hint_id);
            span.hint #(hint_id) { (hint) }
        }
    }
}

fn check(name: &str, label: &str, on: bool) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.check {
            input #(id) type="checkbox" name=(name) value="true" checked[on];
            label for=(id) { (label) }
        }
    }
}

/// The filter form.
pub fn filters(q: &TimelineQuery) -> Markup {
    let kind = q.kind;
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    html! {
        form #filters.filters method="get" action="/timeline" role="search" aria-label="Filters" {
            (text_field("namespace", "Namespace", q.namespace.clone(), "shop"))
            (text_field("object", "Object", q.object.as_ref().map(ToString::to_string), "pod/web-0, deploy/web, nodes"))
            (text_field("user", "User", q.user.clone(), "alice, system:serviceaccount:…"))
            (text_field("verb", "Verb", nonempty(q.verb.to_string()), "delete,patch"))
            (text_field("reason", "Reason", nonempty(q.reason.to_string()), "Evicted,BackOff"))
            (text_field("since", "Since", q.since.map(|t| t.to_string()), "2h, or 2026-12-06T23:00:00Z"))
            (text_field("until", "Until", q.until.map(|t| t.to_string()), "same forms"))
            div.field {
                label for="f-kind" { "Records" }
                select #f-kind name="kind" {
                    option value="" selected[kind.is_none()] { "all" }
                    option value="audit" selected[kind == Some(RecordClass::Audit)] { "audit events" }
                    option value="event" selected[kind == Some(RecordClass::Event)] { "Kubernetes Events" }
                    option value="gap" selected[kind == Some(RecordClass::Gap)] { "gaps" }
                }
            }
            fieldset.checks {
                legend.visually-hidden { "Only" }
                (check("warnings", "Warning Events only", q.warnings))
                (check("failed", "Failed requests only", q.failed))
                (check("writes", "Changes only (no reads)", q.writes))
            }
            @if let Some(l) = q.limit {
                input type="hidden" name="limit" value=(l);
            }
            @if q.order == Order::Oldest {
                input type="hidden" name="order" value="oldest";
            }
            div.actions {
                button type="submit" { "Apply" }
                a href="/timeline" { "Clear" }
            }
        }
    }
}

/// The live-update address of a first page of the newest records: the same filters, from
/// the page's position on. `None` where new records would not show (older pages, oldest
/// first, a window that ends).
pub fn live_href(q: &TimelineQuery, position: Position) -> Option<String> {
    if q.cursor.is_some() || q.order != Order::Newest || q.until.is_some() {
        return None;
    }
    let live = TimelineQuery {
        cursor: None,
        limit: None,
        after: Some(position),
        ..q.clone()
    };
    Some(format!("/timeline/live?{}", live.to_query_string()))
}

/// The results part.
pub fn results(q: &TimelineQuery, answer: &Result<TimelinePage, String>) -> Markup {
    html! {
        section #results aria-label="Records" {
            @match answer {
                Err(e) => p.error role="alert" { (e) },
                Ok(page) => {
                    p.status {
                        span #count { (page.entries.len()) }
                        @if q.order == Order::Newest { " records, newest first." } @else { " records, oldest first." }
                        " "
                        span #live-status role="status" aria-live="polite" {}
                    }
                    table #timeline.records data-position=(page.position.0) data-live=[live_href(q, page.position)] {
                        caption.visually-hidden { "Records matching the filters" }
                        (entry_head())
                        tbody #rows { (rows(&page.entries)) }
                    }
                    @if page.entries.is_empty() {
                        p.empty { "No records match these filters." }
                    }
                    nav.pager aria-label="Pages" {
                        @if q.cursor.is_some() {
                            a href=(timeline_href(&TimelineQuery { cursor: None, ..q.clone() })) { "← Newest" }
                        }
                        @if let Some(next) = page.next {
                            a rel="next" href=(timeline_href(&TimelineQuery { cursor: Some(next), ..q.clone() })) { "Older records →" }
                        }
                    }
                }
            }
        }
    }
}

/// Rows of records.
pub fn rows(entries: &[Entry]) -> Markup {
    html! {
        @for e in entries { (entry_row(e)) }
    }
}
