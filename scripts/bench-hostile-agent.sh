#!/usr/bin/env bash
# A hostile agent sending at its maximum for 60 s (BENCH_SECS) against a real stagely-server with
# its default limits, while another person's agent sends a line every 100 ms to that person's tab:
# prints what the hostile agent offered and what the server accepted and dropped, the other
# person's event latency (p50 / p99 / max) and the server's memory (VmRSS, VmHWM).
# Usage: scripts/bench-hostile-agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
cargo test -p server --test api bench_hostile_agent -- --ignored --nocapture 2>&1 |
  grep -E '^(hostile agent|  )'
