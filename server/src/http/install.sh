#!/bin/sh
# Installs the Stagely agent on this host and registers it with the Stagely server at
# __STAGELY_URL__ (served by that server at /install.sh).
#
#   curl -fsSL __STAGELY_URL__/install.sh | STAGELY_JOIN_TOKEN=<join token> sh
#   wget -qO- __STAGELY_URL__/install.sh | STAGELY_JOIN_TOKEN=<join token> sh
#
# The join token comes in the environment: an argument list is visible to every user of the
# host (ps, /proc), so no token is ever passed as an argument by this script either. (`--token
# <join token>` is still accepted for scripts written before, at that cost.) Or it comes in a
# file only root can read, named by STAGELY_JOIN_TOKEN_FILE (the cloud-init file the server
# offers writes one): the file is deleted once the host has joined.
#
#   curl -fsSL __STAGELY_URL__/install.sh | STAGELY_JOIN_TOKEN_FILE=/run/stagely-join-token sh
#
# Downloads the static agent binary from the server, checks its SHA-256 against the sum the
# server publishes, installs it, trades the single-use join token for the agent's own token
# (kept in a 0600 file), writes the agent's configuration and, where systemd runs, installs and
# starts the stagely-agent service. Running it again upgrades the agent in place and keeps its
# registration. `--uninstall` removes everything it installed.
#
# Over https every download is https only, TLS 1.2 or later, and no redirect may leave https
# (curl, or GNU wget; BusyBox wget cannot be held to that and is refused). Plain http is used
# only for a server on this host (127.0.0.0/8, ::1, localhost), or anywhere when
# STAGELY_ALLOW_INSECURE_HTTP=1 says the network is trusted: the join token, the agent's token
# and the secrets it deploys would otherwise cross the network in the clear.
set -eu

SERVER_URL="${STAGELY_SERVER_URL:-__STAGELY_URL__}"
BIN_DIR="${STAGELY_BIN_DIR:-/usr/local/bin}"
CONFIG_DIR="${STAGELY_CONFIG_DIR:-/etc/stagely}"
STATE_DIR="${STAGELY_STATE_DIR:-/var/lib/stagely-agent}"
UNIT_FILE="${STAGELY_UNIT_FILE:-/etc/systemd/system/stagely-agent.service}"

say() { printf 'stagely: %s\n' "$*"; }
fail() {
  printf 'stagely: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<USAGE
usage: STAGELY_JOIN_TOKEN=<join token> install.sh  install (or upgrade) and register this host
       STAGELY_JOIN_TOKEN_FILE=<file> install.sh   the same, the token read from a root-only file
                                                   (deleted once the host has joined)
       install.sh                                  upgrade an agent that is already registered
       install.sh --uninstall                      stop and remove the agent, its config and state
options: --server <url> (default $SERVER_URL)
USAGE
}

# Kept in a shell variable and handed only to `stagely-agent join`, not to every command run here.
token="${STAGELY_JOIN_TOKEN:-}"
unset STAGELY_JOIN_TOKEN
join_token_file="${STAGELY_JOIN_TOKEN_FILE:-}"
unset STAGELY_JOIN_TOKEN_FILE
action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --token) [ $# -ge 2 ] || fail "--token needs a value"; token="$2"; shift 2 ;;
    --token=*) token="${1#--token=}"; shift ;;
    --server) [ $# -ge 2 ] || fail "--server needs a value"; SERVER_URL="$2"; shift 2 ;;
    --server=*) SERVER_URL="${1#--server=}"; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown option: $1" ;;
  esac
done
SERVER_URL="${SERVER_URL%/}"

if [ -n "$join_token_file" ]; then
  [ -z "$token" ] || fail "a join token is given twice: keep STAGELY_JOIN_TOKEN_FILE or the token itself, not both"
  [ -f "$join_token_file" ] && [ -r "$join_token_file" ] ||
    fail "cannot read the join token file $join_token_file (STAGELY_JOIN_TOKEN_FILE)"
  # `read` is built into the shell: the token is on no command line.
  read -r token <"$join_token_file" || true
  [ -n "$token" ] || fail "the join token file $join_token_file is empty"
