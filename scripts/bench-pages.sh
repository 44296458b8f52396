#!/usr/bin/env bash
# Server-side rendering of the two heaviest pages under a constant load, signed in: the Project
# page of a project with 100 secrets and 200 deployments, and the Servers page with 1,000
# agents. The release build (as scripts/run.sh builds it), a server on a fresh SQLite
# directory, then `oha` at a fixed rate (default 100 requests/s for 30 s) per page, on kept-alive
# connections and with `Connection: close`, printing p50 / p99 / max. See docs/BENCHMARKS.md,
# "Page speed: server-side rendering under load".
#
# The data goes in the way a person's would where the API can do it: the first admin through
# /auth/setup, the project's agent, the project and its 100 secrets through the REST API (with the
# session cookie). The rest is written straight into the database, one SQL statement each, with
# the columns the store writes: 999 more agents with the facts an agent's hello records
# (hostname, versions, last seen), which the API cannot set, and 200 finished deployments
# (6 events and 2 images each), which the API would only give through 200 real deploys.
#
#   scripts/bench-pages.sh [RATE] [DURATION]        e.g. scripts/bench-pages.sh 100 30s
#   BENCH_NO_BUILD=1 scripts/bench-pages.sh         reuse the last release build
#   BENCH_SERVER_BIN=/path/release/stagely-server   another build (its site beside it, ../site)
#   BENCH_PARTS="load tti"                          which measurements (default both)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

rate="${1:-100}"
duration="${2:-30s}"
OHA_VERSION=1.16.0
parts="${BENCH_PARTS:-load tti}"

# oha, pinned, from crates.io, in a tool cache beside the other builds (not on PATH).
oha="${STAGELY_TOOLS_DIR:-$HOME/.cache/stagely-tools}/oha-$OHA_VERSION/bin/oha"
if [[ " $parts " == *" load "* ]] && [ ! -x "$oha" ]; then
  say "installing oha $OHA_VERSION (a few minutes, once)"
  # With the system's OpenSSL rather than rustls (whose aws-lc takes long to build); it only
  # ever talks plain http to 127.0.0.1, but oha does not build without a TLS stack.
  if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then apt_install libssl-dev pkg-config; fi
  cargo install oha --version "$OHA_VERSION" --locked --no-default-features --features native-tls \
    --root "$(dirname "$(dirname "$oha")")"
fi
if ! command -v sqlite3 >/dev/null; then
  say "installing sqlite3 (to seed the benchmark's data)"
  apt_install sqlite3
fi

if [ -z "${BENCH_NO_BUILD:-}" ] && [ -z "${BENCH_SERVER_BIN:-}" ]; then
  say "building (cargo leptos build --release --split --precompress)"
  cargo leptos build --release --split --precompress >&2
fi

server_bin="${BENCH_SERVER_BIN:-$ROOT/target/release/stagely-server}"
site_root="$(cd "$(dirname "$server_bin")/../site" && pwd)"
data="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
STAGELY_DATA_DIR="$data" STAGELY_BIND="127.0.0.1:$port" STAGELY_SITE_ROOT="$site_root" \
  RUST_LOG=warn "$server_bin" 2>"$data/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do curl -fs "$url/healthz" >/dev/null && break; sleep 0.1; done

say "seeding: 1,000 agents, a project with 100 secrets and 200 deployments"
jar="$data/cookies"
curl -fs -c "$jar" -o /dev/null -H "Origin: $url" \
  --data "login=bench&password=bench-password-1&password_confirm=bench-password-1" "$url/auth/setup"
cookie="$(sed 's/^#HttpOnly_//' "$jar" | awk '!/^#/ && NF >= 7 { print $6 "=" $7 }')"
api() { # METHOD PATH JSON → the answer's body
  curl -fsS -X "$1" -H "Cookie: $cookie" -H "Origin: $url" -H "Content-Type: application/json" \
    --data "$3" "$url/api/v1$2"
}
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

agent_id="$(api POST /agents '{"name":"bench-host"}' | json_field id)"
project_id="$(api POST /projects "{\"name\":\"bench\",\"agent_id\":\"$agent_id\",\"path\":\"/srv/bench\"}" |
  json_field id)"
for i in $(seq 1 100); do
  if ((i % 4 == 0)); then scope='{"service":"web"}'; else scope='"global"'; fi
  api POST /secrets "{\"project_id\":\"$project_id\",\"key\":\"BENCH_SECRET_$i\",\"value\":\"value-$i-$RANDOM$RANDOM\",\"scope\":$scope}" >/dev/null
done

db="$data/stagely.db"
now_ms=$(($(date +%s) * 1000))
sqlite3 -bail "$db" <<SQL
.timeout 10000
-- A UUID-shaped id from random bytes, as the store's ids read back.
CREATE TEMP VIEW fresh AS SELECT lower(hex(randomblob(16))) AS h;
BEGIN;
UPDATE agents SET hostname = 'bench-host', os = 'linux', arch = 'x86_64',
  agent_version = '0.1.0', docker_version = '27.3.1', compose_version = '2.29.7',
  last_seen = $now_ms WHERE id = '$agent_id';
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 999),
  ids(i, h, t) AS (SELECT i, lower(hex(randomblob(16))), lower(hex(randomblob(32))) FROM n)
