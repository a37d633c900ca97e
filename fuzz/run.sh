#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20: the short run CI makes). A long run is
# the same with a larger number, e.g. `fuzz/run.sh 3600`; crashes land in fuzz/artifacts/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable toolchain (no sanitizer).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-20}
for target in jsonrpc keys sse headers; do
  echo "fuzz: $target for ${SECONDS_EACH}s"
  cargo fuzz run "$target" --sanitizer none -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|Done|==|SUMMARY|thread .* panicked)' || true
  # A crash leaves an artifact and a non-zero exit in cargo fuzz: fail loudly.
  if ls artifacts/"$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $target found a crash: fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
