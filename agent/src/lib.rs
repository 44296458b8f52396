//! `stagely-agent` as a library: the link to the server, the command runner every docker call
//! goes through, what the agent learns about its host, and how it reads a Compose project and
//! injects secrets into it. The binary in `main.rs` only wires these together, so tests drive the
//! same code.

pub mod backoff;
pub mod claim;
pub mod compose;
pub mod deploy;
pub mod engine;
pub mod git;
pub mod health;
pub mod images;
pub mod jobs;
pub mod join;
pub mod lifecycle;
pub mod link;
pub mod logs;
pub mod override_file;
pub mod placement;
pub mod private_fs;
pub mod redact;
pub mod registry_auth;
pub mod rollout;
pub mod runner;
pub mod states;
pub mod swarm;
pub mod system;
pub mod testing;
pub mod wire;
