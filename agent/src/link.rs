//! The agent's link to the server: one outbound WebSocket, kept up forever.
//!
//! The agent dials `/api/v1/stream` with its token in the `Authorization` header, says
//! [`Hello`], waits for `Welcome`, then heartbeats. Any failure (refused connection, 401, lost
//! socket, silent server) ends the attempt and the agent retries after a [`Backoff`] delay, so
//! a network blip or a server restart heals by itself. An outage is logged once when it starts
//! and once when it ends; the attempts in between log at debug level. Only `shutdown` makes
//! [`run`] return. Every welcome is passed on to the executor ([`Executor::connected`]): the
//! server then gets a full list of container states, whatever it missed while the link was down.
//!
//! Every frame passes [`wire`] on its way: out, it must fit the server's frame limit (a frame
//! over it would end the connection, again after every reconnect); in, the numbers the server
//! chose are clamped before the link or the executor uses them.

use crate::backoff::Backoff;
use crate::jobs::Executor;
use crate::wire;
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{Heartbeat, Hello, Welcome, MAX_FRAME_TO_AGENT_BYTES};
use shared::{AgentToServer, ServerToAgent};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

/// How long to wait for the TCP/TLS/WebSocket handshake, and then for the welcome.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The agent's own token: printed as `***`, wiped from memory when dropped. (The copies the
/// WebSocket library makes of the `Authorization` header, and of the frame that brought the
/// token at join time, are not the agent's to wipe.)
#[derive(Clone)]
pub struct AgentToken(Zeroizing<String>);

impl AgentToken {
    /// The token itself, for the `Authorization` header and the token file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Takes the string over without copying it.
impl From<String> for AgentToken {
    fn from(token: String) -> Self {
        Self(Zeroizing::new(token))
    }
}

impl From<&str> for AgentToken {
    fn from(token: &str) -> Self {
        Self(Zeroizing::new(token.to_owned()))
    }
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    /// `ws://…/api/v1/stream` or `wss://…`.
    pub stream_url: String,
    pub token: AgentToken,
    pub hello: Hello,
    pub backoff: Backoff,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("stream_url", &self.stream_url)
            .field("token", &"***")
            .finish()
    }
}

/// Whether the agent may reach a server on another host over plain `http`/`ws`, where its
/// token and the secret values it deploys could be read on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainHttp {
    /// Only to this host (127.0.0.0/8, `::1`, `localhost`); elsewhere `https`/`wss` only.
    LoopbackOnly,
    /// Anywhere: `--allow-insecure-http` or `STAGELY_ALLOW_INSECURE_HTTP=1`, for a network the
    /// operator trusts.
    Allowed,
}

/// The stream URL for a server given as `http(s)://host[:port][/prefix]` or `ws(s)://…`;
/// plain `http`/`ws` to another host only when `plain_http` allows it.
pub fn stream_url(server: &str, plain_http: PlainHttp) -> Result<String, String> {
    let server = server.trim().trim_end_matches('/');
    let rest = |scheme: &str| server.strip_prefix(scheme).filter(|rest| !rest.is_empty());
    let base = if let Some(rest) = rest("https://").or_else(|| rest("wss://")) {
        format!("wss://{rest}")
    } else if let Some(rest) = rest("http://").or_else(|| rest("ws://")) {
        format!("ws://{rest}")
    } else {
        return Err(format!(
            "the server URL {server:?} must start with http://, https://, ws:// or wss://"
        ));
    };
    if plain_http == PlainHttp::LoopbackOnly
        && shared::transport::is_cleartext_to_another_host(&base)
    {
        return Err(format!(
            "the server URL {server:?} is plain http to another host: the agent's token and the \
             secrets it deploys would cross the network in the clear. Use the server's https:// \
             URL (a TLS-terminating proxy such as Caddy or nginx in front of it), or, on a \
             network you trust, set {}=1 (or pass --allow-insecure-http)",
            shared::transport::ALLOW_INSECURE_HTTP
        ));
    }
    if base.ends_with("/api/v1/stream") {
        Ok(base)
    } else {
        Ok(format!("{base}/api/v1/stream"))
    }
}

