#!/usr/bin/env bash
# Idle agents across three replicas (issue 17): three replicas of the server on one fresh
# PostgreSQL database, AGENTS simulated agents (stagely-loadgen, the real protocol), agent i
# connected straight to replica i % 3. Prints each replica's RSS before and after, the replicas'
# growth together per connected agent (target ≤ 15 KiB) and the heartbeat round trip of 1,000
# sampled agents (target p99 ≤ 10 ms). No dispatch.
#   scripts/bench-replicas-idle.sh             # 50,000 agents
#   AGENTS=6000 PROFILE=debug scripts/bench-replicas-idle.sh
# Each process simulating agents needs one descriptor per agent, as does each replica, under
# the open-file limit (`ulimit -Hn`, 20,000 here): the agents are simulated in as many child
# processes of the load generator as that takes (PROCESSES overrides), and the three replicas
# hold a third each.
# Settings: DATABASE_URL [default: $TEST_DATABASE_URL, else
# postgres://postgres:postgres@127.0.0.1:5432/postgres], PROFILE (release | debug) [release],
# CARGO_TARGET_DIR. See docs/BENCHMARKS.md.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

agents="${AGENTS:-50000}"
profile="${PROFILE:-release}"
database_url="${DATABASE_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}"
target="${CARGO_TARGET_DIR:-$ROOT/target}"

ensure_rust_tools
flags=()
[ "$profile" = release ] && flags+=(--release)
say "building stagely-server and stagely-loadgen ($profile)"
cargo build "${flags[@]}" -p server --bin stagely-server --example stagely-loadgen >&2

fd_limit="$(ulimit -Hn)"
[ "$fd_limit" = unlimited ] && fd_limit=1048576
if [ "$fd_limit" -le 2048 ]; then
  echo "the open-file limit ($fd_limit) leaves no room for agents: raise it (ulimit -Hn)" >&2
  exit 1
fi
processes="${PROCESSES:-$(( (agents + fd_limit - 1025) / (fd_limit - 1024) ))}"

echo "machine: $(nproc) cores, $(uname -sr), open-file limit $(ulimit -Hn), profile $profile"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/$profile/examples/stagely-loadgen" \
  --server-bin "$target/$profile/stagely-server" \
  --database-url "$database_url" --replicas 3 --spread \
  -n "$agents" --heartbeat-sample "$(( agents < 1000 ? agents : 1000 ))" --dispatch 0 \
  --processes "$processes"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
