//! Property tests of the two parsers in `shared` that read bytes from elsewhere: the protocol
//! decoder (frames from a peer) and the ANSI parser (container log lines).
//!
//! They state the same invariants as the fuzz targets in `fuzz/` (`protocol_decoder`,
//! `ansi_parser`), with few enough cases to run in every `cargo test`; the fuzz targets search
//! much longer (`scripts/fuzz.sh`).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shared::ansi::{parse, Color, Span, Style};
use shared::protocol::{
    DeployStep, Heartbeat, Hello, Inspect, Inspected, JobEvent, JobUpdate, Joined, LogBatch,
    LogMessage, LogStream, Rejected, StartLogs, StopLogs, Welcome,
};
use shared::{
    AgentId, AgentToServer, DeployPayload, EnvKey, JobId, ProjectId, ProjectName, Secret,
    SecretScope, SecretValue, ServerToAgent, ServiceName,
};
use std::fmt::Debug;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The protocol decoder
// ---------------------------------------------------------------------------------------------

fn job_id() -> impl Strategy<Value = JobId> {
    any::<u128>().prop_map(|n| JobId(Uuid::from_u128(n)))
}

fn project_id() -> impl Strategy<Value = ProjectId> {
    any::<u128>().prop_map(|n| ProjectId(Uuid::from_u128(n)))
}

fn agent_id() -> impl Strategy<Value = AgentId> {
    any::<u128>().prop_map(|n| AgentId(Uuid::from_u128(n)))
}

/// Any text at all: controls, quotes, backslashes, astral characters.
fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn service() -> impl Strategy<Value = ServiceName> {
    "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}".prop_map(|name| ServiceName::parse(name).unwrap())
}

fn project() -> impl Strategy<Value = ProjectName> {
    "[a-z0-9][a-z0-9_-]{0,20}".prop_map(|name| ProjectName::parse(name).unwrap())
}

fn env_key() -> impl Strategy<Value = EnvKey> {
    "[A-Za-z_][A-Za-z0-9_]{0,20}".prop_map(|key| EnvKey::parse(key).unwrap())
}

fn secret() -> impl Strategy<Value = Secret> {
    let scope = prop_oneof![
        Just(SecretScope::Global),
        service().prop_map(SecretScope::Service)
    ];
    (env_key(), text(), scope).prop_map(|(key, value, scope)| Secret {
        key,
        value: SecretValue::new(value),
        scope,
    })
}

fn step() -> impl Strategy<Value = DeployStep> {
    prop_oneof![
        Just(DeployStep::Parse),
        Just(DeployStep::Render),
        Just(DeployStep::Up),
        Just(DeployStep::Health),
        // `From` turns a known name into its variant, as decoding does.
        text().prop_map(DeployStep::from),
    ]
}

