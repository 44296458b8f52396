#!/usr/bin/env bash
# Fuzzes the code that reads what others wrote, each target for SECONDS (default 60):
#   compose_reader     agent::compose::load on compose files with includes
#   override_renderer  agent::override_file::render_deploy read back with serde_yaml (values,
#                      `$`, owner labels)
#   protocol_decoder   shared::{ServerToAgent, AgentToServer} from any bytes, and back
#   ansi_parser        shared::ansi::parse on any log line
#   redactor           a secret in container output, encoded, through agent::redact, the
#                      runner's line reader and agent::wire's cuts: no form of it gets out
# Installs, once, what it needs (a nightly toolchain and cargo-fuzz). Starts from the seeds in
# fuzz/corpus/<target>/ plus what earlier runs found (fuzz/target/corpus/<target>/, not
# committed), prints per target the executions, exec/s, coverage (libFuzzer's final cov and ft)
# and corpus size, and exits non-zero when a target crashed; the input that did it is in
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS]
#   scripts/fuzz.sh 300        # the run quoted in docs/BENCHMARKS.md
#
# Not part of scripts/test.sh: minutes of CPU per target is not a test.
source "$(dirname "$0")/lib.sh"
cd "$ROOT/fuzz"

SECONDS_PER_TARGET="${1:-60}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS]   (whole seconds per target, default 60)" >&2
  exit 2
fi
TARGETS=(compose_reader override_renderer protocol_decoder ansi_parser redactor)

ensure_fuzz_tools() {
  if ! command -v cc >/dev/null; then
    say "installing a C compiler (libFuzzer is built from C++)"
    apt_install build-essential
  fi
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (a few minutes, once)"
    cargo install cargo-fuzz --locked
  fi
}

# The last value of `key: N` in a libFuzzer log (`cov`, `ft`, `corp`), or `stat::key: N`.
last_number() {
  grep -oE "$1:? +[0-9]+" "$2" | tail -n 1 | grep -oE '[0-9]+$' || echo "?"
}

ensure_fuzz_tools
say "building the fuzz targets (cargo +nightly fuzz build)"
cargo +nightly fuzz build
# Run what was just built: `cargo fuzz run` would rebuild first, and every target of one run
# should fuzz the same code.
BIN_DIR="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

mkdir -p target/logs
summary=()
crashed=0
for target in "${TARGETS[@]}"; do
  say "fuzzing $target for ${SECONDS_PER_TARGET}s"
  mkdir -p "target/corpus/$target" "artifacts/$target"
  log="target/logs/$target.log"
  status=0
  # New inputs go to the first directory; the committed seeds are only read.
  "$BIN_DIR/$target" "target/corpus/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$SECONDS_PER_TARGET" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?

  execs="$(last_number 'stat::number_of_executed_units' "$log")"
  rate="$(last_number 'stat::average_exec_per_sec' "$log")"
  cov="$(last_number 'cov' "$log")"
  ft="$(last_number 'ft' "$log")"
  corpus="$(last_number 'corp' "$log")"
  if [ "$status" -eq 0 ]; then
    found="nothing"
  else
    crashed=1
    artifact="$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | awk '{print $NF}' || true)"
    if [ -n "$artifact" ]; then
      found="CRASH (exit $status): fuzz/$artifact"
    else
      found="FAILED (exit $status) without an input: see fuzz/$log"
    fi
    # The reason, without the input itself (it may be long or binary).
    grep -m 3 -E "^(==[0-9]+==ERROR|thread '.*' panicked|SUMMARY)" "$log" >&2 || true
  fi
  summary+=("$(printf '%-18s %12s %8s %6s %7s %7s  %s' \
    "$target" "$execs" "$rate" "$cov" "$ft" "$corpus" "$found")")
done

echo
printf '%-18s %12s %8s %6s %7s %7s  %s\n' target executions exec/s cov ft corpus found
printf '%s\n' "${summary[@]}"
echo "(${SECONDS_PER_TARGET}s per target; logs in fuzz/target/logs/)"
exit "$crashed"
