#!/usr/bin/env bash
# Load benchmark: resources/read POSTs sent direct to the demo upstream, through nginx (plain
# reverse proxy, the baseline) and through mcp-edge, in one run on this machine.
# usage: [REPEAT=3] [MILLION=1000000] [BIN=target/release/mcp-edge] benches/load/run.sh [pass|floor|hits|disk|all] [DURATION_SECONDS=5] [CONNECTIONS=64]
#   pass: pass-through (direct vs nginx vs mcp-edge); floor: only mcp-edge against the Pingora
#   floor, uncached tools/call and resources/read (REPEAT=30 2 for a figure whose interval is
#   narrow enough to quote); hits: cache hits of 1 KiB resources vs nginx returning a fixed
#   1 KiB body, as the cache grows, and from the disk tier (disk: only that).
# Needs: wrk and nginx (apt-get install -y wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
MODE=${1:-all}
DURATION=${2:-5}
CONNECTIONS=${3:-64}
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "needs $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
# BIN=path/to/mcp-edge measures another build (e.g. an earlier commit's) against the same baselines.
if [ -n "${BIN:-}" ]; then
  cargo build --release -p mcp-edge -q --example pingora_floor
else
  cargo build --release -p mcp-edge -q --bin mcp-edge --example pingora_floor
  BIN=target/release/mcp-edge
fi
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

UP=$(port); EDGE=$(port); NGINX=$(port); DISK_EDGE=$(port)
UP_NOCACHE=$(port); FLOOR=$(port); DISK_ADMIN=$(port)
# Entries live an hour: filling a million of them takes minutes.
"${SERVER[@]}" $BIN upstream --listen 127.0.0.1:$UP --name bench --json --ttl-ms 3600000 2>"$DIR/upstream.log" & PIDS+=($!)
# The pass-through upstream says ttlMs 0: its answers are never cached.
"${SERVER[@]}" $BIN upstream --listen 127.0.0.1:$UP_NOCACHE --name bench --json --ttl-ms 0 2>>"$DIR/upstream.log" & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
threads = $WORKERS
[admin]
listen = ""
[cache]
memory = "2GiB"
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
[[route]]
path = "/nocache"
upstreams = ["http://127.0.0.1:$UP_NOCACHE/mcp"]
TOML
disk_config "$DIR/disk.toml" "$DISK_EDGE" "127.0.0.1:$DISK_ADMIN" "$DIR/cache"
RUST_LOG=warn "${SERVER[@]}" $BIN run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & PIDS+=($!)
RUST_LOG=warn "${SERVER[@]}" $BIN run --config "$DIR/disk.toml" 2>"$DIR/disk.log" & DISK_PID=$!; PIDS+=($DISK_PID)
start_nginx "$UP_NOCACHE" "$NGINX"
"${SERVER[@]}" target/release/examples/pingora_floor 127.0.0.1:$FLOOR 127.0.0.1:$UP_NOCACHE "$WORKERS" \
  2>"$DIR/floor.log" & PIDS+=($!)
wait_port $FLOOR; wait_port $UP; wait_port $UP_NOCACHE; wait_port $EDGE; wait_port $NGINX; wait_port $DISK_EDGE

