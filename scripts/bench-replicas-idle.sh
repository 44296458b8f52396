#!/usr/bin/env bash
# Idle agents across three replicas (issue 17): three replicas of the server on one fresh
# PostgreSQL database, AGENTS simulated agents (stagely-loadgen, the real protocol), agent i
# connected straight to replica i % 3. Prints each replica's RSS before and after, the replicas'
# growth together per connected agent (target ≤ 15 KiB) and the heartbeat round trip of 1,000
# sampled agents (target p99 ≤ 10 ms). No dispatch.
#   scripts/bench-replicas-idle.sh             # 19,800 agents
#   AGENTS=6000 PROFILE=debug scripts/bench-replicas-idle.sh
# Limit: the load generator is one process and needs one descriptor per agent, so AGENTS stays
# under its open-file limit (`ulimit -Hn`, 20,000 here); 50,000 needs the load generator split
# over several processes against the same replicas, which it cannot do yet.
# Settings: DATABASE_URL [default: $TEST_DATABASE_URL, else
# postgres://postgres:postgres@127.0.0.1:5432/postgres], PROFILE (release | debug) [release],
# CARGO_TARGET_DIR. See docs/BENCHMARKS.md.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

agents="${AGENTS:-19800}"
profile="${PROFILE:-release}"
database_url="${DATABASE_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}"
target="${CARGO_TARGET_DIR:-$ROOT/target}"

ensure_rust_tools
flags=()
[ "$profile" = release ] && flags+=(--release)
say "building stagely-server and stagely-loadgen ($profile)"
cargo build "${flags[@]}" -p server --bin stagely-server --example stagely-loadgen >&2

echo "machine: $(nproc) cores, $(uname -sr), open-file limit $(ulimit -Hn), profile $profile"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/$profile/examples/stagely-loadgen" \
  --server-bin "$target/$profile/stagely-server" \
  --database-url "$database_url" --replicas 3 --spread \
  -n "$agents" --heartbeat-sample "$(( agents < 1000 ? agents : 1000 ))" --dispatch 0
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
