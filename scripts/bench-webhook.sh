#!/usr/bin/env bash
# Webhook received -> agent has the job: a real server process (SQLite) and an agent that answers
# at once; 300 signed GitHub pushes, one after another (each deploy finished before the next), and
# the time from the start of each POST to the agent receiving its deploy job.
# Usage: scripts/bench-webhook.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
cargo test -p server --test api bench_webhook_to_agent -- --ignored --nocapture 2>&1 |
  grep -E '^webhook'
