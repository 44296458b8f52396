# Shared by scripts/run.sh and scripts/test.sh: install, once, the tools that building Stagely
# needs. Every step checks first and does nothing when the tool is already there.
# shellcheck shell=bash

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Keep in step with the `wasm-bindgen` pin in Cargo.toml.
WASM_BINDGEN_VERSION=0.2.130
CARGO_LEPTOS_VERSION=0.3.10
CARGO_DENY_VERSION=0.20.2
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The busybox `FROM scratch` image the tests build (`agent::testing::test_image`), tagged IMAGE,
# its build context written to DIR (for the benchmarks; the caller removes both).
build_busybox_image() { # IMAGE DIR
  mkdir -p "$2"
  cp "$(command -v busybox || echo /bin/busybox)" "$2/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' \
    >"$2/Dockerfile"
  docker build -q -t "$1" "$2" >/dev/null
}

# `FROM scratch` + Debian's HAProxy and the libraries it links (a proxy in front of a service,
# as in production; no image can be pulled here). The entry point is haproxy itself.
build_haproxy_image() { # IMAGE DIR
  mkdir -p "$2"
  cp /usr/sbin/haproxy "$2/haproxy"
  local lib
  for lib in $(ldd /usr/sbin/haproxy | grep -o '/[^ ]*'); do
    mkdir -p "$2$(dirname "$lib")"
    cp -L "$lib" "$2$lib"
  done
  printf 'FROM scratch\nCOPY . /\nENTRYPOINT ["/haproxy"]\n' >"$2/Dockerfile"
  docker build -q -t "$1" "$2" >/dev/null
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The Rust side of the build: the wasm32 target, cargo-leptos, and the wasm-bindgen CLI that
# matches the crate version exactly. cargo-leptos would download the last two from GitHub,
# which is unreachable here, so they are built from crates.io instead (cargo-leptos takes
# ~22 minutes on 2 cores, once).
ensure_rust_tools() {
  if ! command -v cc >/dev/null; then
    say "installing a C compiler (SQLite and ring are built from C)"
    apt_install build-essential
  fi
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 20 minutes, once)"
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
    # Not --locked: one dependency in its lock file is no longer on crates.io.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
  ensure_node_tools
}

# The static agents that servers hand to new hosts (`/downloads/stagely-agent-<arch>`): musl, so
# they run on any Linux without glibc. x86_64: musl-gcc builds ring's C parts. aarch64: a cross
# build with Debian's aarch64 GCC (ring's C and assembly; the linker, against the musl CRT objects
# and libc.a that rustup's aarch64-unknown-linux-musl target ships). qemu-user-static runs the
# result in the test command.
AGENT_TARGET=x86_64-unknown-linux-musl
AGENT_TARGET_AARCH64=aarch64-unknown-linux-musl
build_static_agent() {
  ensure_rust_target "$AGENT_TARGET"
  if ! command -v musl-gcc >/dev/null; then
    say "installing musl-tools (the C compiler for the static agent)"
    apt_install musl-tools
  fi
  say "building the static agent (cargo build --profile agent-static --target $AGENT_TARGET)"
  CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --profile agent-static --target "$AGENT_TARGET" -p agent --bin stagely-agent
  publish_static_agent "$AGENT_TARGET" x86_64
}

build_static_agent_aarch64() {
  ensure_rust_target "$AGENT_TARGET_AARCH64"
  if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    say "installing gcc-aarch64-linux-gnu (the C compiler and linker for the aarch64 agent)"
    apt_install gcc-aarch64-linux-gnu
  fi
  say "building the static aarch64 agent (cargo build --profile agent-static --target $AGENT_TARGET_AARCH64)"
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    cargo build --profile agent-static --target "$AGENT_TARGET_AARCH64" -p agent --bin stagely-agent
  publish_static_agent "$AGENT_TARGET_AARCH64" aarch64
}

ensure_rust_target() {
  if ! rustup target list --installed | grep -qx "$1"; then
    say "adding the $1 target"
    rustup target add "$1"
  fi
}

# Copies a built agent to target/downloads/stagely-agent-<arch> (the server's default
# STAGELY_DOWNLOADS_DIR when run from the workspace), wherever CARGO_TARGET_DIR put it.
publish_static_agent() {
  local built="${CARGO_TARGET_DIR:-$ROOT/target}/$1/agent-static/stagely-agent"
  mkdir -p "$ROOT/target/downloads"
  install -m 0755 "$built" "$ROOT/target/downloads/stagely-agent-$2"
}

# wasm-opt (binaryen from npm; Debian's wasm-opt 108 silently breaks hydration) and Playwright.
ensure_node_tools() {
  if ! command -v npm >/dev/null; then
    say "installing Node.js and npm"
    apt_install nodejs npm
  fi
  if ! (cd "$ROOT" && npm ls --depth=0 >/dev/null 2>&1); then
    say "installing the workspace's npm packages (binaryen, Playwright)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# cargo-deny, pinned like the other cargo tools (about 10 minutes on 2 cores, once).
ensure_cargo_deny() {
  if [ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DENY_VERSION" ]; then
    say "installing cargo-deny $CARGO_DENY_VERSION (about 10 minutes, once)"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
  fi
}

# `cargo deny check` (advisories, bans, licenses, sources; see deny.toml), against a snapshot
# of the RustSec advisory database kept beside the repository (advisories are never fetched;
# crates missing from Cargo's cache are, from the registry). The snapshot is plain
# files (see its SNAPSHOT file); cargo-deny reads a git repository, so it gets a throw-away one.
# STAGELY_ADVISORY_DB names the snapshot; by default the first of ../shared/advisory-db (beside
# this checkout) and /work/shared/advisory-db that exists.
cargo_deny_check() {
  local snapshot="${STAGELY_ADVISORY_DB:-}"
  if [ -z "$snapshot" ]; then
    for candidate in "$ROOT/../shared/advisory-db" /work/shared/advisory-db; do
      if [ -f "$candidate/SNAPSHOT" ] || [ -d "$candidate/crates" ]; then
        snapshot="$candidate"
        break
      fi
    done
  fi
  if [ -z "$snapshot" ] || [ ! -d "$snapshot/crates" ]; then
    echo "No RustSec advisory database snapshot found: set STAGELY_ADVISORY_DB to one (a copy of" >&2
    echo "github.com/rustsec/advisory-db), or put it at $ROOT/../shared/advisory-db." >&2
    return 1
  fi
  # cargo-deny reads the metadata of every crate in Cargo.lock, those of other platforms too
  # (a build downloads only this one's): fetched from the registry first, as committed (a
  # no-op once they are in Cargo's cache).
  cargo fetch --locked
  local home
  home="$(mktemp -d)"
  # deny.toml reads the databases from $STAGELY_ADVISORY_DB_HOME, each in the directory
  # cargo-deny derives from its URL (this name belongs to the pinned cargo-deny version).
  local db="$home/advisory-db-3157b0e258782691"
  cp -r "$snapshot" "$db"
  (cd "$db" && git init -q && git add -A &&
    git -c user.name=stagely -c user.email=stagely@localhost commit -qm "snapshot: $(head -c 200 SNAPSHOT 2>/dev/null || echo unknown)")
  local status=0
  # --frozen: Cargo.lock as committed, and nothing fetched (crates or advisories).
  STAGELY_ADVISORY_DB_HOME="$home" cargo deny --frozen check || status=$?
  rm -rf "$home"
  return "$status"
}
