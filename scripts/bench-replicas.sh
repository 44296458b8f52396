#!/usr/bin/env bash
# Cross-replica dispatch (issue 17): two replicas of the server on one fresh PostgreSQL database,
# N simulated agents (stagely-loadgen, the real protocol) connected to the first, DEPLOYS deploys
# spread over SPREAD seconds sent to the second one's REST API, each of which reaches its agent
# through PostgreSQL (LISTEN/NOTIFY + the hand-over table). Prints p50/p90/p99/max of "request
# sent → agent has the job" and of "202 received → agent has the job", with the load average
# before and after. Loopback only; the database is created for the run and dropped after it.
#   scripts/bench-replicas.sh                 # 1,000 agents, 1,000 deploys over 5 s
#   AGENTS=5000 DEPLOYS=1000 SPREAD=5 PROFILE=debug scripts/bench-replicas.sh
#   REPLICAS=1 scripts/bench-replicas.sh      # the control: API and agents on one replica
# Settings: DATABASE_URL (a PostgreSQL server to create the run's database on) [default:
# $TEST_DATABASE_URL, else postgres://postgres:postgres@127.0.0.1:5432/postgres], PROFILE
# (release | debug) [release], CARGO_TARGET_DIR. See docs/BENCHMARKS.md.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

agents="${AGENTS:-1000}"
deploys="${DEPLOYS:-1000}"
spread="${SPREAD:-5}"
profile="${PROFILE:-release}"
database_url="${DATABASE_URL:-${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}}"
target="${CARGO_TARGET_DIR:-$ROOT/target}"

ensure_rust_tools
flags=()
[ "$profile" = release ] && flags+=(--release)
say "building stagely-server and stagely-loadgen ($profile)"
cargo build "${flags[@]}" -p server --bin stagely-server --example stagely-loadgen >&2

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo), $(uname -sr), profile $profile"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rate="$(awk -v d="$deploys" -v s="$spread" 'BEGIN {print d / s}')"
"$target/$profile/examples/stagely-loadgen" \
  --server-bin "$target/$profile/stagely-server" \
  --database-url "$database_url" --replicas "${REPLICAS:-2}" \
  -n "$agents" --heartbeat-sample "$(( agents < 1000 ? agents : 1000 ))" \
  --dispatch "$deploys" --dispatch-rate "$rate"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
