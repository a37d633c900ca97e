#!/usr/bin/env bash
# Prefetching on a replayed trace (benches/load/trace.py): the same seeded trace replayed
# through mcp-edge with prefetching off, then on, over one upstream that answers in 20-50 ms
# with private results (each client its own credential). Prints both runs and their ratios.
# usage: [CLIENTS=200] [SEED=7] [ACTIVITIES=6] [MAX_INFLIGHT=64] benches/load/trace.sh
# Needs: python3 (trace.py uses the standard library only).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
CLIENTS=${CLIENTS:-200}; SEED=${SEED:-7}; ACTIVITIES=${ACTIVITIES:-6}
# A route with hundreds of active clients needs more than the default 4 prefetches in flight:
# at 20-50 ms each, 4 allow about 110 a second, against some 260 page turns a second here.
MAX_INFLIGHT=${MAX_INFLIGHT:-64}
PYTHON=python3
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=${BIN:-target/release/mcp-edge}
scratch
raise_descriptor_limit 4096
UP=$(port)
"$BIN" upstream --listen "127.0.0.1:$UP" --name trace --scope private --echo-caller --ttl-ms 600000 \
  --latency-ms 20-50 2>"$DIR/upstream.log" & PIDS+=($!)
wait_port "$UP"
run() { # name prefetch(true|false)
  local edge admin
  edge=$(port); admin=$(port)
  cat > "$DIR/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$edge"]
threads = 2
[admin]
listen = "127.0.0.1:$admin"
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
[route.prefetch]
enabled = $2
max_inflight = $MAX_INFLIGHT
TOML
  RUST_LOG=warn "$BIN" run --config "$DIR/$1.toml" 2>"$DIR/$1.log" & local pid=$!
  wait_port "$edge"; wait_port "$admin"
  "$PYTHON" benches/load/trace.py "http://127.0.0.1:$edge/mcp" "http://127.0.0.1:$admin" "http://127.0.0.1:$UP/mcp" \
    --clients "$CLIENTS" --seed "$SEED" --activities "$ACTIVITIES" > "$DIR/$1.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-14s %s\n' "$1" "$(cat "$DIR/$1.json")"
}
echo "== trace: $CLIENTS clients, $ACTIVITIES activities each, seed $SEED, upstream 20-50 ms, private results, max_inflight $MAX_INFLIGHT"
run "prefetch off" false
run "prefetch on" true
"$PYTHON" - "$DIR/prefetch off.json" "$DIR/prefetch on.json" <<'PY'
import json, sys
off, on = (json.load(open(p)) for p in sys.argv[1:])
issued = sum(k.get("issued", 0) for k in on["prefetch"].values())
used = sum(k.get("used", 0) for k in on["prefetch"].values())
print(f"hit ratio {off['hit_ratio']} -> {on['hit_ratio']}; upstream reads {off['upstream_reads']} -> {on['upstream_reads']}"
      f" ({on['upstream_reads'] / off['upstream_reads'] - 1:+.1%})")
print(f"client p50 {off['p50_ms']} -> {on['p50_ms']} ms ({on['p50_ms'] / off['p50_ms'] - 1:+.1%}),"
      f" p99 {off['p99_ms']} -> {on['p99_ms']} ms")
print(f"sequential-walk misses {off['sequential_misses']} -> {on['sequential_misses']}"
      f" ({1 - on['sequential_misses'] / max(1, off['sequential_misses']):.0%} became hits)")
print(f"precision (used / issued): {used / max(1, issued):.2f} overall; "
      + ", ".join(f"{kind} {v.get('used', 0)}/{v.get('issued', 0)}" for kind, v in sorted(on["prefetch"].items())))
print(f"answers not the client's own or failed: off {off['wrong_owner_or_failed']}, on {on['wrong_owner_or_failed']}")
PY