/// How one connection ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// The link's side of the job executor: where server messages go and where events come from.
pub struct Jobs {
    pub executor: Executor,
    pub events: mpsc::Receiver<AgentToServer>,
}

/// Keeps the link up until `shutdown` resolves; then closes the socket with a close frame.
pub async fn run(
    mut config: LinkConfig,
    mut jobs: Jobs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // `Some(since)` while the server is unreachable, for the one recovery line.
    let mut outage: Option<(Instant, String)> = None;
    let mut ever_connected = false;
    loop {
        let attempt_started = Instant::now();
        let ended = connect_and_serve(
            &mut config,
            &mut jobs,
            &mut outage,
            &mut ever_connected,
            stop.clone(),
        )
        .await;
        // Log streams were asked for by that connection; a new one asks again if it wants.
        jobs.executor.stop_all_logs();
        jobs.executor.disconnected();
        let reason = match ended {
            Ended::Shutdown => {
                tracing::info!("agent stopped");
                return;
            }
            Ended::Lost(reason) => reason,
        };
        config.backoff.connection_ended(attempt_started.elapsed());
        if outage.is_none() {
            if ever_connected {
                tracing::warn!(%reason, "lost the link to the server; reconnecting with backoff");
            } else {
                tracing::warn!(%reason, "cannot connect to the server; retrying with backoff");
            }
            outage = Some((Instant::now(), reason));
        } else {
            tracing::debug!(%reason, attempt = config.backoff.attempts(), "server still unreachable");
        }
        let delay = config.backoff.next_delay();
        tokio::select! {
            _ = stopped(&mut stop) => {
                tracing::info!("agent stopped");
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves once shutdown was requested.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        // The signal task is gone without asking to stop: never stop.
        std::future::pending::<()>().await;
    }
}

/// One connection: handshake, then serve until it breaks. Logs the recovery of an outage.
async fn connect_and_serve(
    config: &mut LinkConfig,
    jobs: &mut Jobs,
    outage: &mut Option<(Instant, String)>,
    ever_connected: &mut bool,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let (mut socket, welcome) = tokio::select! {
        _ = stopped(&mut stop) => return Ended::Shutdown,
        handshake = handshake(&*config) => match handshake {
            Ok(connected) => connected,
            Err(reason) => return Ended::Lost(reason),
        },
    };
    match outage.take() {
        Some((since, reason)) => tracing::info!(
            agent_id = %welcome.agent_id,
            down_for_secs = since.elapsed().as_secs(),
            previous_error = %reason,
            "reconnected to the server"
        ),
        None if !*ever_connected => {
            tracing::info!(agent_id = %welcome.agent_id, url = %config.stream_url, "connected to the server")
        }
        None => tracing::info!(agent_id = %welcome.agent_id, "reconnected to the server"),
    }
    *ever_connected = true;
    // The server holds container states from before the link broke: it gets a full list.
    jobs.executor.connected();
    config
        .backoff
        .set_window(Duration::from_secs(welcome.reconnect_window_secs));
    serve(&mut socket, &welcome, jobs, stop).await
}

/// Opens a WebSocket to `url`, authenticated with `Authorization: Bearer <token>`.
pub(crate) async fn open(url: &str, token: &str) -> Result<Socket, String> {
    let mut request = url
        .into_client_request()
        .map_err(|error| format!("invalid server URL: {error}"))?;
    // Sized up front: a buffer that grew would leave a copy behind, unwiped.
    let mut header = Zeroizing::new(String::with_capacity("Bearer ".len() + token.len()));
    header.push_str("Bearer ");
    header.push_str(token);
    let mut bearer: HeaderValue = header
        .parse()
        .map_err(|_| "the token contains invalid characters".to_string())?;
    bearer.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, bearer);

    let connecting =
        tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), false);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await;
    match connected {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(error)) => Err(describe_connect_error(&error)),
        Err(_) => Err("connection attempt timed out".into()),
    }
}

