//! Small pieces the dashboard's pages share: a form's submit row, how a server function's error
//! reads, and how a time is shown.

use leptos::prelude::*;
use time::{OffsetDateTime, UtcOffset};

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

/// A moment as the dashboard shows it: `2025-01-31 14:05:09 UTC`. Written out by hand rather
/// than with `time`'s format descriptions, whose formatting machinery would otherwise be part
/// of every page's WASM.
pub fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let (hour, minute, second) = at.to_hms();
    format!(
        "{:04}-{:02}-{:02} {hour:02}:{minute:02}:{second:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;
    use time::macros::datetime;

    #[test]
    fn a_moment_reads_in_utc_with_padded_fields() {
        assert_eq!(
            format_time(datetime!(2025-01-31 04:05:09.75 UTC)),
            "2025-01-31 04:05:09 UTC"
        );
        assert_eq!(
            format_time(datetime!(2025-12-01 00:30:00 +02:00)),
            "2025-11-30 22:30:00 UTC"
        );
        assert_eq!(
            format_time(datetime!(0999-03-04 05:06:07 UTC)),
            "0999-03-04 05:06:07 UTC"
        );
    }
}
