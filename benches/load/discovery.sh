#!/usr/bin/env bash
# Replicas that come and go under steady traffic (`[route.discovery]`): six demo replicas on
# 127.0.0.2…7 (one port), a DNS server under the script's control (tests/peers/python/peer_dns.py,
# TTL 1 s), mcp-edge re-resolving every 500 ms, and wrk sending stateless tool calls (each one
# upstream) for DURATION seconds while the name's A records change every CHANGE_EVERY seconds to a
# random two to five of the six. Prints wrk's result (errors: connect, read, write, timeout,
# and non-2xx answers) and the replicas mcp-edge logged joining and leaving.
# DEAD=1: every set also names 127.0.0.8, where nothing listens (a replica that died).
# usage: [DURATION=60] [CHANGE_EVERY=2] [CONNECTIONS=32] [DEAD=0] benches/load/discovery.sh
# Needs: wrk, python3 with dnslib (scripts/setup-peers.sh puts it in .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
RUN=${DURATION:-60}; CHANGE_EVERY=${CHANGE_EVERY:-2}; CONNECTIONS=${CONNECTIONS:-32}
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=${BIN:-target/release/mcp-edge}
PYTHON=${PYTHON:-.venv/bin/python}
scratch
raise_descriptor_limit 4096
UP=$(port); DNS=$(port); EDGE=$(port); ADMIN=$(port)
for n in 2 3 4 5 6 7; do
  "$BIN" upstream --listen "127.0.0.$n:$UP" --name "r$n" 2>"$DIR/r$n.log" & PIDS+=($!)
done
records() { # addresses…: mcp.test's A records
  python3 -c 'import json, sys; print(json.dumps({"ttl": 1, "records": {"mcp.test.": {"A": sys.argv[1:]}}}))' "$@" \
    > "$DIR/records.tmp" && mv "$DIR/records.tmp" "$DIR/records.json"
}
records 127.0.0.2 127.0.0.3 127.0.0.4
"$PYTHON" tests/peers/python/peer_dns.py "$DNS" "$DIR/records.json" >"$DIR/dns.log" 2>&1 & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
[admin]
listen = "127.0.0.1:$ADMIN"
[[route]]
name = "d"
path = "/mcp"
upstreams = ["http://mcp.test:$UP/mcp"]
[route.discovery]
interval = "500ms"
resolver = "127.0.0.1:$DNS"
[route.health]
interval = "1s"
TOML
sleep 0.5 # the replicas and the DNS server listening
"$BIN" run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & PIDS+=($!)
wait_port "$EDGE"
(
  end=$((SECONDS + RUN))
  while [ "$SECONDS" -lt "$end" ]; do
    sleep "$CHANGE_EVERY"
    mapfile -t chosen < <(printf '127.0.0.%s\n' 2 3 4 5 6 7 | shuf -n "$(shuf -i 2-5 -n 1)")
    [ "${DEAD:-0}" = 1 ] && chosen+=(127.0.0.8)
    records "${chosen[@]}"
  done
) & CHANGER=$!
wrk -t2 -c"$CONNECTIONS" -d"${RUN}s" -s benches/load/call.lua "http://127.0.0.1:$EDGE/mcp" | tee "$DIR/wrk.txt" | grep -E "RESULT|Non-2xx|Socket errors|requests in"
kill "$CHANGER" 2>/dev/null || true
echo "replicas joined: $(grep -c 'replica joined' "$DIR/edge.log"), left: $(grep -c 'replica left' "$DIR/edge.log")"
# wrk closing its connections when it stops shows as status=0 (the client left): not counted.
others() { grep 'mcp_edge::access' "$DIR/edge.log" | grep -v ' status=200 ' | grep -v 'status=0 .*Downstream ConnectionClosed'; }
echo "answers other than 200: $(others | wc -l)"
others | cut -c1-300 | head -5 || true
echo "edge warnings and errors: $(grep -cE ' (WARN|ERROR) ' "$DIR/edge.log" || true)"
grep -E ' (WARN|ERROR) ' "$DIR/edge.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5 || true
