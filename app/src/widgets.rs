//! Small pieces the dashboard's pages share: a form's submit row, a list loaded from the server
//! and the table it is drawn in, how a server function's error reads, and how a time is shown.

use leptos::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
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
            <ErrorLine error />
        </div>
    }
}

/// A list the page loads from the server: `loading` until it arrives, `empty` when it has no
/// entries (without it, `table` draws an empty list too), what `table` draws of the entries
/// otherwise, and the error when loading failed.
#[component]
pub fn Loaded<T, F, V>(
    loading: &'static str,
    #[prop(optional)] empty: Option<&'static str>,
    list: Resource<Result<Vec<T>, ServerFnError>>,
    table: F,
) -> impl IntoView
where
    T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    F: Fn(Vec<T>) -> V + Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    view! {
        <Transition fallback=move || view! { <p class="muted">{loading}</p> }>
            {move || {
                let table = table.clone();
                Suspend::new(async move {
                    match list.await {
                        Ok(entries) if entries.is_empty() && empty.is_some() => {
                            view! { <p class="muted">{empty}</p> }.into_any()
                        }
                        Ok(entries) => table(entries).into_any(),
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })
            }}
        </Transition>
    }
}

/// A table under its column headings (an empty string for a column without one); `children`
/// are its rows. It scrolls sideways on a narrow screen.
#[component]
pub fn Table(
    class: &'static str,
    headings: &'static [&'static str],
    children: Children,
) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class=class>
                <thead>
                    <tr>{headings.iter().map(|heading| view! { <th>{*heading}</th> }).collect_view()}</tr>
                </thead>
                <tbody>{children()}</tbody>
            </table>
        </div>
    }
}

/// The error of a form's or button's last action, if it failed.
#[component]
pub fn ErrorLine(#[prop(into)] error: Signal<Option<ServerFnError>>) -> impl IntoView {
    move || {
        error
            .get()
            .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
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
