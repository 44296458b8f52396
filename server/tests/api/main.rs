//! Integration tests of `stagely-server`: the real app on a loopback port, real agent
//! processes, SQLite always and PostgreSQL when `TEST_DATABASE_URL` is set.

mod after_deploy;
mod agent_link;
mod api_document;
mod auth;
mod bench_hostile_agent;
mod bench_live_state;
mod bench_slowloris;
mod connections;
mod control_plane;
mod dashboard;
mod git_https;
mod git_sources;
mod helpers;
mod images;
mod layers;
mod notifications;
mod project_names;
mod provisioning;
mod redaction;
mod replicas;
mod retention;
mod revocation;
mod rollout;
mod secrets_at_rest;
mod security_headers;
mod static_files;
mod storage;
mod swarm_target;
mod tenant_limits;
mod webhooks;
