#!/usr/bin/env bash
# Compares two builds of mcp-edge on disk-tier hits (the `disk` case of run.sh: 100 000 1 KiB
# entries, an 8 MiB memory tier, read at random after a restart). Both builds serve the same
# filled cache, one at a time, restarted for each run: two processes on two equally filled
# caches differed by up to 8% with the same binary. Each round runs nginx's fixed body, then
# each build (the order reversed every other round, so a drift within a round favours
# neither); each build's figure is its median ratio to that round's fixed body, and the
# rounds' B/A ratios say how often B won.
# usage: [ROUNDS=8] benches/load/ab-disk.sh BIN_A BIN_B [DURATION_SECONDS=5] [CONNECTIONS=64]
#   BIN_A, BIN_B: mcp-edge binaries that read the same disk format (BIN_A fills the cache).
# Needs: wrk and nginx (apt-get install -y wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
[ $# -ge 2 ] || { sed -n 2,10p "$0" >&2; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
DURATION=${3:-5}
CONNECTIONS=${4:-64}
ROUNDS=${ROUNDS:-8}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

UP=$(port); NGINX=$(port); EDGE=$(port)
"${SERVER[@]}" "$A" upstream --listen "127.0.0.1:$UP" --name bench --json --ttl-ms 3600000 2>"$DIR/upstream.log" & PIDS+=($!)
start_nginx "$UP" "$NGINX"
wait_port "$UP"; wait_port "$NGINX"
disk_config "$DIR/cache.toml" "$EDGE" "" "$DIR/cache"

SERVING=""
serve() { # binary: (re)start that binary on the cache
  stop_serving
  RUST_LOG=warn "${SERVER[@]}" "$1" run --config "$DIR/cache.toml" 2>>"$DIR/edge.log" & SERVING=$!
  PIDS+=($!)
  wait_port "$EDGE"
}
stop_serving() {
  if [ -n "$SERVING" ]; then kill "$SERVING"; wait "$SERVING" 2>/dev/null || true; SERVING=""; fi
}
serve "$A"
fill "http://127.0.0.1:$EDGE/mcp" 100000

rps() { sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p'; }
SCRIPT=benches/load/random-read.lua
export KEYS=100000
RESULTS="$DIR/results"
declare -A BUILD=([A]="$A" [B]="$B")
for round in $(seq "$ROUNDS"); do
  order="A B"; [ $((round % 2)) = 0 ] && order="B A"
  fixed=$(wrk_once "http://127.0.0.1:$NGINX/fixed" $SCRIPT | rps)
  line="round $round: fixed $fixed"
  for name in $order; do
    serve "${BUILD[$name]}"
    warm_up "http://127.0.0.1:$EDGE/mcp" $SCRIPT
    got=$(wrk_once "http://127.0.0.1:$EDGE/mcp" $SCRIPT | rps)
    echo "$round $name $got $fixed" >>"$RESULTS"
    line+=", $name $got"
  done
  echo "  $line"
done
stop_serving
python3 - "$RESULTS" <<'PY'
import statistics, sys
ratios, by_round = {}, {}
for line in open(sys.argv[1]):
    round_, build, rps, fixed = line.split()
    ratios.setdefault(build, []).append(int(rps) / int(fixed))
    by_round.setdefault(round_, {})[build] = int(rps)
for build, values in sorted(ratios.items()):
    print(f"{build}: ratio to nginx's fixed body, median {statistics.median(values):.3f} "
          f"(range {min(values):.3f}-{max(values):.3f}, {len(values)} runs)")
b_over_a = [r["B"] / r["A"] for r in by_round.values() if "A" in r and "B" in r]
print(f"B/A by round: median {statistics.median(b_over_a):.3f}, "
      f"B faster in {sum(x > 1 for x in b_over_a)} of {len(b_over_a)} rounds")
PY
