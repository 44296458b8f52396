//! The live log panel: container log lines of the watched project, as they arrive.
//!
//! Lines live in a signal fed by the live feed. The buffer keeps the last [`MAX_LINES`]; each
//! line carries its sequence number within the server's stream epoch, so a batch replayed after
//! a reconnect adds only the lines the tab has not shown. The panel follows new lines unless
//! the person scrolled up to read, and picks up following again at the bottom.

use leptos::html::Div;
use leptos::prelude::*;
use shared::api::{LogCursor, LogLine, LogLines};
use std::collections::VecDeque;

/// Lines a tab keeps; older ones scroll out.
pub const MAX_LINES: usize = 5_000;

/// The log buffer of one page, cheap to copy into closures.
#[derive(Clone, Copy)]
pub struct LogBuffer {
    /// Lines with the epoch they belong to: rows are keyed by both, since numbers restart in
    /// every epoch.
    lines: RwSignal<VecDeque<(u64, LogLine)>>,
    cursor: RwSignal<Option<LogCursor>>,
    skipped: RwSignal<u64>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self {
            lines: RwSignal::new(VecDeque::new()),
            cursor: RwSignal::new(None),
            skipped: RwSignal::new(0),
        }
    }
}

impl LogBuffer {
    /// The last line shown, for resuming after a reconnect.
    pub fn cursor(&self) -> Option<LogCursor> {
        self.cursor.get_untracked()
    }

    /// Adds a batch: a new epoch starts over, lines already shown are skipped.
    pub fn push(&self, batch: LogLines) {
        let cursor = self.cursor.get_untracked();
        let same_epoch = cursor.is_some_and(|cursor| cursor.epoch == batch.epoch);
        let shown = cursor.filter(|_| same_epoch).map_or(0, |cursor| cursor.seq);
        let newest = batch
            .lines
            .iter()
            .map(|line| line.seq)
            .max()
            .unwrap_or(shown)
            .max(shown);
        self.lines.update(|lines| {
            if !same_epoch {
                lines.clear();
            }
            let epoch = batch.epoch;
            lines.extend(
                batch
                    .lines
                    .into_iter()
                    .filter(|line| line.seq > shown)
                    .map(|line| (epoch, line)),
            );
            let excess = lines.len().saturating_sub(MAX_LINES);
            lines.drain(..excess);
        });
        if batch.skipped > 0 {
            self.skipped.update(|skipped| *skipped += batch.skipped);
        }
        self.cursor.set(Some(LogCursor {
            epoch: batch.epoch,
            seq: newest,
        }));
    }
}

#[component]
pub fn LogPanel(buffer: LogBuffer) -> impl IntoView {
    let panel = NodeRef::<Div>::new();
    let following = RwSignal::new(true);

    // After new lines render, keep the bottom in view while following. The frame may come
    // after the person left the page, the panel's values gone with it.
    Effect::new(move |_| {
        buffer.lines.track();
        if following.get_untracked() {
            request_animation_frame(move || {
                if let Some(Some(panel)) = panel.try_get_untracked() {
                    panel.set_scroll_top(panel.scroll_height());
                }
            });
        }
    });
    let on_scroll = move |_| {
        if let Some(panel) = panel.get_untracked() {
            let at_bottom =
                panel.scroll_top() + panel.client_height() >= panel.scroll_height() - 24;
            following.set(at_bottom);
        }
    };
    let follow = move |_| {
        following.set(true);
        if let Some(panel) = panel.get_untracked() {
            panel.set_scroll_top(panel.scroll_height());
        }
    };

    view! {
        <div class="log-head">
            <h2>"Container logs"</h2>
            <span class="muted">
                {move || match buffer.skipped.get() {
                    0 => String::new(),
                    skipped => format!("{skipped} lines skipped (the link was too slow)"),
                }}
            </span>
            <Show when=move || !following.get()>
                <button class="btn btn-quiet" on:click=follow>
                    "Paused — follow new lines"
                </button>
            </Show>
        </div>
        <div class="log" node_ref=panel on:scroll=on_scroll aria-live="off" data-testid="log-panel">
            <Show when=move || buffer.lines.with(VecDeque::is_empty)>
                <p class="muted">"No log lines yet."</p>
            </Show>
            <For each=move || buffer.lines.get() key=|(epoch, line)| (*epoch, line.seq) let:entry>
                <LogRow line=entry.1 />
            </For>
        </div>
    }
}

#[component]
fn LogRow(line: LogLine) -> impl IntoView {
    let service_class = format!("service service-{}", colour_of(line.service.as_str()));
    view! {
        <div class="line" class:stderr=line.stderr>
            <span class=service_class>{line.service.to_string()}</span>
            <Ansi text=line.text />
        </div>
    }
}

/// A line with its ANSI colours rendered as styled spans (other escapes are dropped).
#[component]
pub fn Ansi(text: String) -> impl IntoView {
    shared::ansi::parse(&text)
        .into_iter()
        .map(|span| {
            let style = span.style.css();
            view! { <span style=style>{span.text}</span> }
        })
        .collect_view()
}

/// One of eight colours per service name, stable across reloads.
fn colour_of(service: &str) -> u32 {
    service.bytes().fold(7u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(byte.into())
    }) % 8
}
