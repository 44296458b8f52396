#!/usr/bin/env bash
# The static agent's memory: VmRSS / VmHWM (from /proc/<pid>/status) of the release static agent
# connected to a release server, idle, then while it deploys a Compose project of SERVICES (5)
# busybox services (`FROM scratch`, as the tests build them), sampled every 20 ms, then idle again.
# Goals (issue 18): idle ≤ 10 MB, during a deploy ≤ 20 MB.
# Needs: dockerd and Compose v2 (scripts/test.sh installs them), jq, and the binaries:
#   cargo build --release -p server --bin stagely-server && scripts/build-agent.sh
# Usage: scripts/bench-agent-rss.sh   (STAGELY_SERVER_BIN / STAGELY_AGENT_BIN pick other binaries)
source "$(dirname "$0")/bench-agent-lib.sh"
SERVICES="${SERVICES:-5}"
IDLE_SECS="${IDLE_SECS:-5}"

build_busybox_image "$IMAGE" "$WORK/image"
start_server
start_agent
echo "agent $AGENT_BIN ($(stat -c %s "$AGENT_BIN") bytes), pid $AGENT_PID, $(grep -c '' /proc/cpuinfo >/dev/null; nproc) cores"
echo "threads after connecting: $(awk '/^Threads:/ {print $2}' "/proc/$AGENT_PID/status")"
sleep "$IDLE_SECS"
read -r idle_rss idle_hwm < <(memory_of "$AGENT_PID")
echo "idle (connected ${IDLE_SECS} s):   VmRSS $(kib_to_mib "$idle_rss") MiB, VmHWM $(kib_to_mib "$idle_hwm") MiB ($idle_hwm KiB)"

{
  echo "services:"
  for i in $(seq 1 "$SERVICES"); do
    printf '  svc%s:\n    image: %s\n    command: ["sh", "-c", "trap '"'"'exit 0'"'"' TERM; while true; do sleep 1; done"]\n' "$i" "$IMAGE"
  done
} >"$WORK/compose.yaml"
create_project <"$WORK/compose.yaml"

deployment="$(start_deploy)"
peak_rss=0 peak_threads=0 started=$(date +%s%N)
while :; do
  read -r rss _ < <(memory_of "$AGENT_PID")
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$AGENT_PID/status")"
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  [ "$threads" -gt "$peak_threads" ] && peak_threads=$threads
  status="$(deployment_status "$deployment")"
  case "$status" in succeeded | failed | cancelled | timed_out) break ;; esac
  sleep 0.02
done
took=$(( ($(date +%s%N) - started) / 1000000 ))
read -r _ deploy_hwm < <(memory_of "$AGENT_PID")
echo "deploy of $SERVICES services: $status in $took ms; sampled VmRSS peak $(kib_to_mib "$peak_rss") MiB, VmHWM $(kib_to_mib "$deploy_hwm") MiB ($deploy_hwm KiB), up to $peak_threads threads"
[ "$status" = succeeded ] || { api GET "/deployments/$deployment" >&2; exit 1; }
sleep "$IDLE_SECS"
read -r after_rss _ < <(memory_of "$AGENT_PID")
echo "idle after the deploy (${IDLE_SECS} s): VmRSS $(kib_to_mib "$after_rss") MiB"
goal() { awk -v v="$1" -v g="$2" 'BEGIN {print (v / 1024 <= g) ? "met" : "missed"}'; }
echo "goals: idle VmHWM ≤ 10 MiB: $(goal "$idle_hwm" 10); deploy VmHWM ≤ 20 MiB: $(goal "$deploy_hwm" 20)"
