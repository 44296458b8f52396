#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (`--checks all`): a real
# stagely-server on SQLite in a throw-away data directory, one user with an API token, and
# every operation called with data generated from the document, valid and invalid. It fails on
# a 5xx, and on every answer the document does not predict: a refused valid body, an accepted
# invalid one, an undocumented status or a response off its schema. The stateful phase follows
# the document's links (create an agent, then a project on it, then read, change and delete
# it), so the calls past a create reach real rows instead of 404s. scripts/schemathesis.toml
# holds the settings and the few exemptions, each with its reason.
#
#   scripts/fuzz-api.sh            the full campaign: every phase, 50 examples per operation,
#                                  then fuzzing and links again until 5 minutes are spent
#   scripts/fuzz-api.sh --short    what scripts/test.sh runs: 10 examples per operation, one
#                                  worker and a fixed seed (the same requests every run), under
#                                  a minute
#   scripts/fuzz-api.sh N          the same with N examples per operation
#
# Installs, once, what it needs: schemathesis (pinned) in a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/stagely/. Builds the server with cargo (debug) unless
# STAGELY_SERVER names a binary. Keeps the server's log and schemathesis' reports in
# target/fuzz-api/ and prints a summary; exits non-zero when any check failed.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=50
# The full campaign keeps fuzzing and following links until this many seconds are spent.
MAX_TIME=300
SEED=""
case "${1:-}" in
  "") ;;
  --short)
    EXAMPLES=10
    MAX_TIME=""
    SEED=15
    ;;
  *)
    if ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
      echo "usage: scripts/fuzz-api.sh [--short | EXAMPLES_PER_OPERATION]" >&2
      exit 2
    fi
    EXAMPLES="$1"
    ;;
esac

# schemathesis from PyPI in its own virtualenv (Debian's python3 refuses a system-wide pip).
ensure_schemathesis() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/stagely/schemathesis-$SCHEMATHESIS_VERSION"
  ST="$venv/bin/st"
  if [ "$("$ST" --version 2>/dev/null | awk '{print $NF}')" = "$SCHEMATHESIS_VERSION" ]; then
    return
  fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt_install python3-venv
  fi
  say "installing schemathesis $SCHEMATHESIS_VERSION (from PyPI, once)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
  "$ST" --version
}

# A TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_schemathesis

server="${STAGELY_SERVER:-}"
if [ -z "$server" ]; then
  say "building stagely-server (cargo build -p server)"
  cargo build --quiet -p server --bin stagely-server
  server="${CARGO_TARGET_DIR:-$ROOT/target}/debug/stagely-server"
fi

out="$ROOT/target/fuzz-api"
rm -rf "$out"
mkdir -p "$out"
data="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

port="$(free_port)"
export STAGELY_DATA_DIR="$data" STAGELY_BIND="127.0.0.1:$port"
export STAGELY_PUBLIC_URL="http://127.0.0.1:$port"
unset DATABASE_URL APP_MASTER_KEY APP_MASTER_KEY_PREVIOUS
"$server" users add fuzz 2>/dev/null
token="$("$server" tokens create fuzz 2>/dev/null)"

say "starting stagely-server on $STAGELY_PUBLIC_URL (log: target/fuzz-api/server.log)"
RUST_LOG="${RUST_LOG:-warn}" "$server" >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "stagely-server exited; see target/fuzz-api/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

args=(
  --checks all
  --max-examples "$EXAMPLES"
  --header "Authorization: Bearer $token"
  --report junit
  --report-dir "$out"
  --no-color
)
if [ -n "$MAX_TIME" ]; then
  args+=(--max-time "$MAX_TIME")
fi
if [ -n "$SEED" ]; then
  # One worker and a fixed seed: the same requests in the same order every run.
  args+=(--seed "$SEED" --workers 1)
else
  # Nothing learnt from earlier runs: each campaign starts from the document alone.
  args+=(--generation-database none)
fi

say "schemathesis $SCHEMATHESIS_VERSION: --checks all, $EXAMPLES examples per operation${SEED:+, seed $SEED}${MAX_TIME:+, ${MAX_TIME}s}"
status=0
(cd "$out" && "$ST" --config-file "$ROOT/scripts/schemathesis.toml" \
  run "$STAGELY_PUBLIC_URL/api/v1/openapi.json" "${args[@]}") |
  tee "$out/schemathesis.log" || status=$?

if grep -q "panicked" "$out/server.log"; then
  echo "the server panicked; see target/fuzz-api/server.log" >&2
  status=1
fi
# schemathesis' own summary, in short: operations, links followed, requests, failures.
summary() { grep -E "$1" "$out/schemathesis.log" | head -n 1 | sed -E 's/^ +//' || true; }
echo
echo "API fuzzing: $EXAMPLES examples per operation${SEED:+, seed $SEED}${MAX_TIME:+, ${MAX_TIME}s}"
echo "  $(summary '^ +Operations:')"
echo "  $(summary '^ +API Links:')"
echo "  requests: $(grep -A1 '^Test cases:' "$out/schemathesis.log" | tail -n 1 | sed -E 's/^ +//')"
if [ "$status" -eq 0 ]; then
  echo "  no failures"
else
  echo "  FAILED: see target/fuzz-api/schemathesis.log" >&2
fi
exit "$status"
