#!/usr/bin/env bash
# Requests that fail while a compose service's secret changes: today's recreate against the
# start-first rollout (`dev.stagely.rollout: start-first`), measured in the same run on the same
# host. A busybox `FROM scratch` HTTP service with a healthcheck serves its secret; a client
# container on the project's network asks it by its service name every 50 ms; the agent's own
# deploy (`stagely-agent deploy`, the code path the server's jobs run) changes the secret ROUNDS
# times per mode (default 5). Only requests made while a deploy ran are counted (by the client's
# log timestamps). A second client asks the same service through a proxy container in front of
# it (Debian's HAProxy, finding the service's containers by its name in Docker's DNS, as a
# reverse proxy does; it sends a GET whose connection was refused or cut to another container), so
# each mode gives two counts from the same deploys: clients asking the service directly, and
# clients behind a proxy. Every name carries this run's random suffix and is removed on exit.
# See docs/BENCHMARKS.md.
#   scripts/bench-zero-downtime.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

rounds="${1:-5}"
AGENT_BIN="${STAGELY_AGENT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/stagely-agent}"
[ -n "${STAGELY_AGENT_BIN:-}" ] || cargo build -q -p agent --bin stagely-agent >&2
RUN_ID="zd$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
WORK="$(mktemp -d "/tmp/stagely-$RUN_ID.XXXXXX")"
IMAGE="stagely-$RUN_ID:busybox"
PROXY_IMAGE="stagely-$RUN_ID:haproxy"
CLIENT="stagely-$RUN_ID-client"
PROXIED="stagely-$RUN_ID-proxied"
PROXY="stagely-$RUN_ID-proxy"

cleanup() {
  set +e
  docker rm -f "$CLIENT" "$PROXIED" "$PROXY" >/dev/null 2>&1
  for mode in recreate start-first; do
    [ -d "$WORK/$mode" ] && docker compose -p "$RUN_ID-$mode" --project-directory "$WORK/$mode" \
      down -t 1 >/dev/null 2>&1
  done
  docker image rm "$IMAGE" "$PROXY_IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x /usr/sbin/haproxy ] || apt_install haproxy
mkdir -p "$WORK/image" "$WORK/state"
chmod 0700 "$WORK/state"
build_busybox_image "$IMAGE" "$WORK/image"
build_haproxy_image "$PROXY_IMAGE" "$WORK/proxy-image"
cp "$ROOT/deploy/haproxy-rollout.cfg" "$WORK/haproxy.cfg"

# The service: serves $GREETING, stops at once on SIGTERM, healthy once it answers.
write_project() { # MODE LABELS
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/compose.yaml" <<YAML
services:
  web:
    image: $IMAGE
    command: ["sh", "-c", "mkdir -p /www && echo \"\$\$GREETING\" > /www/index.html && httpd -f -p 80 -h /www & trap 'exit 0' TERM; wait"]
$2    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
      interval: 1s
      timeout: 1s
      retries: 3
YAML
}

deploy() { # MODE VALUE
  printf '[{"key":"GREETING","value":"%s","scope":"global"}]' "$2" >"$WORK/secrets.json"
  STAGELY_STATE_DIR="$WORK/state" RUST_LOG=warn "$AGENT_BIN" deploy --dir "$WORK/$1" \
    --project "$RUN_ID-$1" --secrets "$WORK/secrets.json" >>"$WORK/$1.log" 2>&1 \
    || { cat "$WORK/$1.log" >&2; exit 1; }
}

now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# Waits (60 s at most) until both clients' last line is `ok VALUE`; else says what they print.
answered() { # VALUE
  local deadline=$((SECONDS + 60)) client
  for client in "$CLIENT" "$PROXIED"; do
    until docker logs "$client" 2>/dev/null | tail -n 1 | grep -qx "ok $1"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "$client was never answered $1; it printed:" >&2
        docker logs --tail 5 "$client" >&2
        echo "the proxy printed:" >&2
        docker logs --tail 20 "$PROXY" >&2
        exit 1
      fi
      sleep 0.1
    done
  done
}

client() { # NAME NETWORK URL
  docker run -d --name "$1" --network "$2" "$IMAGE" sh -c \
    "while true; do if b=\$(timeout 2 wget -qO- $3 2>/dev/null); then echo \"ok \$b\"; else echo fail; fi; sleep 0.05; done" \
    >/dev/null
}

counted() { # CONTAINER START END -> "FAILED TOTAL"
  docker logs -t --since "$2" --until "$3" "$1" 2>&1 \
    | awk '{ if ($2 == "fail") f++; n++ } END { print f + 0, n + 0 }'
}

measure() { # MODE LABELS
  local mode="$1" failed=0 total=0 pfailed=0 ptotal=0 start end counts network
  network="$RUN_ID-${mode}_default"
  write_project "$mode" "$2"
  deploy "$mode" "$mode-0"
  docker run -d --name "$PROXY" --network "$network" --network-alias proxy \
    -v "$WORK/haproxy.cfg:/haproxy.cfg:ro" "$PROXY_IMAGE" -f /haproxy.cfg >/dev/null
  client "$CLIENT" "$network" http://web/
  client "$PROXIED" "$network" http://proxy/
  answered "$mode-0"
  for round in $(seq 1 "$rounds"); do
    start="$(now)"
    deploy "$mode" "$mode-$round"
    end="$(now)"
    counts="$(counted "$CLIENT" "$start" "$end")"
    failed=$((failed + ${counts% *}))
    total=$((total + ${counts#* }))
    counts="$(counted "$PROXIED" "$start" "$end")"
    pfailed=$((pfailed + ${counts% *}))
    ptotal=$((ptotal + ${counts#* }))
    answered "$mode-$round"
  done
  docker rm -f "$CLIENT" "$PROXIED" "$PROXY" >/dev/null
  echo "$mode: requests failed during a changed-secret deploy: $failed of $total asking the service, $pfailed of $ptotal through a proxy ($rounds deploys)"
  [ "$total" -ge 200 ] && [ "$ptotal" -ge 200 ] || echo "  (fewer than 200 requests: pass more rounds)" >&2
}

measure recreate ""
measure start-first "    labels:
      dev.stagely.rollout: start-first
"
