//! The agent against a real Docker engine and real Compose (v2 plugin and v1), with images
//! built locally from Debian's static busybox: nothing is pulled.

mod cli;
mod compose_up;
mod confinement;
mod deploy;
mod helpers;
mod images;
mod jobs;
mod namespace;
mod private_state;
mod props;
mod rollout;
mod runtime;
mod swarm;
