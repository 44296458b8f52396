//! Bounds on what crosses the link, in both directions.
//!
//! **Out.** The server ends the connection on a frame over [`MAX_FRAME_BYTES`], and an agent
//! that sends the same oversized result again after every reconnect never gets through. So
//! every frame is built within the budgets of [`shared::protocol::budget`], measured as
//! encoded JSON (a quote or a control character takes more room there than in the text): text
//! over its budget is [`cut`] at a character boundary and ends with a visible `… N bytes cut`.
//! [`encode`] checks the whole frame once more before it is sent.
//!
//! **In.** Numbers the server sends (intervals, windows, line counts) are clamped by
//! [`decode`] into [`shared::protocol::limits`] before anything uses them, so a bad value can
//! neither overflow a timer nor ask for unbounded work.

pub use shared::protocol::encoded_len;
use shared::protocol::{budget, limits, MAX_FRAME_BYTES};
use shared::{AgentToServer, ServerToAgent, ServiceName};

/// How many bytes `text` takes inside a JSON string (without its quotes), as `serde_json`
/// writes it: `"`, `\` and the short escapes take two, other control characters six.
pub fn json_len(text: &str) -> usize {
    text.bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// `text` as it is when it fits `budget` bytes of encoded JSON; otherwise as much of its start
/// as fits, cut at a character boundary, followed by `… N bytes cut` (N counts the bytes of
/// `text` left out). The result fits `budget` unless the budget is smaller than the marker.
pub fn cut(text: &str, budget: usize) -> String {
    if json_len(text) <= budget {
        return text.to_string();
    }
    // Room for the longest marker this text can need.
    let room = budget.saturating_sub(json_len(&marker(text.len())));
    let mut used = 0;
    let mut end = 0;
    for (index, character) in text.char_indices() {
        let mut buffer = [0; 4];
        let size = json_len(character.encode_utf8(&mut buffer));
        if used + size > room {
            break;
        }
        used += size;
        end = index + character.len_utf8();
    }
    format!("{}{}", &text[..end], marker(text.len() - end))
}

/// Like [`cut`], but keeps the end of `text`: for the last lines a failing service printed,
/// where the end says why it failed. The result starts with `… N bytes cut` and a newline.
pub fn cut_keeping_end(text: &str, budget: usize) -> String {
    if json_len(text) <= budget {
        return text.to_string();
    }
    // The marker plus its newline (two bytes as JSON).
    let room = budget.saturating_sub(json_len(&marker(text.len())) + 2);
    let mut used = 0;
    let mut start = text.len();
    for (index, character) in text.char_indices().rev() {
        let mut buffer = [0; 4];
        let size = json_len(character.encode_utf8(&mut buffer));
        if used + size > room {
            break;
        }
        used += size;
        start = index;
    }
    format!("{}\n{}", marker(start), &text[start..])
}

fn marker(cut_bytes: usize) -> String {
    format!("… {cut_bytes} bytes cut")
}

/// A frame as the text sent on the socket; an error (naming the frame's kind and size, never
/// its content) when it would exceed the server's limit, which the budgets make impossible.
pub fn encode(message: &AgentToServer) -> Result<String, String> {
    let text = serde_json::to_string(message).map_err(|error| error.to_string())?;
    if text.len() > MAX_FRAME_BYTES {
        let kind = match message {
            AgentToServer::Hello(_) => "hello",
            AgentToServer::Heartbeat(_) => "heartbeat",
            AgentToServer::JobUpdate(_) => "job update",
            AgentToServer::Log(_) => "log batch",
            AgentToServer::Inspected(_) => "inspect answer",
            AgentToServer::ServiceStates(_) => "service states",
            AgentToServer::SwarmNodes(_) => "swarm nodes",
        };
        return Err(format!(
            "a {kind} frame of {} bytes is over the server's limit of {MAX_FRAME_BYTES}",
            text.len()
        ));
    }
    Ok(text)
}

/// A string of the agent's hello (host name, a version), within its budget.
pub fn hello_field(text: &str) -> String {
    cut(text, budget::HELLO_FIELD)
}

/// An inspect result within its budgets: the error cut, and a service list too long to send
/// answered with an error rather than a partial list.
pub fn inspection(result: Result<Vec<ServiceName>, String>) -> Result<Vec<ServiceName>, String> {
    match result {
        Ok(services) if encoded_len(&services) > budget::SERVICES => Err(format!(
            "the project defines {} services: too many to list (at most {} KiB of names)",
            services.len(),
            budget::SERVICES / 1024
        )),
        Ok(services) => Ok(services),
        Err(error) => Err(cut(&error, budget::MESSAGE)),
    }
}

/// Parses a frame from the server and clamps its numbers into [`limits`].
pub fn decode(text: &str) -> Result<ServerToAgent, serde_json::Error> {
    serde_json::from_str(text).map(clamp)
}

/// The message with every number the server chose moved into its sane range.
pub fn clamp(message: ServerToAgent) -> ServerToAgent {
    match message {
        ServerToAgent::Welcome(mut welcome) => {
            let range = limits::HEARTBEAT_INTERVAL_SECS;
            welcome.heartbeat_interval_secs = welcome
                .heartbeat_interval_secs
                .clamp(*range.start(), *range.end());
            welcome.reconnect_window_secs = welcome
                .reconnect_window_secs
                .min(limits::MAX_RECONNECT_WINDOW_SECS);
            ServerToAgent::Welcome(welcome)
        }
        ServerToAgent::StartLogs(mut request) => {
            request.tail = request.tail.min(limits::MAX_LOG_TAIL);
            ServerToAgent::StartLogs(request)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{Inspected, JobEvent, JobUpdate, Welcome};
    use shared::{AgentId, JobId};
    use uuid::Uuid;

    /// Texts that are hard to encode: quotes, control characters, multi-byte characters.
    fn awkward_texts() -> Vec<String> {
        vec![
            String::new(),
            "plain".into(),
            "\"".repeat(70_000),
            "\u{1}".repeat(30_000),
            "é".repeat(50_000),
            "🦀\t\"\\\n".repeat(20_000),
            "x".repeat(1 << 20),
            format!("{}é", "a".repeat(99)),
        ]
    }

    #[test]
    fn json_len_is_what_serde_json_writes() {
        let every_byte: String = (0u8..128).map(char::from).collect();
        for text in awkward_texts().into_iter().chain([every_byte]) {
            assert_eq!(
                json_len(&text) + 2,
                serde_json::to_string(&text).unwrap().len()
            );
        }
    }

    #[test]
    fn text_within_its_budget_is_left_alone() {
        assert_eq!(cut("short", 5), "short");
        assert_eq!(cut("\"ab\"", 6), "\"ab\"");
    }

    #[test]
    fn cut_text_fits_its_budget_ends_with_the_marker_and_counts_what_it_left_out() {
        for text in awkward_texts() {
            for budget in [64, 100, 1000, budget::LINE, budget::MESSAGE] {
                let bounded = cut(&text, budget);
                assert!(
                    json_len(&bounded) <= budget,
                    "{} > {budget}",
                    json_len(&bounded)
                );
                if bounded == text {
                    continue;
                }
                let (kept, marker) = bounded.rsplit_once("… ").unwrap();
                let left_out: usize = marker
                    .strip_suffix(" bytes cut")
                    .and_then(|number| number.parse().ok())
                    .unwrap_or_else(|| panic!("no marker at the end: {marker:?}"));
                assert!(text.starts_with(kept), "not a prefix");
                assert_eq!(kept.len() + left_out, text.len());
                assert!(json_len(&bounded) + 40 > budget, "cut more than needed");
            }
        }
    }

    #[test]
    fn a_tail_cut_keeping_its_end_fits_its_budget_and_counts_what_it_left_out() {
        for text in awkward_texts() {
            for budget in [64, 100, 1000, budget::LINE, budget::MESSAGE] {
                let bounded = cut_keeping_end(&text, budget);
                assert!(
                    json_len(&bounded) <= budget,
                    "{} > {budget}",
                    json_len(&bounded)
                );
                if bounded == text {
                    continue;
                }
                let (marker, kept) = bounded.split_once('\n').unwrap();
                let left_out: usize = marker
                    .strip_prefix("… ")
                    .and_then(|rest| rest.strip_suffix(" bytes cut"))
                    .and_then(|number| number.parse().ok())
                    .unwrap_or_else(|| panic!("no marker at the start: {marker:?}"));
                assert!(text.ends_with(kept), "not a suffix");
                assert_eq!(kept.len() + left_out, text.len());
                assert!(json_len(&bounded) + 40 > budget, "cut more than needed");
            }
        }
    }

    #[test]
    fn a_job_result_with_megabytes_of_quotes_fits_one_frame() {
        let message = cut(&"\"".repeat(3 << 20), budget::MESSAGE);
        let frame = AgentToServer::JobUpdate(JobUpdate {
            job_id: JobId(Uuid::new_v4()),
            event: JobEvent::Finished {
                success: false,
                message,
                images: Vec::new(),
                checkout: None,
            },
        });
        let text = encode(&frame).unwrap();
        assert!(text.len() <= budget::MESSAGE + 200, "{}", text.len());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_without_showing_its_content() {
        let frame = AgentToServer::JobUpdate(JobUpdate {
            job_id: JobId(Uuid::new_v4()),
            event: JobEvent::Output {
                line: "secret-ish ".repeat(MAX_FRAME_BYTES / 10),
            },
        });
        let error = encode(&frame).unwrap_err();
        assert!(error.contains("job update frame of"), "{error}");
        assert!(!error.contains("secret-ish"), "{error}");
    }

    #[test]
    fn encoded_len_counts_what_to_string_writes() {
        let frame = AgentToServer::Inspected(Inspected {
            request_id: JobId(Uuid::new_v4()),
            result: Err("\"quoted\"\n".into()),
        });
        assert_eq!(
            encoded_len(&frame),
            serde_json::to_string(&frame).unwrap().len()
        );
    }

    #[test]
    fn a_service_list_too_long_to_send_is_answered_with_an_error() {
        let many: Vec<ServiceName> = (0..10_000)
            .map(|index| ServiceName::parse(format!("service-{index:0>40}")).unwrap())
            .collect();
        let error = inspection(Ok(many)).unwrap_err();
        assert!(error.contains("10000 services"), "{error}");
        let few = vec![ServiceName::parse("web").unwrap()];
        assert_eq!(inspection(Ok(few.clone())), Ok(few));
        let long_error = inspection(Err("\"".repeat(1 << 20))).unwrap_err();
        assert!(json_len(&long_error) <= budget::MESSAGE);
    }

    #[test]
    fn hello_fields_are_short() {
        assert!(hello_field(&"h".repeat(10_000)).len() <= budget::HELLO_FIELD);
        assert_eq!(hello_field("host-1"), "host-1");
    }

    #[test]
    fn numbers_from_the_server_are_clamped_into_their_ranges() {
        let welcome = |heartbeat, window| {
            let frame = serde_json::json!({"type": "welcome", "data": {
                "agent_id": AgentId(Uuid::new_v4()),
                "heartbeat_interval_secs": heartbeat,
                "reconnect_window_secs": window,
            }});
            match decode(&frame.to_string()).unwrap() {
                ServerToAgent::Welcome(Welcome {
                    heartbeat_interval_secs,
                    reconnect_window_secs,
                    ..
                }) => (heartbeat_interval_secs, reconnect_window_secs),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            welcome(u64::MAX, u64::MAX),
            (3600, limits::MAX_RECONNECT_WINDOW_SECS)
        );
        assert_eq!(welcome(0, 0), (1, 0));
        assert_eq!(welcome(30, 5), (30, 5));

        let start_logs = serde_json::json!({"type": "start_logs", "data": {
            "stream_id": Uuid::new_v4(), "project": "shop", "directory": "/srv/shop",
            "tail": u32::MAX,
        }});
        let ServerToAgent::StartLogs(request) = decode(&start_logs.to_string()).unwrap() else {
            panic!("not start_logs")
        };
        assert_eq!(request.tail, limits::MAX_LOG_TAIL);
    }
}