/// The socket reads frames and messages up to the size the server builds them within, and no
/// larger, whatever the library's defaults are.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_TO_AGENT_BYTES))
        .max_frame_size(Some(MAX_FRAME_TO_AGENT_BYTES))
}

/// Connects, authenticates with the token and exchanges hello and welcome.
async fn handshake(config: &LinkConfig) -> Result<(Socket, Welcome), String> {
    let mut socket = open(&config.stream_url, config.token.expose()).await?;
    send(&mut socket, &AgentToServer::Hello(config.hello.clone())).await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, next_message(&mut socket)).await {
        Ok(Ok(ServerToAgent::Welcome(welcome))) => Ok((socket, welcome)),
        Ok(Ok(ServerToAgent::Rejected(rejected))) => {
            Err(format!("rejected by the server: {}", rejected.reason))
        }
        Ok(Ok(other)) => Err(format!("expected a welcome, got {other:?}")),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("no welcome from the server".into()),
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Heartbeats and handles server messages until the link breaks.
async fn serve(
    socket: &mut Socket,
    welcome: &Welcome,
    jobs: &mut Jobs,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let (interval, silence_limit) = timers(welcome);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut seq = 0u64;
    let mut deadline = Instant::now() + silence_limit;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                seq += 1;
                if let Err(error) = send(socket, &AgentToServer::Heartbeat(Heartbeat { seq })).await {
                    return Ended::Lost(error);
                }
            }
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        return Ended::Lost(format!("the server closed the connection: {reason}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Ended::Lost(format!("connection error: {error}")),
                    None => return Ended::Lost("connection closed".into()),
                };
                deadline = Instant::now() + silence_limit;
                receive(&jobs.executor, &text);
            }
            Some(event) = jobs.events.recv() => {
                let text = match wire::encode(&event) {
                    Ok(text) => text,
                    Err(error) => {
                        // Sending it would end the connection, and it would be sent again after
                        // every reconnect: drop it instead. The budgets make this unreachable.
                        tracing::error!(%error, "not sending a frame the server would refuse");
                        continue;
                    }
                };
                if let Err(error) = send_text(socket, text).await {
                    // The event is lost with this connection; the job's result is re-sent
                    // when the server asks again for the same job id.
                    return Ended::Lost(error);
                }
            }
            _ = stopped(&mut stop) => {
                close(socket, "agent shutting down").await;
                return Ended::Shutdown;
            }
            _ = sleep_until(deadline) => {
                let _ = socket.close(None).await;
                return Ended::Lost(format!("no answer from the server for {} s", silence_limit.as_secs()));
            }
        }
    }
}

/// How often to heartbeat, and how long to wait for a silent server before giving up on it.
/// `welcome` came through [`wire::decode`], which clamped its numbers into a sane range.
fn timers(welcome: &Welcome) -> (Duration, Duration) {
    let interval = Duration::from_secs(welcome.heartbeat_interval_secs.max(1));
    (interval, interval * 3 + Duration::from_secs(5))
}

/// Closes the socket politely, waiting briefly for the server's answer.
async fn close(socket: &mut Socket, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(Some(frame))).await;
}

/// Decodes a frame from the server (its numbers clamped) and hands it to the executor.
pub(crate) fn receive(executor: &Executor, text: &str) {
    match wire::decode(text) {
        Ok(message) => executor.handle(message),
        Err(error) => tracing::warn!(%error, "skipping a message this agent does not understand"),
    }
}

pub(crate) async fn send(socket: &mut Socket, message: &AgentToServer) -> Result<(), String> {
    send_text(socket, wire::encode(message)?).await
}

