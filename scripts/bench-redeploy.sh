#!/usr/bin/env bash
# What a redeploy of an unchanged project costs over Compose itself: the agent's own deploy
# (`stagely-agent deploy`, the code the server's jobs run: claim, override, pull policy
# `missing`, `up -d`, health and settle, image digests) against a raw `docker compose up -d` of
# the same, unchanged, compose file in a project of its own, ROUNDS times each (default 10),
# interleaved so both see the same load. A busybox `FROM scratch` project of two services with
# healthchecks. Prints the median and the slowest of each and the ratio of the medians. Every
# name carries this run's random suffix and is removed on exit. See docs/BENCHMARKS.md.
#   scripts/bench-redeploy.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

rounds="${1:-10}"
AGENT_BIN="${STAGELY_AGENT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/stagely-agent}"
[ -n "${STAGELY_AGENT_BIN:-}" ] || cargo build -q -p agent --bin stagely-agent >&2
RUN_ID="rd$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
WORK="$(mktemp -d "/tmp/stagely-$RUN_ID.XXXXXX")"
IMAGE="stagely-$RUN_ID:busybox"

cleanup() {
  set +e
  for mode in agent raw; do
    [ -d "$WORK/$mode" ] && docker compose -p "$RUN_ID-$mode" --project-directory "$WORK/$mode" \
      down -t 1 >/dev/null 2>&1
  done
  docker image rm "$IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/image" "$WORK/state" "$WORK/agent" "$WORK/raw"
chmod 0700 "$WORK/state"
build_busybox_image "$IMAGE" "$WORK/image"

for mode in agent raw; do
  cat >"$WORK/$mode/compose.yaml" <<YAML
services:
  web:
    image: $IMAGE
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && httpd -f -p 80 -h /www & trap 'exit 0' TERM; wait"]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
      interval: 1s
      timeout: 1s
      retries: 3
  worker:
    image: $IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
YAML
done
printf '[{"key":"GREETING","value":"unchanged","scope":"global"}]' >"$WORK/secrets.json"

# `STAGELY_COMPOSE` set: like a running agent, which finds its Compose once at start, the
# command does not ask `docker compose version` on every deploy.
agent_deploy() {
  STAGELY_COMPOSE=v2 STAGELY_STATE_DIR="$WORK/state" RUST_LOG=warn "$AGENT_BIN" deploy --dir "$WORK/agent" \
    --project "$RUN_ID-agent" --secrets "$WORK/secrets.json" >>"$WORK/agent.log" 2>&1 \
    || { cat "$WORK/agent.log" >&2; exit 1; }
}
raw_up() {
  docker compose -p "$RUN_ID-raw" --project-directory "$WORK/raw" up -d >>"$WORK/raw.log" 2>&1 \
    || { cat "$WORK/raw.log" >&2; exit 1; }
}
ms() { date +%s%3N; }

# The first deploy of each creates the containers; only redeploys are measured.
agent_deploy
raw_up
for _ in $(seq 1 "$rounds"); do
  start=$(ms); agent_deploy; echo $(($(ms) - start)) >>"$WORK/agent.ms"
  start=$(ms); raw_up; echo $(($(ms) - start)) >>"$WORK/raw.ms"
done

summary() { # FILE -> "median slowest"
  sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[NR] }'
}
read -r agent_median agent_max < <(summary "$WORK/agent.ms")
read -r raw_median raw_max < <(summary "$WORK/raw.ms")
echo "raw docker compose up -d (unchanged): median ${raw_median} ms, slowest ${raw_max} ms ($rounds runs)"
echo "stagely-agent redeploy (unchanged):   median ${agent_median} ms, slowest ${agent_max} ms ($rounds runs)"
awk -v a="$agent_median" -v r="$raw_median" \
  'BEGIN { printf "overhead: %+d ms over raw (%.2fx); target <= 1.1x raw + 300 ms = %d ms\n", a - r, a / r, 1.1 * r + 300 }'
