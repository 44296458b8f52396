#!/usr/bin/env bash
# Requests that fail while a Swarm stack rolls out a changed secret through Stagely's agent: a
# two-replica web service behind a healthcheck, a client on the stack's overlay network asking it
# every 50 ms, changed-secret deploys one after another until it asked at least N times (default
# 200). The engine is put into single-node swarm mode for the run and left afterwards (unless it
# was a manager already). Container networks of this machine only. See docs/BENCHMARKS.md.
#   scripts/bench-swarm-rollout.sh [N]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

STAGELY_BENCH_REQUESTS="${1:-200}" cargo test -q -p agent --test engine \
  swarm::bench_requests_failed_during_changed_secret_deploys -- --ignored --nocapture 2>&1 \
  | grep -E '^requests failed during'
