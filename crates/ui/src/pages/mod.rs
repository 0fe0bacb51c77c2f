//! The HTML of the page: one module per page, the shell they share, and the pieces several
//! of them draw (a record's row, an object's link, a time). Every text that comes from a
//! record goes through maud, which escapes it.

pub mod login;
pub mod record;
pub mod timeline;
pub mod who;

use kubetrail_query::{Actor, Entry, ObjectRef, ObjectSpec, TimelineQuery, WhoQuery, render};
use maud::{DOCTYPE, Markup, html};

use crate::assets;

/// What the shell shows besides the page itself.
pub struct Chrome {
    /// A session cookie authenticates this request: offer to sign out.
    pub signed_in: bool,
}

/// The document around a page's content.
pub fn layout(title: &str, chrome: &Chrome, json_href: Option<&str>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kubetrail" }
                link rel="icon" href=(assets::href("icon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::href("app.css"));
                script src=(assets::href("app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/timeline" { "kubetrail" }
                    nav aria-label="Pages" {
                        a href="/timeline" { "Timeline" }
                        a href="/who" { "Who did this?" }
                    }
                    @if chrome.signed_in {
                        form.signout method="post" action="/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" { (content) }
                footer {
                    @if let Some(href) = json_href {
                        a href=(href) { "This page as JSON" }
                        " · "
                    }
                    span.keys {
                        "Keys: " kbd { "j" } "/" kbd { "k" } " next/previous row, "
                        kbd { "Enter" } " open, " kbd { "r" } " raw record, "
                        kbd { "/" } " filters"
                    }
                }
            }
        }
    }
}

/// A page that only says something (not found, bad request).
pub fn message(title: &str, text: &str, chrome: &Chrome) -> Markup {
    layout(
        title,
        chrome,
        None,
        html! {
            h1 { (title) }
            p.error role="alert" { (text) }
        },
    )
}

/// `2026-12-06 23:01:31.443`, and the full RFC 3339 time as the machine-readable value.
pub fn time(rfc3339: &str) -> Markup {
    let (date, clock) = render::date_and_clock(rfc3339);
    html! { time datetime=(rfc3339) { (date) " " (clock) } }
}

/// `23:01:31.443` (the date in the title), for steps under a heading that has the date.
pub fn clock(rfc3339: &str) -> Markup {
    let (date, clock) = render::date_and_clock(rfc3339);
    html! { time datetime=(rfc3339) title=(date) { (clock) } }
}

/// The `kubetrail who` spelling of an object (`deployments.apps/web`), when it has a name.
pub fn object_spec(o: &ObjectRef) -> Option<ObjectSpec> {
    if o.name.is_empty() || o.resource.is_empty() {
        return None;
    }
    let ty = if o.group.is_empty() {
        o.resource.clone()
    } else {
        format!("{}.{}", o.resource, o.group)
    };
    format!("{ty}/{}", o.name).parse().ok()
}

/// The URL of an object's story.
pub fn who_href(o: &ObjectRef) -> Option<String> {
    let q = WhoQuery {
        object: Some(object_spec(o)?),
        namespace: o.namespace.clone(),
        ..WhoQuery::default()
    };
    Some(format!("/who?{}", q.to_query_string()))
}

/// An object as a link to its story.
pub fn object_link(o: &ObjectRef) -> Markup {
    let text = render::object(o);
    html! {
        @match who_href(o) {
            Some(href) => a.obj href=(href) { (text) },
            None => span.obj { (text) },
        }
    }
}

/// The URL of a timeline query.
pub fn timeline_href(q: &TimelineQuery) -> String {
    let qs = q.to_query_string();
    if qs.is_empty() {
        "/timeline".into()
    } else {
        format!("/timeline?{qs}")
    }
}

/// Who acted: a user links to what they did; the client and address in the title.
pub fn actor(a: &Actor) -> Markup {
    let detail = render::actor(a);
    let title = (detail != a.display).then_some(detail);
    html! {
        @match &a.user {
            Some(user) => {
                a.actor href=(timeline_href(&TimelineQuery { user: Some(user.clone()), ..TimelineQuery::default() }))
                    title=[title] { (a.display) }
            }
            None => span.actor title=[title] { (a.display) },
        }
    }
}

/// The link to a record and (with the script) the place its JSON opens in.
pub fn raw_link(id: &str, label: &str) -> Markup {
    let href = format!(
        "/record?{}",
        serde_urlencoded::to_string([("id", id)]).unwrap_or_default()
    );
    html! {
        a.raw href=(href) data-record=(id) aria-expanded="false" title={ "The raw record " (id) } { (label) }
    }
}

/// One record as a table row (the timeline, a story's records, live updates).
pub fn entry_row(e: &Entry) -> Markup {
    let class = match e.record_kind.as_str() {
        "k8s_audit" => "audit",
        "k8s_event" => "event",
        "gap" => "gap",
        _ => "other",
    };
    let flag = if e.failed {
        " failed"
    } else if e.event_type.as_deref() == Some("Warning") {
        " warning"
    } else {
        ""
    };
    let kind = match class {
        "audit" => "audit",
        "event" => "Event",
        "gap" => "gap",
        _ => e.record_kind.as_str(),
    };
    let message = e.status_message.as_deref().or(e.message.as_deref());
    html! {
        tr class={ "rec " (class) (flag) } tabindex="-1" data-position=(e.position.0) {
            td.t { (time(&e.time)) }
            td.k { span class={ "badge " (class) } { (kind) } }
            td.o {
                @if let Some(o) = &e.object {
                    (object_link(o))
                    @if let Some(s) = &e.subresource { span.sub { "/" (s) } }
                } @else {
                    span.none { "—" }
                }
            }
            td.a {
                @if let Some(v) = &e.verb { span.verb { (v) } }
                @if let Some(r) = &e.reason { span.reason { (r) } }
            }
            td.u {
                @if let Some(a) = &e.actor { (actor(a)) }
            }
            td.r {
                @if let Some(c) = e.code {
                    span class=(if e.failed { "code bad" } else { "code" }) { (c) }
                }
                @if let Some(t) = &e.event_type {
                    span class=(if t == "Warning" { "type warn" } else { "type" }) { (t) }
                }
            }
            td.m {
                @if let Some(m) = message { (m) }
                @if let Some(n) = e.count {
                    @if n > 1 { span.count title="times the Event occurred" { " ×" (n) } }
                }
            }
            td.x { (raw_link(&e.id, "raw")) }
        }
    }
}

/// The header of a table of [`entry_row`]s.
pub fn entry_head() -> Markup {
    html! {
        thead {
            tr {
                th scope="col" { "Time (UTC)" }
                th scope="col" { "Record" }
                th scope="col" { "Object" }
                th scope="col" { "Verb / reason" }
                th scope="col" { "Actor" }
                th scope="col" { "Result" }
                th scope="col" { "Message" }
                th scope="col" { span.visually-hidden { "Raw record" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_object_specs() {
        assert_eq!(
            time("2026-12-06T23:01:31.443123Z").into_string(),
            "<time datetime=\"2026-12-06T23:01:31.443123Z\">2026-12-06 23:01:31.443</time>"
        );
        // A legacy Event's whole seconds are not shown as milliseconds.
        assert_eq!(
            clock("2026-12-06T23:01:31Z").into_string(),
            "<time datetime=\"2026-12-06T23:01:31Z\" title=\"2026-12-06\">23:01:31</time>"
        );
        let o = ObjectRef {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: Some("Deployment".into()),
            namespace: Some("shop".into()),
            name: "web".into(),
            uid: None,
        };
        assert_eq!(object_spec(&o).unwrap().to_string(), "deployments.apps/web");
        assert_eq!(
            who_href(&o).unwrap(),
            "/who?object=deployments.apps%2Fweb&namespace=shop"
        );
    }

    #[test]
    fn record_text_is_escaped() {
        let e = Entry {
            id: "x\"><script>".into(),
            time: "2026-12-06T23:01:31Z".into(),
            record_kind: "k8s_event".into(),
            message: Some("<img src=x onerror=alert(1)>".into()),
            ..Entry::default()
        };
        let h = entry_row(&e).into_string();
        assert!(!h.contains("<img") && !h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;img"), "{h}");
    }
}
