//! The browser entry point: cargo-leptos builds this crate to WASM and the page's hydration
//! script calls [`hydrate`], which attaches the dashboard's reactivity to the server-rendered
//! HTML. The pages are lazy routes (their code is a separate WASM chunk, fetched on first use),
//! so hydration waits for the current page's chunk (see `app::hydrate`).

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    app::hydrate();
}
