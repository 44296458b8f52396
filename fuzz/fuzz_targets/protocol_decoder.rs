//! The protocol decoder on any bytes a peer can send in a text frame: `serde_json::from_slice`
//! into `ServerToAgent` (what the agent reads) and `AgentToServer` (what the server reads).
//!
//! Decoding never panics, and whatever decodes encodes again and decodes to the same value, with
//! the same bytes the second time: a frame means one thing to both sides.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shared::{AgentToServer, ServerToAgent};
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    round_trip::<ServerToAgent>(data);
    round_trip::<AgentToServer>(data);
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&value).expect("a decoded frame encodes");
    let decoded: T = serde_json::from_slice(&encoded).unwrap_or_else(|error| {
        panic!(
            "the re-encoded frame does not decode: {error}\n{}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(decoded, value, "the frame changed meaning on the way round");
    let again = serde_json::to_vec(&decoded).expect("a decoded frame encodes");
    assert_eq!(again, encoded, "encoding is not stable");
}
