#!/usr/bin/env bash
# Slow clients -> a normal client: a real stagely-server with its default limits while 1,000
# slowloris connections (a request line, then one header byte per 10 s, reopened whenever the
# server cuts one) are held for 60 s; prints a normal client's /healthz latency without and
# with the attack, how many slowloris connections the server cut, and its memory.
# BENCH_SECS and BENCH_SLOW change the length and the size of the attack.
# Usage: scripts/bench-slowloris.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# 1,000 client sockets in the benchmark process, as many in the server's.
ulimit -n "$(ulimit -Hn)"
cargo build --bins
cargo test -p server --test api bench_slowloris -- --ignored --nocapture 2>&1 |
  grep -E '^(slowloris|  )'
