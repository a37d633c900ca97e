#!/usr/bin/env bash
# The shared tier (`[cache.shared]`) on one real redis-server:
# 1. a new node's first minute: an established node A serves a zipf trace for WARM seconds,
#    then a new node B joins and serves the trace for RUN_SECONDS (the same distribution, other
#    requests: another seed), with the shared tier and (another new node, same seed) without it:
#    hit ratio per 10 s and upstream reads;
# 2. the cost of a shared-tier hit against a local disk hit, in one node and one run: a node
#    with a 1 MiB memory tier and a disk tier reads COUNT documents that A fetched (shared
#    hits), then reads them again (disk hits, the memory tier holding few); the medians come
#    from its access log (time inside mcp-edge, by tier).
# usage: [CLIENTS=32] [RUN_SECONDS=60] [WARM=30] [COUNT=3000] benches/load/shared.sh
# Needs: python3, redis-server.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
CLIENTS=${CLIENTS:-32}; SECONDS_RUN=${RUN_SECONDS:-60}; WARM=${WARM:-30}; COUNT=${COUNT:-3000}
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=${BIN:-target/release/mcp-edge}
scratch
raise_descriptor_limit 4096
REDIS=$(port); UP=$(port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$DIR/redis.log" 2>&1 & PIDS+=($!)
"$BIN" upstream --listen "127.0.0.1:$UP" --name shared --ttl-ms 600000 --latency-ms 20-50 2>"$DIR/upstream.log" & PIDS+=($!)
wait_port "$REDIS"; wait_port "$UP"

node() { # name shared(true|false) [cache lines]: starts a node; sets EDGE, EDGE_PID
  local admin shared=""
  EDGE=$(port); admin=$(port)
  [ "$2" = true ] && shared=$'[cache.shared]\nurl = "redis://127.0.0.1:'"$REDIS"'"'
  cat > "$DIR/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
threads = 2
[admin]
listen = "127.0.0.1:$admin"
[cache]
${3:-}
$shared
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
  RUST_LOG=${LOG:-warn} "$BIN" run --config "$DIR/$1.toml" 2>"$DIR/$1.log" & EDGE_PID=$!; PIDS+=("$EDGE_PID")
  wait_port "$EDGE"; wait_port "$admin"
  sleep 0.3 # the subscription
}
trace() { # seconds seed
  python3 benches/load/shared.py run "http://127.0.0.1:$EDGE/mcp" --upstream "http://127.0.0.1:$UP/mcp" \
    --clients "$CLIENTS" --seconds "$1" --seed "$2"
}

echo "== a new node's first ${SECONDS_RUN} s: $CLIENTS clients, zipf(1.1) over 20000 public documents, upstream 20-50 ms"
node a true
A_EDGE=$EDGE
trace "$WARM" 7 > "$DIR/a.json"
printf '%-26s %s\n' "established node A (warm)" "$(cat "$DIR/a.json")"
node b true
trace "$SECONDS_RUN" 8 > "$DIR/b.json"
kill "$EDGE_PID"
printf '%-26s %s\n' "new node, shared tier" "$(cat "$DIR/b.json")"
node c false
trace "$SECONDS_RUN" 8 > "$DIR/c.json"
kill "$EDGE_PID"
printf '%-26s %s\n' "new node, no shared tier" "$(cat "$DIR/c.json")"
python3 - "$DIR/c.json" "$DIR/b.json" <<'PY'
import json, sys
alone, shared = (json.load(open(p)) for p in sys.argv[1:])
print(f"hit ratio {alone['hit_ratio']} -> {shared['hit_ratio']}; first 10 s {alone['hit_ratio_per_10s'][0]} -> {shared['hit_ratio_per_10s'][0]};"
      f" upstream reads {alone['upstream_reads']} -> {shared['upstream_reads']}"
      f" ({shared['upstream_reads'] / max(1, alone['upstream_reads']) - 1:+.0%}); p50 {alone['p50_ms']} -> {shared['p50_ms']} ms")
PY

echo "== a shared-tier hit against a local disk hit: $COUNT documents of node A, one node, one run"
FIRST=1000000
# Node A fetches them (into Redis), on many connections (each is a 20-50 ms miss).
python3 benches/load/shared.py walk "http://127.0.0.1:$A_EDGE/mcp" --first $FIRST --count "$COUNT" --clients 64
sleep 0.5
LOG="warn,mcp_edge::access=info" node d true $'memory = "1MiB"\ndisk_path = "'"$DIR/disk"$'"\ndisk_size = "256MiB"'
python3 benches/load/shared.py walk "http://127.0.0.1:$EDGE/mcp" --first $FIRST --count "$COUNT" --clients 1
sleep 1 # the disk tier's flusher
python3 benches/load/shared.py walk "http://127.0.0.1:$EDGE/mcp" --first $FIRST --count "$COUNT" --clients 1
python3 - "$DIR/d.log" <<'PY'
import re, statistics, sys
by_tier = {}
for line in open(sys.argv[1]):
    match = re.search(r'cache="HIT" tier="(\w+)" duration_ms=([\d.]+)', line)
    if match:
        by_tier.setdefault(match.group(1), []).append(float(match.group(2)))
for tier in ("memory", "disk", "shared"):
    times = sorted(by_tier.get(tier, []))
    if times:
        print(f"{tier:7} hits {len(times):6}  median {statistics.median(times) * 1000:7.1f} µs"
              f"  p90 {times[int(len(times) * 0.9)] * 1000:7.1f} µs")
disk, shared = (statistics.median(by_tier.get(t, [0])) for t in ("disk", "shared"))
if disk and shared:
    print(f"a shared-tier hit costs {shared / disk:.1f}x a disk hit (medians)")
PY
