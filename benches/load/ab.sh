#!/usr/bin/env bash
# Compares two builds of mcp-edge side by side, runs interleaved so a drift of this noisy
# machine favours neither: memory-tier hits over KEYS (default 1000) 1 KiB entries, or
# pass-through (every read reaches the upstream). Each build runs its own process (one worker,
# pinned beside the upstream), each round measures A then B (B then A every other round), and
# the rounds' B/A ratios say how often B won. Unlike ab-disk.sh the builds need not share a
# cache format: each fills its own memory tier.
# call: uncached tools/call (no cache path at all).
# SDK_META=1: hits of requests with the _meta an SDK client sends (see random-read.lua).
# AUTH=1: every request carries a bearer token (tests/peers/python/auth_server.py signs it) and
# B's route checks it ([route.auth]) while A's does not: with BIN_A = BIN_B, what checking
# tokens costs.
# usage: [ROUNDS=8] [KEYS=1000] [SDK_META=1] [AUTH=1] benches/load/ab.sh hits|pass|call BIN_A BIN_B [DURATION_SECONDS=3] [CONNECTIONS=64]
# Needs: wrk (apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
[ $# -ge 3 ] || { sed -n 2,10p "$0" >&2; exit 2; }
MODE=$1; A=$(realpath "$2")
# shellcheck disable=SC2034 # read as ${!bin_var}
B=$(realpath "$3")
DURATION=${4:-3}; CONNECTIONS=${5:-64}; ROUNDS=${ROUNDS:-8}; export KEYS=${KEYS:-1000}
scratch
UP=$(port); EDGE_A=$(port); EDGE_B=$(port)
TTL=3600000; [ "$MODE" = hits ] || TTL=0
"${SERVER[@]}" "$A" upstream --listen "127.0.0.1:$UP" --name bench --json --ttl-ms "$TTL" 2>"$DIR/upstream.log" & PIDS+=($!)
AUTH_TABLE=""
[ "${AUTH:-0}" = 1 ] && start_issuer
for side in A B; do
  port_var=EDGE_$side
  route_extra=""; [ "$side" = B ] && route_extra=$AUTH_TABLE
  ROUTE_EXTRA=$route_extra one_route_config "$DIR/$side.toml" "${!port_var}" "$UP" "threads = $WORKERS"
  bin_var=$side
  RUST_LOG=warn "${SERVER[@]}" "${!bin_var}" run --config "$DIR/$side.toml" 2>"$DIR/$side.log" & PIDS+=($!)
done
wait_port "$UP"; wait_port "$EDGE_A"; wait_port "$EDGE_B"
SCRIPT=benches/load/random-read.lua
[ "$MODE" = call ] && SCRIPT=benches/load/call.lua
if [ "$MODE" = hits ]; then
  fill "http://127.0.0.1:$EDGE_A/mcp" "$KEYS"
  fill "http://127.0.0.1:$EDGE_B/mcp" "$KEYS"
fi
rps() { sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p'; }
RESULTS="$DIR/results"
declare -A URL=([A]="http://127.0.0.1:$EDGE_A/mcp" [B]="http://127.0.0.1:$EDGE_B/mcp")
for name in A B; do warm_up "${URL[$name]}" $SCRIPT; done
for round in $(seq "$ROUNDS"); do
  order="A B"; [ $((round % 2)) = 0 ] && order="B A"
  line="round $round:"
  for name in $order; do
    got=$(wrk_once "${URL[$name]}" $SCRIPT | rps)
    echo "$round $name $got" >>"$RESULTS"
    line+=" $name $got"
  done
  echo "  $line"
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
rps, by_round = {}, {}
for line in open(sys.argv[1]):
    round_, build, value = line.split()
    rps.setdefault(build, []).append(int(value))
    by_round.setdefault(round_, {})[build] = int(value)
for build, values in sorted(rps.items()):
    print(f"{build}: median {statistics.median(values):.0f} req/s (range {min(values)}-{max(values)})")
b_over_a = [r["B"] / r["A"] for r in by_round.values()]
print(f"B/A by round: median {statistics.median(b_over_a):.3f}, B faster in {sum(x > 1 for x in b_over_a)} of {len(b_over_a)} rounds")
PY