fi

allow_insecure_http="${STAGELY_ALLOW_INSECURE_HTTP:-0}"
case "$allow_insecure_http" in
  1 | true) allow_insecure_http=1 ;;
  0 | false | "") allow_insecure_http=0 ;;
  *) fail "STAGELY_ALLOW_INSECURE_HTTP=$allow_insecure_http: use 1 or 0" ;;
esac

# is_loopback <host>: localhost, 127.0.0.0/8 or ::1.
is_loopback() {
  case "$(printf '%s' "$1" | tr 'A-Z' 'a-z')" in
    localhost | localhost. | ::1) return 0 ;;
    *[!0-9.]*) return 1 ;;
    127.*.*.*) return 0 ;;
    *) return 1 ;;
  esac
}

# Sets $secure (1 for https) and refuses plain http to another host without the opt-in.
check_server_url() {
  case "$SERVER_URL" in
    https://?*) secure=1; return 0 ;;
    http://?*) secure=0 ;;
    *) fail "the server URL $SERVER_URL must start with https:// (or http:// for a server on this host)" ;;
  esac
  authority="${SERVER_URL#http://}"
  authority="${authority%%/*}"
  authority="${authority##*@}"
  case "$authority" in
    \[*) host="${authority#\[}"; host="${host%%]*}" ;;
    *) host="${authority%%:*}" ;;
  esac
  if is_loopback "$host"; then return 0; fi
  if [ "$allow_insecure_http" = 1 ]; then
    say "warning: $SERVER_URL is plain http: tokens and secrets cross the network in the clear (STAGELY_ALLOW_INSECURE_HTTP=1)"
    return 0
  fi
  fail "refusing plain http to another host ($SERVER_URL): the join token, the agent's token and the secrets it deploys would cross the network in the clear. Use the server's https:// URL (put a TLS-terminating proxy such as Caddy or nginx in front of Stagely), or, on a network you trust, run the command again with STAGELY_ALLOW_INSECURE_HTTP=1"
}

has_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# fetch <url> <file>: curl or wget, failing on HTTP errors; for an https server https only,
# TLS 1.2 or later, and no redirect away from https.
fetch() {
  if command -v curl >/dev/null 2>&1; then
    if [ "$secure" = 1 ]; then
      curl --proto '=https' --proto-redir '=https' --tlsv1.2 -fsSL "$1" -o "$2"
    else
      curl -fsSL "$1" -o "$2"
    fi
  elif command -v wget >/dev/null 2>&1; then
    if [ "$secure" = 1 ]; then
      # Only GNU wget can be held to https; it follows no redirect at all here.
      wget --version 2>/dev/null | grep 'GNU Wget' >/dev/null ||
        fail "this wget cannot be limited to https (BusyBox?): install curl or GNU wget"
      wget -q --https-only --secure-protocol=TLSv1_2 --max-redirect=0 -O "$2" "$1"
    else
      wget -q -O "$2" "$1"
    fi
  else
    fail "neither curl nor wget is installed"
  fi
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d ' ' -f 1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d ' ' -f 1
  else
    fail "neither sha256sum nor shasum is installed: cannot verify the download"
  fi
}

detect_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo x86_64 ;;
    aarch64 | arm64) echo aarch64 ;;
    *) fail "unsupported CPU architecture $(uname -m) (the agent is built for x86_64 and aarch64)" ;;
  esac
}

uninstall() {
  if has_systemd; then
    systemctl disable --now stagely-agent >/dev/null 2>&1 || true
  fi
  rm -f "$UNIT_FILE"
  if has_systemd; then systemctl daemon-reload || true; fi
  rm -f "$BIN_DIR/stagely-agent"
  rm -rf "$CONFIG_DIR" "$STATE_DIR"
  say "the agent is removed from this host (revoke it in the dashboard to forget it there too)"
}

