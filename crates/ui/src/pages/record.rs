//! A stored record as it was stored (Secret content hidden, see `crate::secrets`).

use kubetrail_query::RawRecord;
use maud::{Markup, html};

use super::{Chrome, layout};

/// The page of one record.
pub fn page(id: &str, answer: Result<RawRecord, String>, chrome: &Chrome) -> Markup {
    let json = format!(
        "/record.json?{}",
        serde_urlencoded::to_string([("id", id)]).unwrap_or_default()
    );
    layout(
        "Record",
        chrome,
        Some(&json),
        html! {
            h1 { "Record " code { (id) } }
            @match answer {
                Ok(r) => {
                    p.meta { "Position " (r.position.0) " in the store." }
                    pre.json tabindex="0" aria-label="The record" {
                        (serde_json::to_string_pretty(&r.record).unwrap_or_default())
                    }
                }
                Err(e) => p.error role="alert" { (e) },
            }
        },
    )
}
