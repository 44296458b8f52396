//! The accept loop: every TCP connection the server takes, and the limits that keep slow or
//! silent clients from holding it (README, "Limits").
//!
//! 1. A connection is accepted only while fewer than `max_connections` are open; beyond that it
//!    waits in the kernel's listen queue until one closes. The slot is held by the socket
//!    itself, so an upgraded WebSocket keeps its slot for as long as it lives.
//! 2. HTTP/1.1 is served by hyper with a timer: a request's headers must arrive whole within
//!    `header_timeout` of the server starting to wait for them (also between two requests of a
//!    kept-alive connection), however slowly they trickle in. A slowloris is cut off there.
//! 3. A connection that moves no byte for `idle_timeout` is asked to close (a request still
//!    being answered finishes first); one that moves none for a second `idle_timeout` is
//!    dropped, so a client that stops reading a response cannot hold it either.
//! 4. Once a request upgrades to a WebSocket, hyper hands the socket over and this loop lets go:
//!    the agent and browser sockets keep their own heartbeats and are never cut as idle.
//! 5. On shutdown, no more connections are taken and open ones close after their current
//!    request (axum's graceful shutdown, which this replaces).

use crate::config::LimitsConfig;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the connections
/// still answering a request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &LimitsConfig,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut warned_full = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "all connection slots are taken; new connections wait (STAGELY_MAX_CONNECTIONS)"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    // The semaphore is never closed, so acquiring only waits.
                    Ok(slot) = slots.clone().acquire_owned() => slot,
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        // A page is written in several pieces: with Nagle's algorithm on, the last one waits
        // for the browser's delayed ACK, 40 ms on every kept-alive request. Send each at once.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
        }
        tokio::spawn(connection(
            tcp,
            remote,
            slot,
            router.clone(),
            limits.clone(),
            closing_rx.clone(),
        ));
    }
    drop(listener);
    closing_tx.send_replace(true);
    drop(closing_rx);
    // Every connection task holds a receiver: this resolves when the last one has ended.
    closing_tx.closed().await;
}

/// Accept fails for the one connection (reset before it was taken) or for the process (out
/// of file descriptors); the second would fail again at once, so wait a little.
async fn on_accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it closes, upgrades, idles out or the server shuts down.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: Router,
    limits: LimitsConfig,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Metered {
        inner: tcp,
        activity: activity.clone(),
        _slot: slot,
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        // A Router is always ready, and a clone per request is how axum itself calls it.
        router.clone().call(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut conn = pin!(http.serve_connection(io, service).with_upgrades());
    let mut asked_to_close = false;
    loop {
        let idle_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|closing| *closing), if !asked_to_close => {
                conn.as_mut().graceful_shutdown();
                asked_to_close = true;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + limits.idle_timeout > Instant::now() {
                    continue; // bytes moved meanwhile
                }
                if asked_to_close {
                    tracing::debug!(%remote, "dropping a connection that stayed idle after being asked to close");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                asked_to_close = true;
                // Give it one more idle period to finish what it is answering.
                activity.touch();
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it was accepted.
struct Activity {
    accepted: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The TCP stream with its connection slot, noting when bytes move.
struct Metered {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// Released when the socket is dropped, also after an upgrade to a WebSocket.
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