INSERT INTO agents (id, owner_id, name, token_hash, hostname, os, arch, agent_version,
  docker_version, compose_version, last_seen, created_at)
SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
    || substr(h, 18, 3) || '-' || substr(h, 21, 12),
  (SELECT id FROM users LIMIT 1), 'host-' || i, t, 'host-' || i || '.bench.internal', 'linux',
  'x86_64', '0.1.0', '27.3.1', '2.29.7', $now_ms - i * 1000, $now_ms - 86400000 + i
FROM ids;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200),
  ids(i, h, j) AS (SELECT i, lower(hex(randomblob(16))), lower(hex(randomblob(16))) FROM n)
INSERT INTO deployments (id, project_id, job_id, status, requested_by, message, created_at,
  updated_at, finished_at, kind, images, agent_id, queue_order)
SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
    || substr(h, 18, 3) || '-' || substr(h, 21, 12),
  '$project_id',
  substr(j, 1, 8) || '-' || substr(j, 9, 4) || '-4' || substr(j, 14, 3) || '-a'
    || substr(j, 18, 3) || '-' || substr(j, 21, 12),
  CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
  (SELECT id FROM users LIMIT 1),
  CASE WHEN i % 10 = 0 THEN 'docker compose up exited with status 1' END,
  $now_ms - i * 3600000, $now_ms - i * 3600000 + 20000, $now_ms - i * 3600000 + 20000,
  'deploy',
  CASE WHEN i % 10 = 0 THEN NULL ELSE
    '[{"service":"web","image":"registry.example.com/bench/web:' || i || '","image_id":"sha256:'
    || lower(hex(randomblob(32))) || '"},{"service":"db","image":"postgres:16","image_id":"sha256:'
    || lower(hex(randomblob(32))) || '"}]' END,
  '$agent_id',
  (SELECT COALESCE(MAX(queue_order), 0) FROM deployments) + 201 - i
FROM ids;
WITH RECURSIVE k(n, kind, body) AS (VALUES (0, 'status', 'queued'), (1, 'status', 'sent'),
  (2, 'step', 'docker compose pull'), (3, 'output', 'web Pulled'),
  (4, 'step', 'docker compose up -d --remove-orphans'), (5, 'status', 'succeeded'))
INSERT INTO deployment_events (deployment_id, at, kind, body)
SELECT d.id, d.created_at + k.n * 1000, k.kind, k.body FROM deployments d, k ORDER BY d.id, k.n;
COMMIT;
SQL
echo "agents: $(sqlite3 "$db" 'SELECT count(*) FROM agents'), secrets of the project:" \
  "$(sqlite3 "$db" "SELECT count(*) FROM secrets WHERE project_id = '$project_id'"), deployments:" \
  "$(sqlite3 "$db" "SELECT count(*) FROM deployments WHERE project_id = '$project_id'")" >&2

# One page, the answer checked once, then the load each way.
bench_page() { # NAME PATH MARKER
  local body="$data/page.html"
  curl -fsS -H "Cookie: $cookie" -o "$body" "$url$2"
  if ! grep -q "$3" "$body"; then
    echo "$1: the page does not show $3; is the session signed in?" >&2
    exit 1
  fi
  printf '%-9s %7d B of HTML\n' "$1" "$(stat -c %s "$body")"
  local mode
  for mode in keep-alive close; do
    local flags=()
    [ "$mode" = close ] && flags=(--disable-keepalive)
    "$oha" --no-tui --output-format json -q "$rate" -z "$duration" -c 16 --latency-correction \
      "${flags[@]}" -H "Cookie: $cookie" "$url$2" >"$data/oha.json"
    python3 - "$1" "$mode" "$data/oha.json" <<'PY'
import json, sys
name, mode, path = sys.argv[1:]
report = json.load(open(path))
summary, pct = report["summary"], report["latencyPercentiles"]
codes = report.get("statusCodeDistribution", {})
ok = sum(n for code, n in codes.items() if code.startswith("2"))
total = sum(codes.values())
print(f"{name:9} {mode:10} p50 {pct['p50'] * 1000:7.2f} ms   p99 {pct['p99'] * 1000:7.2f} ms   "
      f"max {summary['slowest'] * 1000:7.2f} ms   {summary['requestsPerSec']:6.1f} req/s   "
      f"{ok}/{total} answered 2xx")
PY
  done
}

echo "load average before measuring: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ " $parts " == *" load "* ]]; then
  say "SSR at $rate requests/s for $duration per page and mode (oha $OHA_VERSION)"
  bench_page Project "/projects/$project_id" 'BENCH_SECRET_100'
  bench_page Servers "/" 'host-999.bench.internal'
fi

if [[ " $parts " == *" tti "* ]]; then
  say "time to interactive in Chromium (median of ${TTI_RUNS:=5} loads, cold and warm cache)"
  node scripts/bench-pages-tti.mjs "$url" "$cookie" "$TTI_RUNS" \
    "Project (100 secrets, 200 deployments)=/projects/$project_id" "Servers (1,000 agents)=/"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ " $parts " == *" hold "* ]]; then
  # For profiling: keep the seeded server up until interrupted.
  echo "serving $url  cookie: $cookie  project: /projects/$project_id  server pid: $server" >&2
  wait "$server"
fi
