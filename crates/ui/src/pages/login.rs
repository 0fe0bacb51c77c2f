//! The sign-in form: a person pastes a token of `ui.token_file`; the answer sets the session
//! cookie (see `crate::auth`) and goes back to the page they asked for. Shown with 401 to
//! every unauthenticated request for a page, so no data is ever in that answer.

use maud::{Markup, html};

use super::{Chrome, layout};

/// The form; `next` is where to go afterwards, `note` why the form is shown again.
pub fn page(next: &str, note: Option<&str>, chrome: &Chrome) -> Markup {
    layout(
        "Sign in",
        chrome,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(n) = note {
                p.error role="alert" { (n) }
            }
            p { "The activity page needs a token of the page's token file (" code { "ui.token_file" } ")." }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                div.field {
                    label for="token" { "Token" }
                    input #token type="password" name="token" required autocomplete="current-password"
                        autofocus spellcheck="false";
                }
                div.actions { button type="submit" { "Sign in" } }
            }
        },
    )
}
