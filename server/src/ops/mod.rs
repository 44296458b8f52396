//! The operations: everything a person (or the operator at the command line) can do, once.
//!
//! Each operation is a function that takes who is acting, its typed input and only the parts of
//! the server it uses (`&Store`, `&Hub`, `&Vault`, …), and returns a domain result with an
//! [`OpError`]. The REST API (`http`), the dashboard's server functions (`dashboard`), the
//! agent sockets (`ws`) and the admin CLI (`main.rs`) are thin adapters over these calls, so they
//! can never disagree on a check. Nothing here knows about HTTP, cookies or sockets.
//!
//! One module per resource; a new operation goes into its resource's module, and its adapters
//! are one handler (plus a route-table line) and one server-function method.

pub mod agents;
pub mod deployments;
pub mod error;
pub mod join_tokens;
pub mod logs;
pub mod notifications;
pub mod projects;
pub mod registries;
pub mod retention;
pub mod secrets;
pub mod services;
pub mod sources;
pub mod throttle;
pub mod users;
pub mod webhooks;

pub use error::{OpError, OpResult};

use crate::db::User;

/// Who performs an operation: a signed-in person (through the API or the dashboard), or the
/// operator of the server at its command line, who may act on every agent.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    User(&'a User),
    Operator,
}
