//! Small pieces the dashboard's pages share: a form's submit row, how a server function's error
//! reads, and how a time is shown.

use leptos::prelude::*;
use time::macros::format_description;
use time::OffsetDateTime;

/// A form's submit button, disabled while the form is sent, with the server's error beside it.
#[component]
pub fn SubmitRow(
    label: &'static str,
    #[prop(into)] pending: Signal<bool>,
    #[prop(into)] error: Signal<Option<ServerFnError>>,
) -> impl IntoView {
    view! {
        <div class="form-actions">
            <button class="btn btn-primary" type="submit" disabled=move || pending.get()>
                {label}
            </button>
            {move || {
                error
                    .get()
                    .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
            }}
        </div>
    }
}

/// A server function's error as the person should read it (without the "error running
/// server function" wrapping).
pub fn error_text(error: &ServerFnError) -> String {
    match error {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// A moment as the dashboard shows it: `2025-01-31 14:05:09 UTC`.
pub fn format_time(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.format(format).unwrap_or_default()
}
