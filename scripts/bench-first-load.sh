#!/usr/bin/env bash
# What the first load of each dashboard page costs: the release build with split WASM
# (`cargo leptos build --release --split --precompress`, as scripts/run.sh builds it), a server
# on a fresh SQLite directory, and Debian's Chromium loading each page with an empty cache and
# again warm. Prints a Markdown table (docs/BENCHMARKS.md, "Dashboard first load").
#
#   scripts/bench-first-load.sh
#   BENCH_NO_BUILD=1 scripts/bench-first-load.sh     reuse the last release build
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo leptos build --release --split --precompress >&2
fi
data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
STAGELY_DATA_DIR="$data" STAGELY_BIND="127.0.0.1:$port" STAGELY_SITE_ROOT="$ROOT/target/site" \
  target/release/stagely-server >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "stagely-server exited:" >&2
    cat "$data/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
node scripts/bench-first-load.mjs "http://127.0.0.1:$port" "$ROOT/target/site"
