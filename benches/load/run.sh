#!/usr/bin/env bash
# Load benchmark: resources/read POSTs sent direct to the demo upstream, through nginx (plain
# reverse proxy, the baseline) and through mcp-edge, in one run on this machine.
# usage: benches/load/run.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: wrk and nginx (apt-get install -y wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-10}
CONNECTIONS=${2:-64}
WORKERS=${WORKERS:-2}
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "needs $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
cargo build --release -p mcp-edge -q
BIN=target/release/mcp-edge
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

UP=$(port); EDGE=$(port); NGINX=$(port)
$BIN upstream --listen 127.0.0.1:$UP --name bench --json 2>"$DIR/upstream.log" & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
threads = $WORKERS
[admin]
listen = ""
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
RUST_LOG=warn $BIN run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & PIDS+=($!)
FIXED='{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"demo://docs/1","text":"'$(printf 'x%.0s' $(seq 950))'"}]}}'
mkdir -p "$DIR"/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@WORKERS@|$WORKERS|; s|@DIR@|$DIR|g; s|@UPSTREAM_PORT@|$UP|; s|@PORT@|$NGINX|; s|@FIXED_BODY@|$FIXED|" \
  benches/load/nginx.conf.in > "$DIR/nginx.conf"
nginx -c "$DIR/nginx.conf" -p "$DIR" 2>"$DIR/nginx.log" & PIDS+=($!)
wait_port $UP; wait_port $EDGE; wait_port $NGINX

measure() { # name url
  wrk -t2 -c"$CONNECTIONS" -d1s -s benches/load/read.lua "$2" >/dev/null 2>&1 || true   # warm-up
  local line
  line=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s benches/load/read.lua "$2" | grep '^RESULT')
  printf '%-28s %s\n' "$1" "${line#RESULT }"
  eval "$(echo "${line#RESULT }" | sed 's/ /;/g; s/\([a-z0-9]*\)=/\U\1_'"$3"'=/g')"
}
echo "resources/read, $CONNECTIONS connections, ${DURATION}s, $WORKERS proxy workers"
measure "direct to upstream" "http://127.0.0.1:$UP/mcp" DIRECT
measure "nginx reverse proxy" "http://127.0.0.1:$NGINX/mcp" NGINX
measure "mcp-edge (pass-through)" "http://127.0.0.1:$EDGE/mcp" EDGE
python3 - "$RPS_NGINX" "$RPS_EDGE" "$P99_DIRECT" "$P99_EDGE" "$P50_DIRECT" "$P50_EDGE" <<'PY'
import sys
nginx, edge, p99d, p99e, p50d, p50e = map(float, sys.argv[1:])
print(f"mcp-edge / nginx req/s: {edge / nginx:.2f}")
print(f"added latency vs direct: p50 {p50e - p50d:+.3f} ms, p99 {p99e - p99d:+.3f} ms")
PY