async fn send_text(socket: &mut Socket, text: String) -> Result<(), String> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|error| format!("sending to the server: {error}"))
}

pub(crate) async fn next_message(socket: &mut Socket) -> Result<ServerToAgent, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return wire::decode(&text)
                    .map_err(|error| format!("malformed message from the server: {error}"))
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(format!("the server closed the connection: {reason}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("connection error: {error}")),
            None => return Err("connection closed".into()),
        }
    }
}

fn describe_connect_error(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) if response.status() == 401 => {
            let body = response.body().as_deref().unwrap_or_default();
            // The server explains itself in `{"error": {"message": …}}`.
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|json| json["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            format!("the server refused the token (401): {message}")
        }
        Error::Http(response) => format!("the server answered HTTP {}", response.status()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::DeployOptions;
    use crate::system::Compose;
    use std::path::Path;
    use tokio::net::TcpListener;

    /// An executor that can run nothing: its only allowed root is an empty directory.
    fn idle_executor(dir: &Path) -> (Executor, mpsc::Receiver<AgentToServer>) {
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![dir.join("projects")],
            private_dir: dir.join("private"),
            up_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            settle: Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        Executor::new(options, None)
    }

    fn hello() -> Hello {
        Hello {
            protocol_version: shared::PROTOCOL_VERSION,
            agent_version: "test".into(),
            hostname: "test-host".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            docker_version: None,
            compose_version: None,
        }
    }

    /// The next protocol frame the agent sends, skipping heartbeats.
    async fn next_frame(
        socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    ) -> Option<AgentToServer> {
        loop {
            match socket.next().await? {
                Ok(Message::Text(text)) => match serde_json::from_str(&text).ok()? {
                    AgentToServer::Heartbeat(_) => continue,
                    frame => return Some(frame),
                },
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    #[tokio::test]
    async fn an_agent_welcomed_with_absurd_intervals_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (executor, events) = idle_executor(dir.path());
        let config = LinkConfig {
            stream_url: format!("ws://{}/api/v1/stream", listener.local_addr().unwrap()),
            token: "stg_test".into(),
            hello: hello(),
            backoff: Backoff::default(),
        };
        let agent = tokio::spawn(run(
            config,
            Jobs { executor, events },
            std::future::pending(),
        ));

        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = tokio_tungstenite::accept_async(tcp).await.unwrap();
        assert!(matches!(
            next_frame(&mut server).await,
            Some(AgentToServer::Hello(_))
        ));
        let welcome = serde_json::json!({"type": "welcome", "data": {
            "agent_id": uuid::Uuid::new_v4(),
            "heartbeat_interval_secs": u64::MAX,
            "reconnect_window_secs": u64::MAX,
        }});
        server
            .send(Message::text(welcome.to_string()))
            .await
            .unwrap();
        let request_id = uuid::Uuid::new_v4();
        let inspect = serde_json::json!({"type": "inspect", "data": {
            "request_id": request_id, "directory": "/nowhere",
        }});
        server
            .send(Message::text(inspect.to_string()))
            .await
            .unwrap();

        let answer = tokio::time::timeout(Duration::from_secs(10), next_frame(&mut server))
            .await
            .expect("no answer within 10 s");
        let Some(AgentToServer::Inspected(answer)) = answer else {
            panic!("the agent hung up instead of answering: {answer:?}");
        };
        assert_eq!(answer.request_id.0, request_id);
        assert!(!agent.is_finished(), "the link ended");
        agent.abort();
    }

    #[tokio::test]
    async fn every_welcome_asks_for_a_full_list_of_container_states() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (executor, events) = idle_executor(dir.path());
        let refresh = executor.refresh().clone();
        let config = LinkConfig {
            stream_url: format!("ws://{}/api/v1/stream", listener.local_addr().unwrap()),
            token: "stg_test".into(),
            hello: hello(),
            backoff: Backoff::new(
                Duration::from_millis(1),
                Duration::from_millis(10),
                Duration::from_secs(60),
            ),
        };
        let agent = tokio::spawn(run(
            config,
            Jobs { executor, events },
            std::future::pending(),
        ));
        // No state watcher runs here: the marks stay for the test to take.
        assert!(!refresh.take().full, "nothing before the first welcome");

        for connection in ["first", "after a reconnect"] {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut server = tokio_tungstenite::accept_async(tcp).await.unwrap();
            assert!(matches!(
                next_frame(&mut server).await,
                Some(AgentToServer::Hello(_))
            ));
            let welcome = serde_json::json!({"type": "welcome", "data": {
                "agent_id": uuid::Uuid::new_v4(), "heartbeat_interval_secs": 30,
            }});
            server
                .send(Message::text(welcome.to_string()))
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !refresh.take().full {
                assert!(
                    Instant::now() < deadline,
                    "{connection}: no full list asked for"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The server goes away; the agent comes back and is welcomed again.
            drop(server);
        }
        agent.abort();
    }

    #[test]
    fn server_urls_become_stream_urls() {
        let cases = [
            ("http://127.0.0.1:3000", "ws://127.0.0.1:3000/api/v1/stream"),
            (
                "https://deploy.example.com/",
                "wss://deploy.example.com/api/v1/stream",
            ),
            (
                "https://example.com/stagely",
                "wss://example.com/stagely/api/v1/stream",
            ),
            (
                "ws://localhost:1/api/v1/stream",
                "ws://localhost:1/api/v1/stream",
            ),
        ];
        for (input, expected) in cases {
            let url = stream_url(input, PlainHttp::LoopbackOnly);
            assert_eq!(url.unwrap(), expected, "{input}");
        }
        assert!(stream_url("example.com", PlainHttp::Allowed)
            .unwrap_err()
            .contains("must start with"));
        assert!(stream_url("http://", PlainHttp::Allowed).is_err());
    }

    #[test]
    fn plain_http_to_another_host_is_refused_unless_allowed() {
        for server in [
            "http://deploy.example.com",
            "ws://10.0.0.5:3000/api/v1/stream",
            "http://127.0.0.1.evil.example",
        ] {
            let error = stream_url(server, PlainHttp::LoopbackOnly).unwrap_err();
            assert!(error.contains("in the clear"), "{server}: {error}");
            assert!(
                error.contains("STAGELY_ALLOW_INSECURE_HTTP=1"),
                "{server}: {error}"
            );
            assert!(
                stream_url(server, PlainHttp::Allowed).is_ok(),
                "{server} with the opt-in"
            );
        }
        assert_eq!(
            stream_url("http://[::1]:3000", PlainHttp::LoopbackOnly).unwrap(),
            "ws://[::1]:3000/api/v1/stream"
        );
    }

    #[test]
    fn the_agent_token_prints_as_stars_alone_and_inside_the_link_config() {
        let token = AgentToken::from("stg_secret-token");
        assert_eq!(format!("{token:?}"), "***");
        let config = LinkConfig {
            stream_url: "ws://127.0.0.1:1/api/v1/stream".into(),
            token,
            hello: hello(),
            backoff: Backoff::default(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("stg_secret"), "{printed}");
        assert_eq!(config.token.expose(), "stg_secret-token");
    }

    #[test]
    fn a_server_asking_for_hundreds_of_log_streams_gets_at_most_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (executor, _events) = idle_executor(dir.path());
            // On this one thread no stream task runs, so none ends, until the test yields.
            for _ in 0..3 * crate::jobs::MAX_LOG_STREAMS {
                let frame = serde_json::json!({"type": "start_logs", "data": {
                    "stream_id": uuid::Uuid::new_v4(), "project": "shop",
                    "directory": "/nowhere", "tail": 10,
                }});
                receive(&executor, &frame.to_string());
            }
            assert_eq!(executor.log_streams(), crate::jobs::MAX_LOG_STREAMS);
        });
    }

    /// Frames a server could send, well-formed or not, for the property test below.
    mod frames {
        use proptest::prelude::*;
        use serde_json::{json, Value};
        use uuid::Uuid;

        fn number() -> BoxedStrategy<u64> {
            prop_oneof![
                Just(0),
                Just(1),
                Just(u64::MAX),
                Just(u64::MAX - 1),
                Just(u64::from(u32::MAX)),
                any::<u64>(),
            ]
            .boxed()
        }

        fn text() -> BoxedStrategy<String> {
            prop_oneof![
                ".{0,12}",
                Just(String::new()),
                Just("/".into()),
                Just("../../etc".into()),
                (1usize..200_000).prop_map(|length| "\"".repeat(length)),
            ]
            .boxed()
        }

        /// A frame of each kind the agent knows, with extreme numbers and odd strings.
        pub fn valid() -> BoxedStrategy<Value> {
            prop_oneof![
                (number(), number()).prop_map(|(heartbeat, window)| json!({"type": "welcome",
                    "data": {"agent_id": Uuid::new_v4(), "heartbeat_interval_secs": heartbeat,
                             "reconnect_window_secs": window}})),
                (number(), text(), proptest::option::of(text())).prop_map(
                    |(tail, directory, file)| json!({"type": "start_logs", "data": {
                        "stream_id": Uuid::new_v4(), "project": "shop", "directory": directory,
                        "compose_file": file, "tail": tail.min(u64::from(u32::MAX)),
                        "redact": ["hunter22"]}})
                ),
                (text(), proptest::option::of(text())).prop_map(|(directory, file)| {
                    json!({"type": "inspect", "data": {"request_id": Uuid::new_v4(),
                        "directory": directory, "compose_file": file}})
                }),
                (text(), proptest::option::of(text())).prop_map(|(directory, file)| {
                    json!({"type": "deploy", "data": {"job_id": Uuid::new_v4(),
                        "project": "shop", "directory": directory, "compose_file": file,
                        "secrets": [{"key": "K", "value": "hunter22", "scope": "global"}]}})
                }),
                number().prop_map(|seq| json!({"type": "heartbeat_ack", "data": {"seq": seq}})),
                Just(json!({"type": "stop_logs", "data": {"stream_id": Uuid::new_v4()}})),
                text().prop_map(|reason| json!({"type": "rejected", "data": {"reason": reason}})),
                Just(
                    json!({"type": "joined", "data": {"agent_id": Uuid::new_v4(),
                    "name": "n", "token": "stg_x"}})
                ),
            ]
            .boxed()
        }

        /// Any JSON value, with the protocol's own names among its keys.
        fn any_json() -> BoxedStrategy<Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                number().prop_map(Value::from),
                any::<f64>().prop_map(|x| json!(x)),
                text().prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                let key = prop_oneof![
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("heartbeat_interval_secs".to_string()),
                    Just("tail".to_string()),
                    Just("directory".to_string()),
                    "[a-z_]{0,10}",
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(key, inner, 0..6)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
            .boxed()
        }

        /// A valid frame with one field of its data replaced by an extreme value.
        fn mutated() -> BoxedStrategy<Value> {
            let extreme = prop_oneof![
                Just(json!(-1)),
                Just(json!(i64::MIN)),
                Just(json!(u64::MAX)),
                Just(json!(1e308)),
                Just(json!(0.5)),
                Just(Value::Null),
                Just(json!([])),
                Just(json!({})),
                Just(json!("x".repeat(100_000))),
                any_json(),
            ];
            (valid(), any::<prop::sample::Index>(), extreme)
                .prop_map(|(mut frame, at, value)| {
                    if let Some(data) = frame["data"].as_object_mut() {
                        let keys: Vec<String> = data.keys().cloned().collect();
                        data.insert(keys[at.index(keys.len())].clone(), value);
                    }
                    frame
                })
                .boxed()
        }

        /// The text of one frame: valid, mutated, random, with numbers JSON cannot hold in
        /// 64 bits, or cut short and garbled.
        pub fn text_frame() -> BoxedStrategy<String> {
            let tags = prop_oneof![
                Just("welcome"),
                Just("start_logs"),
                Just("deploy"),
                Just("inspect"),
                Just("nonsense"),
            ];
            let numbers = prop_oneof![
                Just("18446744073709551616"),
                Just("-1"),
                Just("1e400"),
                Just("0.5"),
                Just("NaN"),
            ];
            prop_oneof![
                valid().prop_map(|frame| frame.to_string()),
                mutated().prop_map(|frame| frame.to_string()),
                any_json().prop_map(|value| value.to_string()),
                (tags, any_json())
                    .prop_map(|(tag, data)| json!({"type": tag, "data": data}).to_string()),
                numbers.prop_map(|number| format!(
                    r#"{{"type":"welcome","data":{{"agent_id":"{}","heartbeat_interval_secs":{number}}}}}"#,
                    Uuid::new_v4()
                )),
                (valid(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                    |(frame, at, byte)| {
                        let mut bytes = frame.to_string().into_bytes();
                        let at = at.index(bytes.len());
                        if byte % 2 == 0 {
                            bytes.truncate(at);
                        } else {
                            bytes[at] = byte;
                        }
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                ),
            ]
            .boxed()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever the server sends, the agent does not panic, keeps every number it acts on
        /// in range, answers what it can within the frame limit, and bounds what it keeps.
        #[test]
        fn no_frame_from_the_server_makes_the_agent_panic_or_grow_without_bound(
            texts in proptest::collection::vec(frames::text_frame(), 1..8)
        ) {
            use shared::protocol::limits;
            let dir = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (executor, mut events) = idle_executor(dir.path());
                let mut deploys = std::collections::HashSet::new();
                for text in &texts {
                    if let Ok(message) = wire::decode(text) {
                        match &message {
                            ServerToAgent::Welcome(welcome) => {
                                let (interval, silence) = timers(welcome);
                                assert!(limits::HEARTBEAT_INTERVAL_SECS
                                    .contains(&welcome.heartbeat_interval_secs));
                                assert!(welcome.reconnect_window_secs <= limits::MAX_RECONNECT_WINDOW_SECS);
                                assert!(silence > interval);
                                let _ = Instant::now() + silence;
                                let mut backoff = Backoff::default();
                                backoff.set_window(Duration::from_secs(welcome.reconnect_window_secs));
                                assert!(backoff.next_delay() <= Duration::from_secs(60));
                            }
                            ServerToAgent::StartLogs(request) => {
                                assert!(request.tail <= limits::MAX_LOG_TAIL);
                            }
                            ServerToAgent::Deploy(job) => {
                                deploys.insert(job.job_id);
                            }
                            _ => {}
                        }
                    }
                    receive(&executor, text);
                }
                assert!(executor.log_streams() <= crate::jobs::MAX_LOG_STREAMS);
                // Every deploy ends (none can run: nothing is under the allowed root) and says
                // so; every frame the agent produced fits the server's limit.
                while !deploys.is_empty() {
                    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                        .await
                        .expect("a deploy never finished")
                        .expect("the event queue closed");
                    assert!(wire::encode(&event).is_ok());
                    if let AgentToServer::JobUpdate(shared::protocol::JobUpdate {
                        job_id,
                        event: shared::protocol::JobEvent::Finished { success, .. },
                    }) = event
                    {
                        assert!(!success);
                        deploys.remove(&job_id);
                    }
                }
                while let Ok(event) = events.try_recv() {
                    assert!(wire::encode(&event).is_ok());
                }
                executor.stop_all_logs();
            });
        }
    }
}
