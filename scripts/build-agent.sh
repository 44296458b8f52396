#!/usr/bin/env bash
# Builds the static agents that the server offers new hosts at
# /downloads/stagely-agent-x86_64 and /downloads/stagely-agent-aarch64 (into target/downloads,
# the server's default STAGELY_DOWNLOADS_DIR when run from the workspace).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
build_static_agent
build_static_agent_aarch64
ls -l target/downloads