install_agent() {
  check_server_url
  arch="$(detect_arch)"
  # Minimal systems may lack /tmp: fall back to beside the state directory.
  tmp_root="${TMPDIR:-/tmp}"
  [ -d "$tmp_root" ] || tmp_root="$(dirname "$STATE_DIR")"
  mkdir -p "$tmp_root"
  tmp="$(mktemp -d "$tmp_root/stagely-install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT INT TERM

  say "downloading the agent for $arch from $SERVER_URL"
  fetch "$SERVER_URL/downloads/stagely-agent-$arch" "$tmp/stagely-agent" ||
    fail "could not download $SERVER_URL/downloads/stagely-agent-$arch"
  fetch "$SERVER_URL/downloads/stagely-agent-$arch.sha256" "$tmp/sum" ||
    fail "could not download the checksum of the agent"
  expected="$(cut -d ' ' -f 1 <"$tmp/sum")"
  actual="$(sha256_of "$tmp/stagely-agent")"
  [ -n "$expected" ] && [ "$expected" = "$actual" ] ||
    fail "the download is corrupt: SHA-256 $actual, the server publishes $expected"
  chmod 0755 "$tmp/stagely-agent"

  mkdir -p "$BIN_DIR" "$CONFIG_DIR" "$STATE_DIR"
  chmod 0700 "$STATE_DIR"
  token_file="$STATE_DIR/agent.token"
  if [ -n "$token" ]; then
    # A new registration (also for a host whose old agent was revoked): the old token is
    # replaced only once the server has accepted the new one.
    # The join token goes through the environment, not the agent's command line; the agent
    # writes its own token (0600) in place of the old one only once the server accepted it.
    STAGELY_JOIN_TOKEN="$token" STAGELY_ALLOW_INSECURE_HTTP="$allow_insecure_http" \
      "$tmp/stagely-agent" join --server "$SERVER_URL" --token-file "$token_file" ||
      fail "could not register this host (the reason is above)"
    # Spent: nothing is left to protect, but nothing needs it either.
    if [ -n "$join_token_file" ]; then rm -f "$join_token_file"; fi
  elif [ -s "$token_file" ]; then
    say "upgrading the agent in place (its registration is kept)"
  else
    fail "no join token: create one in the dashboard (Servers → Add server) and run the command it shows (STAGELY_JOIN_TOKEN=<join token>)"
  fi
  # Replacing the file (rather than writing into it) is safe while the old agent still runs.
  mv -f "$tmp/stagely-agent" "$BIN_DIR/stagely-agent"

  umask 077
  cat >"$CONFIG_DIR/agent.env" <<ENV
STAGELY_SERVER_URL=$SERVER_URL
STAGELY_AGENT_TOKEN_FILE=$token_file
STAGELY_STATE_DIR=$STATE_DIR
ENV
  if [ "$allow_insecure_http" = 1 ]; then
    echo "STAGELY_ALLOW_INSECURE_HTTP=1" >>"$CONFIG_DIR/agent.env"
  fi

  if has_systemd; then
    cat >"$UNIT_FILE" <<UNIT
[Unit]
Description=Stagely agent
Wants=network-online.target
After=network-online.target docker.service

[Service]
EnvironmentFile=$CONFIG_DIR/agent.env
ExecStart=$BIN_DIR/stagely-agent
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
    chmod 0644 "$UNIT_FILE"
    systemctl daemon-reload
    systemctl enable stagely-agent >/dev/null
    systemctl restart stagely-agent
    say "installed and started (systemctl status stagely-agent; journalctl -u stagely-agent)"
  else
    say "installed; systemd is not running here, so start the agent yourself:"
    say "  set -a; . $CONFIG_DIR/agent.env; set +a; $BIN_DIR/stagely-agent"
  fi
}

case "$action" in
  install) install_agent ;;
  uninstall) uninstall ;;
esac
