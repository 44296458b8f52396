//! `stagely-agent` as a library: the link to the server, the command runner every docker call
//! goes through, and what the agent learns about its host. The binary in `main.rs` only wires
//! these together, so tests drive the same code.

pub mod backoff;
pub mod link;
pub mod runner;
pub mod system;
