#!/usr/bin/env bash
# The log pipeline end to end: container → Docker → the agent's `compose logs -f` → the agent's
# batches → the server → 10 dashboard feeds (`/api/v1/events`, watching the project). A release
# server and the static release agent on loopback; SERVICES (4) busybox services (`FROM
# scratch`) print their sequence numbers (`seq`) as fast as they can, then at about 10,000
# lines/s in all (in rounds of 100 ms). For each phase it prints the lines/s reaching the clients and their latency
# from the container's write (Docker's timestamp) to the client's receipt (stagely-logclients,
# server/examples/stagely-logclients.rs), the skipped count, the server's RSS over the run and
# the agent's CPU; and, first, in the same run, the lines/s `docker compose logs -f` alone reads
# from the same containers (the ceiling).
# Goals (issue 18): ≥ 50,000 lines/s with p99 ≤ 250 ms, server RSS bounded, the agent under 25%
# of a core at 10,000 lines/s.
# Needs dockerd and Compose v2, jq, and:
#   cargo build --release -p server --bin stagely-server --example stagely-logclients
#   scripts/build-agent.sh
# Usage: scripts/bench-log-pipeline.sh   (SECS=10 measured per phase, CLIENTS=10, SERVICES=4,
#   RATE=10000; STAGELY_SERVER_BIN / STAGELY_AGENT_BIN / STAGELY_LOGCLIENTS_BIN pick binaries)
source "$(dirname "$0")/bench-agent-lib.sh"
SERVICES="${SERVICES:-4}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-10}"
RATE="${RATE:-10000}"
CLIENTS_BIN="${STAGELY_LOGCLIENTS_BIN:-$TARGET_DIR/release/examples/stagely-logclients}"
[ -x "$CLIENTS_BIN" ] || { echo "no $CLIENTS_BIN: cargo build --release -p server --example stagely-logclients" >&2; exit 1; }
TICKS="$(getconf CLK_TCK)"

# compose.yaml whose services run COMMAND (a busybox sh script; `$` written as `$$`).
write_compose() {
  {
    echo "services:"
    for i in $(seq 1 "$SERVICES"); do
      printf '  svc%s:\n    image: %s\n    init: true\n' "$i" "$IMAGE"
      printf '    logging: {driver: json-file, options: {max-size: 20m, max-file: "2"}}\n'
      printf '    command: ["sh", "-c", %s]\n' "$(jq -Rn --arg c "$1" '$c')"
    done
  } >"$PROJECT_DIR/compose.yaml"
}

deploy_and_wait() {
  local deployment status
  deployment="$(start_deploy)"
  while :; do
    status="$(deployment_status "$deployment")"
    case "$status" in succeeded) return ;; failed | cancelled | timed_out) api GET "/deployments/$deployment" >&2; exit 1 ;; esac
    sleep 0.2
  done
}

# The agent's `compose logs -f` processes (the docker CLI and its compose plugin), found by their
# arguments (the plugin is the CLI's child, not the agent's; `-f` tells them from the
# `compose logs` this script runs alone): "pid ticks" lines.
children_ticks() {
  local child
  for child in $(pgrep -f -- "-p $RUN_ID -f .*logs -f"); do
    echo "$child $(cpu_ticks_of "$child" 2>/dev/null || echo 0)"
  done
}
# CPU ticks the processes of snapshot $2 used since snapshot $1 (a new one counts whole).
ticks_between() {
  awk 'NR == FNR {before[$1] = $2; next} {total += $2 - before[$1]} END {print total + 0}' "$1" "$2"
}
percent() { awk -v t="$1" -v hz="$TICKS" -v s="$2" 'BEGIN {printf "%.1f%%", 100 * t / hz / s}'; }

