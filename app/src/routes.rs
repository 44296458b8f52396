//! Loading a page's split-off code: a failed fetch is retried with a growing pause, and a page
//! whose code still cannot be fetched says so instead of taking the dashboard down with it.

use leptos::prelude::*;
use std::future::Future;
#[cfg(feature = "hydrate")]
use std::time::Duration;

/// Pauses after each failed attempt: 0.25 s, 0.5 s, 1 s, 2 s, 4 s (about 8 s in all).
#[cfg(feature = "hydrate")]
const RETRY_PAUSES: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Fetches a page's code (`attempt` is the chunk's preload): after a failure it tries again
/// following [`RETRY_PAUSES`], and while the page the server rendered is being hydrated, for as
/// long as it takes (every 4 s after the first pauses). The router awaits this before it
/// hydrates or shows the page, and the only view that fits the server's HTML is that page; the
/// HTML stays readable meanwhile.
#[cfg(feature = "hydrate")]
pub async fn fetch<F, Fut, E>(attempt: F) -> Result<(), E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let hydrating =
        Owner::current_shared_context().is_some_and(|context| context.during_hydration());
    let mut pauses = RETRY_PAUSES.iter().copied();
    loop {
        let error = match attempt().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let pause = match pauses.next() {
            Some(pause) => pause,
            None if hydrating => RETRY_PAUSES[RETRY_PAUSES.len() - 1],
            None => return Err(error),
        };
        leptos::logging::warn!("fetching the page's code failed; trying again");
        sleep(pause).await;
    }
}

/// The page `load` renders, or [`PageUnavailable`] when its code could not be fetched (after
/// [`fetch`] gave up: never while hydrating).
pub async fn load<F, Fut, E>(load: F) -> AnyView
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<AnyView, E>>,
{
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
