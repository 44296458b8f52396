#!/usr/bin/env bash
# Page latency on a kept-alive connection against one closed after each request, side by side:
# the release server on a fresh SQLite directory, a signed-in session, N requests of the Servers
# page each way (default 200), printed as p50 / p99 / max. A response written in several pieces
# without TCP_NODELAY waits for the client's delayed ACK (~40 ms) on a kept-alive connection only,
# which is what this benchmark would show. Loopback only. See docs/BENCHMARKS.md.
#   scripts/bench-keepalive.sh [REQUESTS]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

requests="${1:-200}"
cargo build --release -p server --bin stagely-server >&2
data="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
STAGELY_DATA_DIR="$data" STAGELY_BIND="127.0.0.1:$port" STAGELY_SITE_ROOT="$ROOT/target/site" \
  RUST_LOG=warn "$ROOT/target/release/stagely-server" 2>"$data/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do curl -fs "$url/healthz" >/dev/null && break; sleep 0.1; done

cookies="$data/cookies"
curl -fs -c "$cookies" -o /dev/null -H "Origin: $url" \
  --data "login=bench&password=bench-password-1&password_confirm=bench-password-1" "$url/auth/setup"

summary() {
  sort -n | awk -v what="$1" '{ms[NR] = $1 * 1000}
    END {
      p50 = int(NR * 0.50) + 1; if (p50 > NR) p50 = NR
      p99 = int(NR * 0.99) + 1; if (p99 > NR) p99 = NR
      printf "%-11s p50 %7.2f ms   p99 %7.2f ms   max %7.2f ms   (%d requests)\n", what, ms[p50], ms[p99], ms[NR], NR
    }'
}

# One curl, one connection, every request on it.
args=()
for _ in $(seq 1 "$requests"); do args+=("$url/" -o /dev/null); done
curl -s -b "$cookies" -w "%{time_total}\n" "${args[@]}" | summary "keep-alive"
for _ in $(seq 1 "$requests"); do
  curl -s -b "$cookies" -o /dev/null -H "Connection: close" -w "%{time_total}\n" "$url/"
done | summary "close"
