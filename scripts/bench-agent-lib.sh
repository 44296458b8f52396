# Shared by scripts/bench-agent-rss.sh and scripts/bench-log-pipeline.sh: a real release server
# and the static release agent on loopback, a project of busybox `FROM scratch` services deployed
# through the REST API, and reading a process's memory and CPU from /proc. Every name created
# (image, compose project, directories) carries this run's random suffix and is removed on exit.
# shellcheck shell=bash

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$BENCH_ROOT/target}"
SERVER_BIN="${STAGELY_SERVER_BIN:-$TARGET_DIR/release/stagely-server}"
AGENT_BIN="${STAGELY_AGENT_BIN:-$BENCH_ROOT/target/downloads/stagely-agent-x86_64}"
RUN_ID="bench$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
WORK="$(mktemp -d "/tmp/stagely-$RUN_ID.XXXXXX")"
IMAGE="stagely-$RUN_ID:busybox"
SERVER_PID="" AGENT_PID="" PROJECT_DIR="" API="" API_TOKEN="" PROJECT_ID=""

bench_cleanup() {
  set +e
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  if [ -n "$PROJECT_DIR" ] && [ -f "$PROJECT_DIR/compose.yaml" ]; then
    docker compose -p "$RUN_ID" --project-directory "$PROJECT_DIR" down -t 1 >/dev/null 2>&1
  fi
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  docker image rm "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

# `VmRSS VmHWM` of a process, in KiB.
memory_of() {
  awk '/^VmRSS:/ {rss=$2} /^VmHWM:/ {hwm=$2} END {print rss, hwm}' "/proc/$1/status"
}

# utime + stime of a process and its reaped children, in clock ticks.
cpu_ticks_of() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

api() { # METHOD PATH [JSON]
  local args=(-sS --fail-with-body -X "$1" -H "authorization: Bearer $API_TOKEN" "$API$2")
  [ $# -ge 3 ] && args+=(-H 'content-type: application/json' --data "$3")
  curl "${args[@]}" || { echo "$1 $2 failed" >&2; return 1; }
}

start_server() {
  [ -x "$SERVER_BIN" ] || { echo "no server at $SERVER_BIN: cargo build --release -p server --bin stagely-server" >&2; exit 1; }
  [ -x "$AGENT_BIN" ] || { echo "no static agent at $AGENT_BIN: scripts/build-agent.sh" >&2; exit 1; }
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  export STAGELY_BIND="127.0.0.1:$port" STAGELY_DATA_DIR="$WORK/server"
  unset DATABASE_URL APP_MASTER_KEY STAGELY_PUBLIC_URL
  API="http://127.0.0.1:$port/api/v1"
  "$SERVER_BIN" users add bench --admin >/dev/null 2>&1
  API_TOKEN="$("$SERVER_BIN" tokens create bench 2>/dev/null | tail -n 1)"
  RUST_LOG=warn "$SERVER_BIN" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
  done
}

# Registers an agent through the API and starts the static agent for it.
start_agent() {
  local created agent_token
  created="$(api POST /agents '{"name":"'"$RUN_ID"'"}')"
  AGENT_ID="$(jq -r .agent.id <<<"$created")"
  agent_token="$(jq -r .token <<<"$created")"
  mkdir -p "$WORK/agent"
  chmod 0700 "$WORK/agent"
  STAGELY_AGENT_TOKEN="$agent_token" STAGELY_STATE_DIR="$WORK/agent" RUST_LOG=warn \
    "$AGENT_BIN" --server "${API%/api/v1}" >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
  until [ "$(api GET /agents | jq -r --arg id "$AGENT_ID" '.[] | select(.id == $id) | .status')" = connected ]; do
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent.log" >&2; exit 1; }
    sleep 0.1
  done
}

# Writes $PROJECT_DIR/compose.yaml (from stdin) and creates the project on the agent.
create_project() {
  PROJECT_DIR="$WORK/$RUN_ID"
  mkdir -p "$PROJECT_DIR"
  cat >"$PROJECT_DIR/compose.yaml"
  PROJECT_ID="$(api POST /projects "$(jq -n --arg name "$RUN_ID" --arg agent "$AGENT_ID" --arg path "$PROJECT_DIR" \
    '{name: $name, agent_id: $agent, path: $path}')" | jq -r .id)"
}

# Starts a deploy; prints the deployment id.
start_deploy() {
  api POST "/deploy/$PROJECT_ID" '{}' | jq -r .deployment_id
}

deployment_status() {
  api GET "/deployments/$1" | jq -r .status
}