fn server_to_agent() -> impl Strategy<Value = ServerToAgent> {
    let welcome = (agent_id(), any::<u64>(), any::<u64>()).prop_map(|(agent_id, h, r)| {
        ServerToAgent::Welcome(Welcome {
            agent_id,
            heartbeat_interval_secs: h,
            reconnect_window_secs: r,
        })
    });
    let deploy = (
        job_id(),
        project(),
        text(),
        option::of(text()),
        vec(secret(), 0..4),
    )
        .prop_map(|(job_id, project, directory, compose_file, secrets)| {
            ServerToAgent::Deploy(DeployPayload {
                job_id,
                project,
                directory,
                compose_file,
                secrets,
                project_id: None,
                source: None,
                pinned_images: Vec::new(),
                pull_policy: Default::default(),
                registry_credentials: Vec::new(),
                target: Default::default(),
                secrets_as: Default::default(),
            })
        });
    let start_logs = (
        job_id(),
        project(),
        text(),
        option::of(text()),
        option::of(service()),
        any::<u32>(),
        vec(text().prop_map(SecretValue::new), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(stream_id, project, directory, compose_file, service, tail, redact, swarm)| {
                ServerToAgent::StartLogs(StartLogs {
                    stream_id,
                    project,
                    directory,
                    compose_file,
                    service,
                    tail,
                    redact,
                    project_id: None,
                    target: if swarm {
                        shared::target::DeployTarget::Swarm
                    } else {
                        shared::target::DeployTarget::Compose
                    },
                })
            },
        );
    let inspect = (
        job_id(),
        text(),
        option::of(text()),
        option::of(project_id()),
    )
        .prop_map(|(request_id, directory, compose_file, project_id)| {
            ServerToAgent::Inspect(Inspect {
                request_id,
                directory,
                compose_file,
                project_id,
            })
        });
    let joined = (agent_id(), text(), text()).prop_map(|(agent_id, name, token)| {
        ServerToAgent::Joined(Joined {
            agent_id,
            name,
            token,
        })
    });
    prop_oneof![
        welcome,
        text().prop_map(|reason| ServerToAgent::Rejected(Rejected { reason })),
        any::<u64>().prop_map(|seq| ServerToAgent::HeartbeatAck(Heartbeat { seq })),
        deploy,
        start_logs,
        job_id().prop_map(|stream_id| ServerToAgent::StopLogs(StopLogs { stream_id })),
        inspect,
        joined,
    ]
}

fn agent_to_server() -> impl Strategy<Value = AgentToServer> {
    let hello = (
        any::<u32>(),
        (text(), text(), text(), text()),
        option::of(text()),
        option::of(text()),
    )
        .prop_map(
            |(protocol_version, (agent_version, hostname, os, arch), docker, compose)| {
                AgentToServer::Hello(Hello {
                    protocol_version,
                    agent_version,
                    hostname,
                    os,
                    arch,
                    docker_version: docker,
                    compose_version: compose,
                })
            },
        );
    let event = prop_oneof![
        Just(JobEvent::Received),
        step().prop_map(|name| JobEvent::Step { name }),
        text().prop_map(|line| JobEvent::Output { line }),
        (any::<bool>(), text()).prop_map(|(success, message)| JobEvent::Finished {
            success,
            message,
            images: Vec::new(),
            checkout: None,
        }),
    ];
    let job_update = (job_id(), event)
        .prop_map(|(job_id, event)| AgentToServer::JobUpdate(JobUpdate { job_id, event }));
    let message = (
        project(),
        service(),
        prop_oneof![Just(LogStream::Stdout), Just(LogStream::Stderr)],
        option::of(text()),
        text(),
    )
        .prop_map(|(project, service, stream, timestamp, line)| LogMessage {
            project,
            service,
            stream,
            timestamp,
            line,
        });
    let log =
        (job_id(), vec(message, 0..4), any::<u64>()).prop_map(|(stream_id, messages, skipped)| {
            AgentToServer::Log(LogBatch {
                stream_id,
                messages,
                skipped,
            })
        });
    let result = prop_oneof![vec(service(), 0..4).prop_map(Ok), text().prop_map(Err)];
    let inspected = (job_id(), result).prop_map(|(request_id, result)| {
        AgentToServer::Inspected(Inspected { request_id, result })
    });
    prop_oneof![
        hello,
        any::<u64>().prop_map(|seq| AgentToServer::Heartbeat(Heartbeat { seq })),
        job_update,
        log,
        inspected,
    ]
}

/// If `bytes` decode as a `T`, the value encodes, decodes to itself, and encodes to the same
/// bytes again. Returns whether they decoded.
fn decodes_to_one_meaning<T>(bytes: &[u8]) -> Result<bool, TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(bytes) else {
        return Ok(false);
    };
    let encoded = serde_json::to_vec(&value).unwrap();
    let decoded: T = serde_json::from_slice(&encoded).map_err(|error| {
        TestCaseError::fail(format!(
            "re-encoded frame does not decode: {error}: {}",
            String::from_utf8_lossy(&encoded)
        ))
    })?;
    prop_assert_eq!(&decoded, &value);
    prop_assert_eq!(serde_json::to_vec(&decoded).unwrap(), encoded);
    Ok(true)
}

