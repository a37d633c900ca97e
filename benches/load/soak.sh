#!/usr/bin/env bash
# A soak: MINUTES (default 10) of mixed traffic through one mcp-edge, sampling its memory every
# 30 s: cache hits over 10 000 keys (wrk), misses of an uncacheable route, 200 idle streams, and
# a SIGHUP reload every minute. Prints the samples and the growth between the second and the
# last sample (the first minute fills the cache). One command, not in CI:
#   benches/load/soak.sh [MINUTES]
# Needs wrk (apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
MINUTES=${1:-10}
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=target/release/mcp-edge
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
scratch
raise_descriptor_limit 65536
UP=$(port); NOCACHE=$(port); EDGE=$(port)
"$BIN" upstream --listen "127.0.0.1:$UP" --name soak --json 2>/dev/null & PIDS+=($!)
"$BIN" upstream --listen "127.0.0.1:$NOCACHE" --name soak --json --ttl-ms 0 2>/dev/null & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
max_streams_per_client = 0
[admin]
listen = ""
[cache]
memory = "64MiB"
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
[[route]]
path = "/nocache"
upstreams = ["http://127.0.0.1:$NOCACHE/mcp"]
TOML
# info: the reloads are counted from the log; the access log is left out (target mcp_edge::access).
RUST_LOG=info,pingora=warn,mcp_edge::access=warn "$BIN" run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & EDGE_PID=$!; PIDS+=("$EDGE_PID")
wait_port "$UP"; wait_port "$NOCACHE"; wait_port "$EDGE"
SECONDS_TOTAL=$((MINUTES * 60))
python3 benches/load/streams.py "http://127.0.0.1:$EDGE/mcp" 200 "$SECONDS_TOTAL" >"$DIR/streams.log" 2>&1 & STREAMS_PID=$!; PIDS+=("$STREAMS_PID")
KEYS=10000 wrk -t1 -c32 -d"${SECONDS_TOTAL}s" -s benches/load/random-read.lua "http://127.0.0.1:$EDGE/mcp" >"$DIR/hits.log" 2>&1 & PIDS+=($!)
wrk -t1 -c8 -d"${SECONDS_TOTAL}s" -s benches/load/read.lua "http://127.0.0.1:$EDGE/nocache" >"$DIR/misses.log" 2>&1 & PIDS+=($!)
rss() { awk '/VmRSS/ {print $2}' /proc/$EDGE_PID/status; }
samples=()
for t in $(seq 30 30 "$SECONDS_TOTAL"); do
  sleep 30
  [ $((t % 60)) -eq 0 ] && kill -HUP $EDGE_PID
  samples+=("$(rss)")
  echo "t=${t}s rss=${samples[-1]} kB fds=$(find "/proc/$EDGE_PID/fd" -mindepth 1 | wc -l)"
done
sleep 2
echo "hits:   $(grep -E 'Requests/sec|Non-2xx' "$DIR/hits.log" | tr -s ' ' | tr '\n' ' ')"
echo "misses: $(grep -E 'Requests/sec|Non-2xx' "$DIR/misses.log" | tr -s ' ' | tr '\n' ' ')"
echo "reloads: $(grep -c 'configuration reloaded' "$DIR/edge.log" || true); ERROR lines in the log: $(grep -c ' ERROR ' "$DIR/edge.log" || true)"
grep ' ERROR ' "$DIR/edge.log" | head -3
wait "$STREAMS_PID" 2>/dev/null || true; cat "$DIR/streams.log"
if [ "${#samples[@]}" -ge 3 ]; then
  echo "memory from the second sample to the last: ${samples[1]} kB -> ${samples[-1]} kB ($(( (samples[-1] - samples[1]) * 100 / samples[1] ))%)"
fi
