#!/usr/bin/env bash
# Instructions per memory-tier hit, counted by callgrind, for each build given (e.g. a baseline
# and a candidate): each runs under callgrind with counting off, its cache is filled with KEYS
# (200) 1 KiB entries and warmed, then counted over 5 s of wrk with 8 connections. Deterministic
# where req/s on a shared machine is not. SDK_META=1: an SDK client's request (random-read.lua).
# EXTRA_CONFIG: more lines for each build's configuration (e.g. a [tracing] table, see
# `TRACES=1`); TRACES=1: a [tracing] table exporting every hit's span to a local OTLP receiver
# (tests/peers/python/otlp_receiver.py, from .venv), its export thread counted too.
# AUTH=1: every request carries a bearer token (signed by tests/peers/python/auth_server.py) and
# each build runs twice, the route without and with a [route.auth] checking it: what checking
# tokens adds to a hit, in one run.
# usage: [SDK_META=1] [TRACES=1] [AUTH=1] benches/load/hit-instructions.sh BIN [BIN...]; profiles are left in OUT.
# Needs: valgrind and wrk.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
scratch
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
UP=$(port)
"$1" upstream --listen "127.0.0.1:$UP" --name bench --json --ttl-ms 3600000 2>"$DIR/up.log" & PIDS+=($!)
wait_port "$UP"
export KEYS=200
if [ "${TRACES:-0}" = 1 ]; then
  OTLP=$(port)
  .venv/bin/python tests/peers/python/otlp_receiver.py "$OTLP" >/dev/null 2>"$DIR/otlp.log" & PIDS+=($!)
  wait_port "$OTLP"
  EXTRA_CONFIG=$(printf '[tracing]\notlp = "http://127.0.0.1:%s"' "$OTLP")
fi
ROUTE_CONFIGS=("")
if [ "${AUTH:-0}" = 1 ]; then
  start_issuer
  ROUTE_CONFIGS=("" "$AUTH_TABLE")
fi
i=0
for bin in "$@"; do
for route_config in "${ROUTE_CONFIGS[@]}"; do
  i=$((i+1)); EDGE=$(port)
  ROUTE_EXTRA=$route_config one_route_config "$DIR/e$i.toml" "$EDGE" "$UP" "threads = 1" "${EXTRA_CONFIG:-}"
  label=$bin; [ "${AUTH:-0}" = 1 ] && label="$bin auth=$(grep -q 'route.auth' "$DIR/e$i.toml" && echo on || echo off)"
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/b$i.%p" "$bin" run --config "$DIR/e$i.toml" 2>"$DIR/e$i.log" & PID=$!; PIDS+=("$PID")
  for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$EDGE") 2>/dev/null && break; sleep 0.2; done
  url="http://127.0.0.1:$EDGE/mcp"
  SEQUENTIAL=1 wrk -t1 -c1 -d4s -s benches/load/random-read.lua "$url" >/dev/null
  wrk -t1 -c8 -d3s -s benches/load/random-read.lua "$url" >/dev/null
  callgrind_control -i on "$PID" >/dev/null 2>&1
  requests=$(wrk -t1 -c8 -d5s -s benches/load/random-read.lua "$url" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  callgrind_control -d "$PID" >/dev/null 2>&1
  callgrind_control -i off "$PID" >/dev/null 2>&1
  total=$(grep -h '^summary' "$OUT"/b"$i".*.1 | awk '{print $2}')
  echo "$label SDK_META=${SDK_META:-0}: $requests requests, $((total / requests)) instructions per hit"
  kill "$PID"
done
done
echo "profiles: $OUT (callgrind_annotate --inclusive=no FILE)"
