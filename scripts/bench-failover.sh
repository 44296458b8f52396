#!/usr/bin/env bash
# One replica killed (issue 17): three replicas of the server on one fresh PostgreSQL database,
# HAProxy (deploy/haproxy.cfg) in front, AGENTS simulated agents (stagely-loadgen, the real
# protocol and the real agent's reconnect backoff) connected through it, then `kill -9` of one
# replica. Prints how many agents it held, the reconnections through HAProxy per second after
# the kill, when 99% were back (target ≤ 60 s) and the busiest second's share (target ≤ 5%).
# Loopback only; the database is created for the run and dropped after it.
#   scripts/bench-failover.sh                  # 3,000 agents
#   AGENTS=6000 PROFILE=debug scripts/bench-failover.sh
# HAProxy holds two sockets per agent and the load generator one, under the process open-file
# limit (`ulimit -n`); the replicas a third of the agents each.
# Settings: DATABASE_URL [default: $TEST_DATABASE_URL, else
# postgres://postgres:postgres@127.0.0.1:5432/postgres], PROFILE (release | debug) [release],
# CARGO_TARGET_DIR. See docs/BENCHMARKS.md.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

agents="${AGENTS:-3000}"
profile="${PROFILE:-release}"
database_url="${DATABASE_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}"
target="${CARGO_TARGET_DIR:-$ROOT/target}"

ensure_rust_tools
command -v haproxy >/dev/null || apt_install haproxy
flags=()
[ "$profile" = release ] && flags+=(--release)
say "building stagely-server and stagely-loadgen ($profile)"
cargo build "${flags[@]}" -p server --bin stagely-server --example stagely-loadgen >&2

echo "machine: $(nproc) cores, $(uname -sr), open-file limit $(ulimit -Hn), haproxy $(haproxy -v | head -n 1 | awk '{print $3}'), profile $profile"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/$profile/examples/stagely-loadgen" \
  --server-bin "$target/$profile/stagely-server" \
  --database-url "$database_url" --replicas 3 --failover-test --haproxy-config deploy/haproxy.cfg \
  -n "$agents" --heartbeat-sample "$(( agents < 1000 ? agents : 1000 ))" --dispatch 0
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
