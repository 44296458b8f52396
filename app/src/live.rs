//! The browser end of the live feed (`/api/v1/events`): one WebSocket per tab, reopened after
//! two seconds whenever it drops, so the page follows the server's truth without polling.
//!
//! The page that opens it may say what it watches: `hello` is asked for a request each time the
//! socket (re)opens, so a reconnect resumes from the page's current position.

use shared::api::{DashboardEvent, DashboardRequest};
use std::cell::{Cell, RefCell};
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

type Handler = Rc<dyn Fn(Live)>;
type Hello = Rc<dyn Fn() -> Option<DashboardRequest>>;

/// The open feed; closing it (when the page goes away) stops the reconnects too.
#[derive(Clone)]
pub struct Feed {
    socket: Rc<RefCell<Option<WebSocket>>>,
    stopped: Rc<Cell<bool>>,
}

impl Feed {
    pub fn close(&self) {
        self.stopped.set(true);
        if let Some(socket) = self.socket.borrow_mut().take() {
            // The handlers read the page's values, gone once it is: none may run after this.
            socket.set_onopen(None);
            socket.set_onmessage(None);
            socket.set_onclose(None);
            let _ = socket.close();
        }
    }
}

/// Opens the feed for the life of the page (until [`Feed::close`]), calling `handler` for each
/// message and sending `hello()` each time it opens.
pub fn subscribe(handler: Handler, hello: Hello) -> Feed {
    let feed = Feed {
        socket: Rc::default(),
        stopped: Rc::default(),
    };
    open(feed.clone(), handler, hello);
    feed
}

/// Closes the feed when the reactive owner that opened it (the page) is disposed.
pub fn close_on_cleanup(feed: Feed) {
    let feed = send_wrapper::SendWrapper::new(feed);
    leptos::prelude::on_cleanup(move || feed.close());
}

fn open(feed: Feed, handler: Handler, hello: Hello) {
    if feed.stopped.get() {
        return;
    }
    let window = leptos::prelude::window();
    let location = window.location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    let Ok(socket) = WebSocket::new(&format!("{scheme}://{host}/api/v1/events")) else {
        return retry(feed, handler, hello);
    };

    let on_open = {
        let (handler, hello, socket) = (handler.clone(), hello.clone(), socket.clone());
        Closure::<dyn FnMut()>::new(move || {
            if let Some(request) = hello() {
                if let Ok(text) = serde_json::to_string(&request) {
                    let _ = socket.send_with_str(&text);
                }
            }
            handler(Live::Opened)
        })
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

    let on_close = {
        let feed = feed.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |_: CloseEvent| {
            retry(feed.clone(), handler.clone(), hello.clone())
        })
    };
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    on_close.forget();
    *feed.socket.borrow_mut() = Some(socket);
}

fn retry(feed: Feed, handler: Handler, hello: Hello) {
    leptos::prelude::set_timeout(move || open(feed, handler, hello), Duration::from_secs(2));
}
