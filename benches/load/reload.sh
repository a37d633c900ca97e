#!/usr/bin/env bash
# What a SIGHUP reload costs as routes grow: reloads a running mcp-edge from 3 routes to N and
# back, CYCLES times, and prints each reload's time (SIGHUP to "configuration reloaded") and
# the process's resident memory after each step. Usage: benches/load/reload.sh [N] [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}; CYCLES=${2:-3}
BIN=target/release/mcp-edge
[ -x "$BIN" ] || cargo build --release -p mcp-edge
DIR=$(mktemp -d); trap 'kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
config() { # routes
  printf '[server]\nlisten = ["127.0.0.1:0"]\n[admin]\nlisten = ""\n'
  for i in $(seq 1 "$1"); do
    printf '[[route]]\nname = "r%d"\npath = "/r%d"\nupstreams = ["http://127.0.0.1:%d/mcp"]\n' "$i" "$i" $((20000 + i % 50))
  done
}
config 3 > "$DIR/few.toml"; config "$N" > "$DIR/many.toml"
cp "$DIR/few.toml" "$DIR/live.toml"
"$BIN" run --config "$DIR/live.toml" 2>"$DIR/log" & PID=$!
sleep 1
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$PID/status; }
reload_to() { # file label
  local before after start end
  cp "$1" "$DIR/live.toml"; before=$(grep -c 'configuration reloaded' "$DIR/log" || true)
  start=$(date +%s%N); kill -HUP $PID
  until after=$(grep -c 'configuration reloaded' "$DIR/log" || true); [ "$after" -gt "$before" ]; do sleep 0.01; done
  end=$(date +%s%N)
  echo "$2: $(( (end - start) / 1000000 )) ms, then $(rss)"
}
echo "start (3 routes): $(rss)"
for c in $(seq 1 "$CYCLES"); do
  reload_to "$DIR/many.toml" "cycle $c: 3 -> $N routes"
  sleep 1
  reload_to "$DIR/few.toml" "cycle $c: $N -> 3 routes"
  sleep "${SETTLE:-5}"
  echo "cycle $c: ${SETTLE:-5} s later: $(rss)"
done
