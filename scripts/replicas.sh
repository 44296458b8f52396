#!/usr/bin/env bash
# Runs three Stagely replicas on the local PostgreSQL behind HAProxy (deploy/haproxy.cfg), all
# on loopback ports, without Compose: the README's "Running several replicas", on one machine.
#
#   scripts/replicas.sh            # http://127.0.0.1:3100 (the balancer); replicas on 3101-3103
#
# Settings (environment):
#   DATABASE_URL   the shared database [default: postgres://postgres:postgres@127.0.0.1:5432/stagely_replicas,
#                  created when missing]
#   STAGELY_LB_PORT / STAGELY_REPLICA_PORTS   [default: 3100 / "3101 3102 3103"]
#   STAGELY_DATA_DIR   where the master key and the logs are kept [default: ./data-replicas]
# Ctrl-C stops everything; each replica is sent SIGTERM and drains (its agents move to the others).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust_tools
command -v haproxy >/dev/null || apt_install haproxy
command -v psql >/dev/null || apt_install postgresql-client

lb_port="${STAGELY_LB_PORT:-3100}"
read -r -a replica_ports <<< "${STAGELY_REPLICA_PORTS:-3101 3102 3103}"
[ "${#replica_ports[@]}" -eq 3 ] || { echo "STAGELY_REPLICA_PORTS needs three ports" >&2; exit 1; }
data_dir="${STAGELY_DATA_DIR:-$ROOT/data-replicas}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/stagely_replicas}"

say "building (cargo leptos build --release --split)"
cargo leptos build --release --split
server="$ROOT/target/release/stagely-server"

# The shared database, created once.
admin_url="${DATABASE_URL%/*}/postgres"
database="${DATABASE_URL##*/}"
if ! psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  say "creating the database $database"
  psql "$admin_url" -qc "CREATE DATABASE \"$database\""
fi

# One master key for every replica (they decrypt each other's secrets), kept private.
mkdir -p "$data_dir"
chmod 700 "$data_dir"
key_file="$data_dir/master.key"
if [ ! -s "$key_file" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$key_file")
fi
export APP_MASTER_KEY_FILE="$key_file"
# Every replica tells browsers and agents the balancer's address, never its own.
export STAGELY_PUBLIC_URL="http://127.0.0.1:$lb_port"
# The client's address comes from the balancer's X-Forwarded-For (sign-in throttling).
export STAGELY_TRUSTED_PROXIES="127.0.0.1"
export STAGELY_SITE_ROOT="${STAGELY_SITE_ROOT:-$ROOT/target/site}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for i in 0 1 2; do
  port="${replica_ports[$i]}"
  mkdir -p "$data_dir/r$((i + 1))"
  STAGELY_BIND="127.0.0.1:$port" STAGELY_DATA_DIR="$data_dir/r$((i + 1))" \
    "$server" serve 2> "$data_dir/r$((i + 1)).log" &
  pids+=($!)
  say "replica r$((i + 1)) on 127.0.0.1:$port (log: $data_dir/r$((i + 1)).log)"
done

STAGELY_LB_BIND="127.0.0.1:$lb_port" \
STAGELY_REPLICA_1="127.0.0.1:${replica_ports[0]}" \
STAGELY_REPLICA_2="127.0.0.1:${replica_ports[1]}" \
STAGELY_REPLICA_3="127.0.0.1:${replica_ports[2]}" \
  haproxy -db -f "$ROOT/deploy/haproxy.cfg" &
pids+=($!)

say "Stagely at $STAGELY_PUBLIC_URL (three replicas behind HAProxy); Ctrl-C stops"
say "first user: DATABASE_URL=$DATABASE_URL $server users add <login> --admin --password-file <file>"
wait -n