measure() { # name url VAR [script]: the median of REPEAT runs (this machine is noisy)
  local script=${4:-benches/load/read.lua}
  warm_up "$2" "$script"
  local lines=""
  for _ in $(seq "$REPEAT"); do
    lines+="$(wrk_once "$2" "$script")"$'\n'
  done
  local line
  line=$(printf '%s' "$lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "$1" "$line"
  eval "$(echo "${line% rps_range=*}" | sed 's/ /;/g; s/\([a-z0-9]*\)=/\U\1_'"$3"'=/g')"
}
# name url VAR: like measure, but each run of the target follows a run of nginx's fixed body, so
# both medians come from the same stretch of this noisy machine; prints the ratio of the two.
measure_vs_fixed() {
  local script=benches/load/random-read.lua fixed_url="http://127.0.0.1:$NGINX/fixed"
  warm_up "$2" "$script"
  local fixed_lines="" lines=""
  for _ in $(seq "$REPEAT"); do
    fixed_lines+="$(wrk_once "$fixed_url" "$script")"$'\n'
    lines+="$(wrk_once "$2" "$script")"$'\n'
  done
  report_vs_fixed "$1" "$lines" "$fixed_lines" "$3"
}
# name lines fixed_lines VAR: prints the medians of a target's runs and of nginx's fixed body's
# runs beside them, and their ratio.
report_vs_fixed() {
  local line fixed_line lines=$2 fixed_lines=$3
  line=$(printf '%s' "$lines" | python3 benches/load/median.py)
  fixed_line=$(printf '%s' "$fixed_lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "$1" "$line"
  printf '%-40s %s\n' "  nginx fixed body, same stretch" "$fixed_line"
  local rps=${line#rps=} fixed=${fixed_line#rps=}
  echo "  vs nginx fixed: $(ratio "${rps%% *}" "${fixed%% *}")"
  eval "RPS_$4=${rps%% *}"
}
# label url_floor url_edge VAR [script]: the Pingora floor and mcp-edge measured in turns (floor
# first in odd rounds, mcp-edge first in even ones), so a drift of this noisy machine favours
# neither; prints both medians and the median of the rounds' mcp-edge/floor ratios.
measure_vs_floor() {
  local script=${5:-benches/load/read.lua} floor_lines="" edge_lines="" ratios="" f e
  warm_up "$2" "$script"; warm_up "$3" "$script"
  for round in $(seq "$REPEAT"); do
    if [ $((round % 2)) = 1 ]; then
      f=$(wrk_once "$2" "$script"); e=$(wrk_once "$3" "$script")
    else
      e=$(wrk_once "$3" "$script"); f=$(wrk_once "$2" "$script")
    fi
    floor_lines+="$f"$'\n'; edge_lines+="$e"$'\n'
    ratios+="$(rps_of "$e") $(rps_of "$f")"$'\n'
  done
  printf '%-40s %s\n' "pingora floor, $1" "$(printf '%s' "$floor_lines" | python3 benches/load/median.py)"
  local line
  line=$(printf '%s' "$edge_lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "mcp-edge, $1" "$line"
  eval "$(echo "${line% rps_range=*}" | sed 's/ /;/g; s/\([a-z0-9]*\)=/\U\1_'"$4"'=/g')"
  printf '%s' "$ratios" | python3 benches/load/ratio_median.py
}
rps_of() { local rest=${1#*rps=}; echo "${rest%% *}"; }
# Uncached resources/read (sets RPS_EDGE) and tools/call (RPS_CALL_EDGE) against the floor. An
# uncached tools/call takes no cache path at all (no lookup, no coalescing, no capture).
compare_with_floor() {
  measure_vs_floor "resources/read" "http://127.0.0.1:$FLOOR/mcp" "http://127.0.0.1:$EDGE/nocache" EDGE
  measure_vs_floor "tools/call" "http://127.0.0.1:$FLOOR/mcp" "http://127.0.0.1:$EDGE/nocache" CALL_EDGE \
    benches/load/call.lua
}
tier_split() { # which tier the disk edge's hits came from (its counters start at its restart)
  curl -s "http://127.0.0.1:$DISK_ADMIN/metrics" | python3 -c '
import re, sys
hits = dict(re.findall(r"mcp_cache_operations_total\{operation=\"lookup\",result=\"hit\",tier=\"(\w+)\"\} (\d+)", sys.stdin.read()))
print("  hits served from disk:", hits.get("disk", 0), "from memory:", hits.get("memory", 0))'
}

if [ "$MODE" = pass ] || [ "$MODE" = all ]; then
  echo "== pass-through: resources/read, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  # ttlMs 0 upstream: nothing is cached, every request goes through.
  measure "direct to upstream" "http://127.0.0.1:$UP_NOCACHE/mcp" DIRECT
  measure "nginx reverse proxy" "http://127.0.0.1:$NGINX/mcp_nocache" NGINX
  # The Pingora floor and mcp-edge in turns (see measure_vs_floor): their ratio is the figure.
  compare_with_floor
  echo "mcp-edge / nginx req/s (resources/read): $(ratio "$RPS_EDGE" "$RPS_NGINX")"
  python3 -c "import sys; d,e,f,g=map(float,sys.argv[1:]); print(f'added latency vs direct: p50 {e-d:+.3f} ms, p99 {g-f:+.3f} ms')" \
    "$P50_DIRECT" "$P50_EDGE" "$P99_DIRECT" "$P99_EDGE"
  # At full load a proxy's added latency is mostly its queue (64 connections / its req/s); paced
  # (each connection pauses after every answer, ~10 k req/s in all) it is the latency it adds.
  echo "-- paced: each connection pauses ${PAUSE_MS:=5} ms after every answer"
  export PAUSE_MS
  measure "direct to upstream, paced" "http://127.0.0.1:$UP_NOCACHE/mcp" PACED_DIRECT
  measure "nginx reverse proxy, paced" "http://127.0.0.1:$NGINX/mcp_nocache" PACED_NGINX
  measure "pingora-proxy, no logic, paced" "http://127.0.0.1:$FLOOR/mcp" PACED_FLOOR
  measure "mcp-edge (pass-through), paced" "http://127.0.0.1:$EDGE/nocache" PACED_EDGE
  unset PAUSE_MS
  python3 -c "import sys; d,n,f,e=map(float,sys.argv[1:]); print(f'paced p99 added over direct: nginx {n-d:+.3f} ms, Pingora floor {f-d:+.3f} ms, mcp-edge {e-d:+.3f} ms')" \
    "$P99_PACED_DIRECT" "$P99_PACED_NGINX" "$P99_PACED_FLOOR" "$P99_PACED_EDGE"
fi

if [ "$MODE" = floor ]; then
  echo "== mcp-edge against the Pingora floor: $CONNECTIONS connections, ${REPEAT}x${DURATION}s rounds, $WORKERS proxy workers, PIN=$PIN"
  compare_with_floor
fi

if [ "$MODE" = hits ] || [ "$MODE" = all ]; then
  echo "== cache hits: 1 KiB resources/read, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  # nginx's fixed body is driven by the same wrk script as the hits (nginx ignores the body),
  # so the client costs the same; it is measured beside every hit figure (measure_vs_fixed).
  for keys in 1 1000 100000 ${MILLION:-1000000}; do
    fill "http://127.0.0.1:$EDGE/mcp" $keys
    before=$(upstream_reads)
    KEYS=$keys measure_vs_fixed "mcp-edge hits, $keys entries (memory)" "http://127.0.0.1:$EDGE/mcp" "HITS$keys"
    echo "  misses during the run (upstream reads): $(( $(upstream_reads) - before ))"
  done
  GZIP=1 KEYS=1 measure_vs_fixed "mcp-edge gzip hits, 1 entry (pre-compressed)" "http://127.0.0.1:$EDGE/mcp" GZIP
fi

if [ "$MODE" = hits ] || [ "$MODE" = disk ] || [ "$MODE" = all ]; then
  echo "== disk tier: 1 KiB resources/read after a restart, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians)"
  fill "http://127.0.0.1:$DISK_EDGE/mcp" 100000
  kill "$DISK_PID"; wait "$DISK_PID" 2>/dev/null || true
  RUST_LOG=warn "${SERVER[@]}" $BIN run --config "$DIR/disk.toml" 2>>"$DIR/disk.log" & DISK_PID=$!; PIDS+=($DISK_PID)
  wait_port $DISK_EDGE
  KEYS=100000 measure_vs_fixed "mcp-edge hits, 100000 entries, after restart (8 MiB memory, rest on disk)" \
    "http://127.0.0.1:$DISK_EDGE/mcp" DISK
  tier_split
  # The same cache restarted REPEAT times with a memory tier that holds it all: each time the
  # first run after the restart, no warm-up (each entry comes from disk once, then from
  # memory), beside a run of nginx's fixed body.
  sed 's/^memory = "8MiB"/memory = "1GiB"/' "$DIR/disk.toml" > "$DIR/disk-warm.toml"
  warm_lines="" fixed_lines=""
  for _ in $(seq "$REPEAT"); do
    kill "$DISK_PID"; wait "$DISK_PID" 2>/dev/null || true
    fixed_lines+="$(KEYS=100000 wrk_once "http://127.0.0.1:$NGINX/fixed" benches/load/random-read.lua)"$'\n'
    RUST_LOG=warn "${SERVER[@]}" $BIN run --config "$DIR/disk-warm.toml" 2>>"$DIR/disk.log" & DISK_PID=$!; PIDS+=($!)
    wait_port $DISK_EDGE
    warm_lines+="$(KEYS=100000 wrk_once "http://127.0.0.1:$DISK_EDGE/mcp" benches/load/random-read.lua)"$'\n'
  done
  report_vs_fixed "mcp-edge, first ${DURATION}s after a restart (1 GiB memory)" "$warm_lines" "$fixed_lines" WARM
  tier_split
fi
