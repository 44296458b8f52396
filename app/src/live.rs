//! The browser end of the live feed (`/api/v1/events`): one WebSocket per tab, reopened after
//! two seconds whenever it drops, so the page follows the server's truth without polling.

use shared::api::DashboardEvent;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// What the page hears from the feed.
pub enum Live {
    /// The feed (re)opened: anything may have changed while it was down, reload the data.
    Opened,
    Event(DashboardEvent),
}

/// Opens the feed and keeps it open for the life of the page, calling `handler` for each message.
pub fn subscribe(handler: Rc<dyn Fn(Live)>) {
    let window = leptos::prelude::window();
    let location = window.location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    let Ok(socket) = WebSocket::new(&format!("{scheme}://{host}/api/v1/events")) else {
        return retry(handler);
    };

    let on_open = {
        let handler = handler.clone();
        Closure::<dyn FnMut()>::new(move || handler(Live::Opened))
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    // The socket holds the callbacks for as long as it lives; they are small and a tab opens
    // a new socket only after the old one closed.
    on_open.forget();

    let on_message = {
        let handler = handler.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
            let Some(text) = message.data().as_string() else {
                return;
            };
            if let Ok(event) = serde_json::from_str::<DashboardEvent>(&text) {
                handler(Live::Event(event));
            }
        })
    };
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();

    let on_close =
        Closure::<dyn FnMut(CloseEvent)>::new(move |_: CloseEvent| retry(handler.clone()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    on_close.forget();
}

fn retry(handler: Rc<dyn Fn(Live)>) {
    leptos::prelude::set_timeout(move || subscribe(handler), Duration::from_secs(2));
}
