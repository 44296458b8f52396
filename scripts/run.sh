#!/usr/bin/env bash
# Builds Stagely in release mode and runs it locally: the server on SQLite in ./data and one
# agent registered against it, so the dashboard shows a connected server. Safe to run again:
# the data directory and the local agent's token are kept between runs. Ctrl-C stops both.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust_tools

say "building (cargo leptos build --release --split --precompress)"
cargo leptos build --release --split --precompress

export STAGELY_DATA_DIR="${STAGELY_DATA_DIR:-$ROOT/data}"
export STAGELY_BIND="${STAGELY_BIND:-127.0.0.1:3000}"
export STAGELY_SITE_ROOT="${STAGELY_SITE_ROOT:-$ROOT/target/site}"
# The local agent keeps its private state beside the server's data (the agent creates it 0700),
# not in /var/lib/stagely-agent where an agent installed on this host keeps its own.
export STAGELY_STATE_DIR="${STAGELY_STATE_DIR:-$STAGELY_DATA_DIR/agent-state}"
# Cargo builds where CARGO_TARGET_DIR says, if set (cargo-leptos still writes the site under
# target/ in the workspace).
server="${CARGO_TARGET_DIR:-$ROOT/target}/release/stagely-server"
agent="${CARGO_TARGET_DIR:-$ROOT/target}/release/stagely-agent"
cargo build --release -p agent
# What /install.sh hands to new hosts (Servers → Add server).
build_static_agent
build_static_agent_aarch64

# The local agent's token lives next to the database it is registered in.
token_file="$STAGELY_DATA_DIR/local-agent.token"
if [ ! -f "$STAGELY_DATA_DIR/stagely.db" ]; then
  rm -f "$token_file"
fi
if [ ! -s "$token_file" ]; then
  mkdir -p "$STAGELY_DATA_DIR"
  say "registering the local agent"
  (umask 077 && "$server" agents add "$(hostname)" > "$token_file")
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$server" &
pids+=($!)
url="http://$STAGELY_BIND"
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/${STAGELY_BIND%:*}/${STAGELY_BIND##*:}") 2>/dev/null; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "stagely-server exited; see the log above" >&2; exit 1; fi
  sleep 0.1
done

"$agent" --server "$url" --token-file "$token_file" &
pids+=($!)

say "Stagely is running: open $url (Ctrl-C stops the server and the agent)"
wait -n "${pids[@]}"
