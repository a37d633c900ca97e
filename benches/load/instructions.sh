#!/usr/bin/env bash
# Instructions per forwarded request, mcp-edge against the Pingora floor, counted by callgrind:
# unlike req/s on a shared machine, this does not drift between runs (within 0.5% here).
# Each proxy runs under callgrind with counting off, is warmed up, then counted over SECONDS
# of wrk with 8 connections (counting switched on and off with callgrind_control); the count
# is divided by the requests wrk reports. Pass-through only: the upstream says ttlMs 0.
# usage: [BIN=target/release/mcp-edge] [FLOOR=target/release/examples/pingora_floor]
#        benches/load/instructions.sh [call|read] [SECONDS=5]
# Needs: valgrind and wrk (apt-get install -y valgrind wrk). Profiles are left in OUT
# (default a temporary directory, printed) for callgrind_annotate. valgrind hides SHA-NI from
# the CPU-feature check, so `read` (cache keys are SHA-256) overstates the hashing.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
MODE=${1:-call}; SECONDS_COUNTED=${2:-5}
BIN=${BIN:-target/release/mcp-edge}; FLOOR=${FLOOR:-target/release/examples/pingora_floor}
SCRIPT=benches/load/call.lua; [ "$MODE" = read ] && SCRIPT=benches/load/random-read.lua
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
scratch
UP=$(port); EDGE=$(port); PINGORA=$(port)
"$BIN" upstream --listen "127.0.0.1:$UP" --name bench --json --ttl-ms 0 2>"$DIR/upstream.log" & PIDS+=($!)
one_route_config "$DIR/edge.toml" "$EDGE" "$UP" "threads = 1"
# exec: so that $! is valgrind itself, the pid callgrind_control needs.
counted() { exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$1.%p" "${@:2}"; }
RUST_LOG=warn counted mcp-edge "$BIN" run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & EDGE_PID=$!; PIDS+=($!)
counted floor "$FLOOR" "127.0.0.1:$PINGORA" "127.0.0.1:$UP" 1 2>"$DIR/floor.log" & FLOOR_PID=$!; PIDS+=($!)
wait_port "$UP"; wait_port "$EDGE"; wait_port "$PINGORA"
for name in mcp-edge floor; do
  port=$EDGE; pid=$EDGE_PID
  [ $name = floor ] && { port=$PINGORA; pid=$FLOOR_PID; }
  url="http://127.0.0.1:$port/mcp"
  wrk -t1 -c8 -d3s -s $SCRIPT "$url" >/dev/null
  callgrind_control -i on $pid >/dev/null 2>&1
  requests=$(wrk -t1 -c8 -d"${SECONDS_COUNTED}s" -s $SCRIPT "$url" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  callgrind_control -d $pid >/dev/null 2>&1
  callgrind_control -i off $pid >/dev/null 2>&1
  total=$(grep -h '^summary' "$OUT/$name".*.1 | awk '{print $2}')
  printf '%-9s %s requests, %s instructions per request\n' $name "$requests" $((total / requests))
done
echo "profiles: $OUT"