/// One edit a damaged or hostile frame could have.
#[derive(Clone, Debug)]
enum Edit {
    Delete(Index),
    Replace(Index, u8),
    Insert(Index, Vec<u8>),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes that keep JSON close to valid, so many edited frames still decode.
    let byte = prop_oneof![
        prop::sample::select(b"{}[]\":,0123456789-eE.truefalsn \\u".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), byte.clone()).prop_map(|(at, b)| Edit::Replace(at, b)),
        (any::<Index>(), vec(byte, 1..8)).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match edit {
            Edit::Delete(at) => {
                bytes.remove(at.index(bytes.len()));
            }
            Edit::Replace(at, byte) => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            Edit::Insert(at, inserted) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Edit::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_the_server_sends_decodes_to_what_was_sent(message in server_to_agent()) {
        let encoded = serde_json::to_vec(&message).unwrap();
        let decoded: ServerToAgent = serde_json::from_slice(&encoded).unwrap();
        prop_assert_eq!(&decoded, &message);
        prop_assert!(decodes_to_one_meaning::<ServerToAgent>(&encoded)?);
    }

    #[test]
    fn every_frame_the_agent_sends_decodes_to_what_was_sent(message in agent_to_server()) {
        let encoded = serde_json::to_vec(&message).unwrap();
        let decoded: AgentToServer = serde_json::from_slice(&encoded).unwrap();
        prop_assert_eq!(&decoded, &message);
        prop_assert!(decodes_to_one_meaning::<AgentToServer>(&encoded)?);
    }

    #[test]
    fn a_damaged_frame_is_refused_or_means_one_thing_on_both_sides(
        server in server_to_agent(),
        agent in agent_to_server(),
        edits in vec(edit(), 1..4),
    ) {
        for frame in [serde_json::to_vec(&server).unwrap(), serde_json::to_vec(&agent).unwrap()] {
            let damaged = apply(frame, &edits);
            decodes_to_one_meaning::<ServerToAgent>(&damaged)?;
            decodes_to_one_meaning::<AgentToServer>(&damaged)?;
        }
    }

    #[test]
    fn any_bytes_are_decoded_or_refused_without_a_panic(bytes in vec(any::<u8>(), 0..256)) {
        decodes_to_one_meaning::<ServerToAgent>(&bytes)?;
        decodes_to_one_meaning::<AgentToServer>(&bytes)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The ANSI parser
// ---------------------------------------------------------------------------------------------

/// Log lines made of escape-sequence pieces, controls and ordinary characters.
fn log_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b(", "[", "]", ";", ":", "?", ">", "38", "48",
            "5", "2", "0", "1", "31", "256", "999999", "m", "K", "H", "\x07", "\x1b\\", "\\", "\t",
            "\r", "\n", "\x08", "\x7f", "\u{85}", "\u{9b}", "é", "世", "🚀", " ",
        ])
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// The invariants every parse keeps, whatever the line.
fn check_spans(line: &str, spans: &[Span]) -> Result<(), TestCaseError> {
    let mut input = line.chars();
    for (i, span) in spans.iter().enumerate() {
        prop_assert!(!span.text.is_empty(), "an empty span");
        if i > 0 {
            prop_assert_ne!(spans[i - 1].style, span.style, "unmerged neighbours");
        }
        for shown in span.text.chars() {
            prop_assert!(
                shown == '\t' || !shown.is_control(),
                "{:?} reached the page",
                shown
            );
            prop_assert!(
                input.any(|seen| seen == shown),
                "{:?} was not in the line at that place",
                shown
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_parser_shows_only_text_that_was_in_the_line_and_no_escape_bytes(line in log_line()) {
        let spans = parse(&line);
        check_spans(&line, &spans)?;
        // The same holds for every prefix: a line cut anywhere (a truncated sequence) is safe.
        for end in (0..line.len()).filter(|&end| line.is_char_boundary(end)) {
            check_spans(&line[..end], &parse(&line[..end]))?;
        }
    }

    #[test]
    fn text_without_controls_comes_back_whole_and_plain(line in "[^\\p{Cc}]{0,60}") {
        let spans = parse(&line);
        check_spans(&line, &spans)?;
        if line.is_empty() {
            prop_assert!(spans.is_empty());
        } else {
            prop_assert_eq!(spans.len(), 1);
            prop_assert_eq!(&spans[0].text, &line);
            prop_assert_eq!(spans[0].style, Style::default());
        }
    }

    #[test]
    fn a_colour_sequence_colours_the_text_after_it_and_a_reset_ends_it(
        foreground in 30u8..=37,
        background in 40u8..=47,
        bold in any::<bool>(),
        coloured in "[^\\p{Cc}]{1,20}",
        plain in "[^\\p{Cc}]{1,20}",
    ) {
        let params = if bold {
            format!("{foreground};{background};1")
        } else {
            format!("{foreground};{background}")
        };
        let line = format!("\x1b[{params}m{coloured}\x1b[0m{plain}");
        let expected = Style {
            fg: Some(Color::Indexed(foreground - 30)),
            bg: Some(Color::Indexed(background - 40)),
            bold,
            ..Style::default()
        };
        let spans = parse(&line);
        prop_assert_eq!(
            spans,
            vec![
                Span { text: coloured, style: expected },
                Span { text: plain, style: Style::default() },
            ]
        );
    }
}
