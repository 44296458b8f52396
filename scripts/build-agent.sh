#!/usr/bin/env bash
# Builds the static x86_64 agent that the server offers new hosts at
# /downloads/stagely-agent-x86_64 (into target/downloads, the server's default
# STAGELY_DOWNLOADS_DIR when run from the workspace).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
build_static_agent
ls -l target/downloads
