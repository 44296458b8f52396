//! Loading a page's split-off code: a failed fetch is retried with a growing pause, and a page
//! whose code still cannot be fetched says so instead of taking the dashboard down with it.

use leptos::prelude::*;
use std::future::Future;
#[cfg(feature = "hydrate")]
use std::time::Duration;

/// Pauses before each new attempt: 0.25 s, 0.5 s, 1 s, 2 s, 4 s (about 8 s in all).
#[cfg(feature = "hydrate")]
const RETRY_PAUSES: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The page `load` renders once its code is there; on the server it is there already.
pub async fn load<F, Fut, E>(load: F) -> AnyView
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<AnyView, E>>,
{
    #[cfg(feature = "hydrate")]
    for pause in RETRY_PAUSES {
        match load().await {
            Ok(page) => return page,
            Err(_) => {
                leptos::logging::warn!("fetching the page's code failed; trying again");
                sleep(pause).await;
            }
        }
    }
    match load().await {
        Ok(page) => page,
        Err(_) => view! { <PageUnavailable /> }.into_any(),
    }
}

/// Shown when a page's code could not be fetched.
#[component]
fn PageUnavailable() -> impl IntoView {
    view! {
        <section class="panel">
            <h1>"This page could not be loaded"</h1>
            <p class="muted">
                "Its code did not arrive from the server. Check the connection, then reload the page."
            </p>
            <a class="btn" href="" rel="external">
                "Reload"
            </a>
        </section>
    }
}

/// Resolves after `pause`, on the browser's timer.
#[cfg(feature = "hydrate")]
async fn sleep(pause: Duration) {
    let millis = i32::try_from(pause.as_millis()).unwrap_or(i32::MAX);
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, millis);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
