#!/usr/bin/env bash
# Container death -> dashboard tab: a real agent follows `docker events` for a deployed project of
# 100 idle services; the benchmark kills containers one at a time (40 times) and then all 100 at
# once, and prints how long each took to reach a tab's live feed. Needs what the test command
# installs (dockerd running, the busybox test image is built on first use).
# Usage: scripts/bench-live-state.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
cargo test -p server --test api bench_live_state -- --ignored --nocapture 2>&1 |
  grep -E '^(live state|  )' 
