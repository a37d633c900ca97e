#!/usr/bin/env bash
# 10 000 idle server-to-client streams held through mcp-edge while 1 000 connections read
# cached resources at full load, on this 2-core machine. Prints the readers' throughput and
# latency, whether every stream lived through it, and mcp-edge's memory and descriptors.
# usage: benches/load/streams.sh [STREAMS=10000] [ACTIVE=1000] [SECONDS=20]
# Needs wrk (apt-get install -y wrk) and a descriptor limit above 2 x STREAMS + ACTIVE in the
# proxy (each stream holds a client and an upstream connection): the script raises its soft
# limit as far as the hard one allows; the systemd unit sets LimitNOFILE=262144 (packaging/).
set -euo pipefail
cd "$(dirname "$0")/../.."
STREAMS=${1:-10000}; ACTIVE=${2:-1000}; SECONDS_RUN=${3:-20}
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=target/release/mcp-edge
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
scratch
raise_descriptor_limit 100000
echo "descriptor limit: $(ulimit -n)"
UP=$(port); EDGE=$(port)
"$BIN" upstream --listen "127.0.0.1:$UP" --name streams 2>"$DIR/upstream.log" & PIDS+=($!)
one_route_config "$DIR/edge.toml" "$EDGE" "$UP" "max_streams_per_client = 0"
RUST_LOG=warn "$BIN" run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & EDGE_PID=$!; PIDS+=("$EDGE_PID")
wait_port "$UP"; wait_port "$EDGE"
echo "== $STREAMS idle streams, then $ACTIVE connections reading cached resources for ${SECONDS_RUN}s"
python3 benches/load/streams.py "http://127.0.0.1:$EDGE/mcp" "$STREAMS" $((SECONDS_RUN + 10)) & STREAMS_PID=$!
for _ in $(seq 600); do
  [ "$(find "/proc/$EDGE_PID/fd" -mindepth 1 | wc -l)" -ge "$STREAMS" ] && break; sleep 0.2
done
echo "mcp-edge with the streams open: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$EDGE_PID/status), $(find "/proc/$EDGE_PID/fd" -mindepth 1 | wc -l) descriptors"
wrk -t2 -c"$ACTIVE" -d"${SECONDS_RUN}s" --latency -s benches/load/read.lua "http://127.0.0.1:$EDGE/mcp" | grep -E 'Requests/sec|Latency|99%|50%|Non-2xx|Socket errors' || true
echo "mcp-edge after the load: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$EDGE_PID/status)"
wait $STREAMS_PID