# One measured phase: the clients watch the project for SECS after a 3 s warm-up, meanwhile the
# server's RSS is sampled every 0.5 s and the CPU of the agent and its children is counted.
measure_pipeline() {
  local label="$1" out="$WORK/clients.out" peak=0 rss start_rss
  read -r start_rss _ < <(memory_of "$SERVER_PID")
  STAGELY_API_TOKEN="$API_TOKEN" "$CLIENTS_BIN" --server "${API%/api/v1}" --project "$PROJECT_ID" \
    --clients "$CLIENTS" --warmup-secs 3 --secs "$SECS" >"$out" 2>&1 &
  local clients=$!
  sleep 3
  local agent0 server0
  agent0="$(cpu_ticks_of "$AGENT_PID")" server0="$(cpu_ticks_of "$SERVER_PID")"
  children_ticks >"$WORK/children0"
  local began=$SECONDS
  while kill -0 "$clients" 2>/dev/null; do
    read -r rss _ < <(memory_of "$SERVER_PID")
    [ "$rss" -gt "$peak" ] && peak=$rss
    if [ $((SECONDS - began)) -ge "$SECS" ] && [ -z "${agent1:-}" ]; then
      agent1="$(cpu_ticks_of "$AGENT_PID")" server1="$(cpu_ticks_of "$SERVER_PID")"
      children_ticks >"$WORK/children1"
    fi
    sleep 0.5
  done
  wait "$clients" || { cat "$out" >&2; exit 1; }
  if [ -z "${agent1:-}" ]; then
    agent1="$(cpu_ticks_of "$AGENT_PID")" server1="$(cpu_ticks_of "$SERVER_PID")"
      children_ticks >"$WORK/children1"
  fi
  local elapsed=$((SECONDS - began))
  [ "$elapsed" -gt 0 ] || elapsed=1
  echo "== $label"
  sed 's/^/   /' "$out"
  echo "   server VmRSS: $(kib_to_mib "$start_rss") MiB before, peak $(kib_to_mib "$peak") MiB; server CPU $(percent $((server1 - server0)) "$elapsed") of a core"
  local agent_rss agent_hwm
  read -r agent_rss agent_hwm < <(memory_of "$AGENT_PID")
  echo "   agent CPU: $(percent $((agent1 - agent0)) "$elapsed") of a core (its compose logs processes: $(percent "$(ticks_between "$WORK/children0" "$WORK/children1")" "$elapsed")); agent VmRSS $(kib_to_mib "$agent_rss") MiB, VmHWM $(kib_to_mib "$agent_hwm") MiB"
  unset agent1 server1
}

# `docker compose logs -f` alone, reading the same containers, for SECS: the ceiling.
measure_compose_logs() {
  local count
  count="$( (timeout "$SECS" docker compose -p "$RUN_ID" --project-directory "$PROJECT_DIR" logs -f --no-color \
    --timestamps --no-log-prefix --tail 0 || true) | wc -l)"
  echo "== docker compose logs -f alone ($SERVICES services, one process): $count lines in $SECS s = $((count / SECS)) lines/s"
}

build_busybox_image "$IMAGE" "$WORK/image"
start_server
start_agent
create_project </dev/null
echo "log pipeline: $SERVICES services, $CLIENTS clients, $SECS s per phase, $(nproc) cores, load $(cut -d ' ' -f 1-3 /proc/loadavg)"

# As fast as they can: `seq` writes its numbers through stdio's buffer.
write_compose 'trap "exit 0" TERM; seq 1 1000000000; sleep 1000000'
deploy_and_wait
sleep 2
measure_compose_logs
measure_pipeline "pipeline, services printing as fast as they can"

# About RATE lines/s in all: every 100 ms each service prints RATE / SERVICES / 10 lines, then
# sleeps 90 ms (the two forks of a round take the rest, more or less with the load: the clients
# report the rate the containers reached).
per_tick=$((RATE / SERVICES / 10))
write_compose 'trap "exit 0" TERM; i=1; while :; do seq $$i $$((i + '"$per_tick"' - 1)); i=$$((i + '"$per_tick"')); usleep 90000; done'
deploy_and_wait
sleep 2
measure_compose_logs
measure_pipeline "pipeline, services printing about $RATE lines/s in all"
