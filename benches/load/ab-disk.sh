#!/usr/bin/env bash
# Compares two builds of mcp-edge on disk-tier hits (the `disk` case of run.sh: 100 000 1 KiB
# entries, an 8 MiB memory tier, read at random after a restart). Two processes on two equally
# filled caches differ by up to 8% with the same binary, and the difference follows the cache
# directory; so each build serves each of two caches in turn, every run follows a run of
# nginx's fixed body, and each build's figure is its median ratio to that body.
# usage: [REPEAT=3] benches/load/ab-disk.sh BIN_A BIN_B [DURATION_SECONDS=5] [CONNECTIONS=64]
#   BIN_A, BIN_B: mcp-edge binaries that read the same disk format (BIN_A fills both caches).
# Needs: wrk and nginx (apt-get install -y wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
DURATION=${3:-5}
CONNECTIONS=${4:-64}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

UP=$(port); NGINX=$(port); PORTS=("$(port)" "$(port)")
"${SERVER[@]}" "$A" upstream --listen 127.0.0.1:$UP --name bench --json --ttl-ms 3600000 2>"$DIR/upstream.log" & PIDS+=($!)
start_nginx "$UP" "$NGINX"
wait_port "$UP"; wait_port "$NGINX"

SERVING=("" "")
serve() { # binary n: (re)start that binary on cache n
  if [ -n "${SERVING[$2]}" ]; then kill "${SERVING[$2]}"; wait "${SERVING[$2]}" 2>/dev/null || true; fi
  RUST_LOG=warn "${SERVER[@]}" "$1" run --config "$DIR/cache$2.toml" 2>>"$DIR/edge$2.log" & SERVING[$2]=$!
  PIDS+=($!)
  wait_port "${PORTS[$2]}"
}
for n in 0 1; do
  disk_config "$DIR/cache$n.toml" "${PORTS[$n]}" "" "$DIR/cache$n"
  serve "$A" $n
  fill "http://127.0.0.1:${PORTS[$n]}/mcp" 100000
done

rps() { sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p'; }
SCRIPT=benches/load/random-read.lua
export KEYS=100000
RESULTS="$DIR/results"
for order in "A B" "B A"; do
  read -r first second <<<"$order"
  declare -A BUILD=([A]="$A" [B]="$B")
  serve "${BUILD[$first]}" 0
  serve "${BUILD[$second]}" 1
  names=("$first" "$second")
  for n in 0 1; do warm_up "http://127.0.0.1:${PORTS[$n]}/mcp" $SCRIPT; done
  for _ in $(seq "$REPEAT"); do
    fixed=$(wrk_once "http://127.0.0.1:$NGINX/fixed" $SCRIPT | rps)
    for n in 0 1; do
      got=$(wrk_once "http://127.0.0.1:${PORTS[$n]}/mcp" $SCRIPT | rps)
      echo "${names[$n]} $got $fixed" | tee -a "$RESULTS" | sed "s/^/  run: cache $n, /"
    done
  done
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
ratios = {}
for line in open(sys.argv[1]):
    build, rps, fixed = line.split()
    ratios.setdefault(build, []).append(int(rps) / int(fixed))
for build, values in sorted(ratios.items()):
    print(f"{build}: ratio to nginx's fixed body, median {statistics.median(values):.3f} "
          f"(range {min(values):.3f}-{max(values):.3f}, {len(values)} runs)")
PY
