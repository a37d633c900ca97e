#!/usr/bin/env bash
# 10 000 idle server-to-client streams held through mcp-edge while 1 000 connections read
# cached resources at full load, on this 2-core machine. Prints the readers' throughput and
# latency, whether every stream lived through it, and mcp-edge's memory and descriptors.
# usage: benches/load/streams.sh [STREAMS=10000] [ACTIVE=1000] [SECONDS=20]
# Needs wrk (apt-get install -y wrk) and a descriptor limit above 3 x STREAMS: as root this
# script raises its own (ulimit -n 100000); the systemd unit sets LimitNOFILE (packaging/).
set -euo pipefail
cd "$(dirname "$0")/../.."
STREAMS=${1:-10000}; ACTIVE=${2:-1000}; SECONDS_RUN=${3:-20}
ulimit -n 100000
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=target/release/mcp-edge
DIR=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; exit 1; }
UP=$(port); EDGE=$(port)
$BIN upstream --listen 127.0.0.1:$UP --name streams 2>"$DIR/upstream.log" & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
max_streams_per_client = 0
[admin]
listen = ""
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
RUST_LOG=warn $BIN run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & EDGE_PID=$!; PIDS+=($EDGE_PID)
wait_port $UP; wait_port $EDGE
echo "== $STREAMS idle streams, then $ACTIVE connections reading cached resources for ${SECONDS_RUN}s"
python3 benches/load/streams.py "http://127.0.0.1:$EDGE/mcp" "$STREAMS" $((SECONDS_RUN + 10)) & STREAMS_PID=$!
for _ in $(seq 600); do
  [ "$(ls /proc/$EDGE_PID/fd | wc -l)" -ge "$STREAMS" ] && break; sleep 0.2
done
echo "mcp-edge with the streams open: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$EDGE_PID/status), $(ls /proc/$EDGE_PID/fd | wc -l) descriptors"
wrk -t2 -c"$ACTIVE" -d"${SECONDS_RUN}s" --latency -s benches/load/read.lua "http://127.0.0.1:$EDGE/mcp" | grep -E 'Requests/sec|Latency|99%|50%|Non-2xx|Socket errors' || true
echo "mcp-edge after the load: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$EDGE_PID/status)"
wait $STREAMS_PID
