#!/usr/bin/env bash
# The shared tier on one redis-server against a Redis Cluster (3 masters, 3 replicas), in the
# same run, ROUNDS times alternately:
# 1. a shared hit's latency: a filler node fetches COUNT documents into the tier; a new node
#    reads each once on one connection (every read a shared-tier hit): client-side p50/p99 and
#    the time inside mcp-edge (its access log), p50/p99;
# 2. Redis commands per lookup (INFO commandstats over every server): lookup calls and all commands;
# 3. shared hits per second: another new node reads COUNT other documents on CLIENTS
#    connections.
# usage: [COUNT=2000] [ROUNDS=3] [CLIENTS=32] benches/load/shared-cluster.sh
# Needs: python3, redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
COUNT=${COUNT:-2000}; ROUNDS=${ROUNDS:-3}; CLIENTS=${CLIENTS:-32}
cargo build --release -p mcp-edge -q --bin mcp-edge
BIN=${BIN:-target/release/mcp-edge}
scratch
raise_descriptor_limit 4096

redis() { # port [options…]: one redis-server, no persistence
  local port=$1; shift
  (cd "$DIR" && exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no "$@" >"$DIR/redis-$port.log" 2>&1) &
  PIDS+=($!)
}
SINGLE=$(port); redis "$SINGLE"
CLUSTER=()
for _ in 1 2 3 4 5 6; do
  p=$(port); CLUSTER+=("$p")
  redis "$p" --cluster-enabled yes --cluster-port "$(port)" --cluster-config-file "nodes-$p.conf" --repl-diskless-sync-delay 0
done
for p in "$SINGLE" "${CLUSTER[@]}"; do wait_port "$p"; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER[@]}") --cluster-replicas 1 --cluster-yes >"$DIR/create.log"
until redis-cli -p "${CLUSTER[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
UP=$(port)
"$BIN" upstream --listen "127.0.0.1:$UP" --name shared --ttl-ms 600000 --latency-ms 1 2>"$DIR/upstream.log" & PIDS+=($!)
wait_port "$UP"

section() { # one|cluster: the [cache.shared] table
  if [ "$1" = one ]; then printf '[cache.shared]\nurl = "redis://127.0.0.1:%s"\n' "$SINGLE"
  else printf '[cache.shared]\ncluster = [%s]\n' "$(printf '"redis://127.0.0.1:%s",' "${CLUSTER[@]}" | sed 's/,$//')"; fi
}
node() { # name one|cluster: starts a node with its access log; sets EDGE, EDGE_PID
  local admin
  EDGE=$(port); admin=$(port)
  cat > "$DIR/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
threads = 2
[admin]
listen = "127.0.0.1:$admin"
$(section "$2")
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
  RUST_LOG="warn,mcp_edge::access=info" "$BIN" run --config "$DIR/$1.toml" 2>"$DIR/$1.log" & EDGE_PID=$!; PIDS+=("$EDGE_PID")
  wait_port "$EDGE"; wait_port "$admin"
  until curl -sf "http://127.0.0.1:$admin/readyz" | grep -q '"state":"up"'; do sleep 0.1; done
}
walk() { # first clients [--report]
  python3 benches/load/shared.py walk "http://127.0.0.1:$EDGE/mcp" --first "$1" --count "$COUNT" --clients "$2" ${3:-}
}
commands() { # one|cluster: "lookup calls (EVALSHA), all calls" over its servers (the watchers' INFO/CLUSTER left out)
  local ports=("$SINGLE"); [ "$1" = cluster ] && ports=("${CLUSTER[@]}")
  for p in "${ports[@]}"; do redis-cli -p "$p" info commandstats; done | python3 -c '
import re, sys
mget = total = 0
for name, calls in re.findall(r"cmdstat_([\w|]+):calls=(\d+)", sys.stdin.read()):
    if name.split("|")[0] in ("info", "cluster", "ping", "subscribe", "psubscribe", "hello", "client", "auth", "readonly"):
        continue
    total += int(calls); mget += int(calls) * (name in ("mget", "evalsha"))
print(mget, total)'
}
inside() { # log: p50/p99 of shared hits' time inside mcp-edge, µs
  python3 - "$1" <<'PY'
import re, sys
times = sorted(float(m.group(1)) * 1000 for m in re.finditer(r'cache="HIT" tier="shared" duration_ms=([\d.]+)', open(sys.argv[1]).read()))
print(f"{times[len(times) // 2]:.1f} {times[int(len(times) * 0.99)]:.1f} {len(times)}" if times else "- - 0")
PY
}

node fill-one one; FILL_one=$EDGE
node fill-cluster cluster; FILL_cluster=$EDGE
printf '%-8s %-5s %8s %8s %9s %9s %6s %9s %9s %8s\n' kind round hits "p50 ms" "p99 ms" "in p50µs" "in p99µs" \
  calls/rd cmds/rd "hits/s"
for round in $(seq "$ROUNDS"); do
  for kind in one cluster; do
    offset=0; [ "$kind" = cluster ] && offset=500000
    first=$((round * 1000000 + offset))
    fill=FILL_$kind; EDGE=${!fill}
    walk "$first" 64; walk $((first + 100000)) 64
    sleep 0.5 # written behind the answers
    node "latency-$kind-$round" "$kind"
    read -r mget0 all0 < <(commands "$kind")
    latency=$(walk "$first" 1 --report)
    read -r mget1 all1 < <(commands "$kind")
    kill "$EDGE_PID"
    read -r in50 in99 _ < <(inside "$DIR/latency-$kind-$round.log")
    node "throughput-$kind-$round" "$kind"
    throughput=$(walk $((first + 100000)) "$CLIENTS" --report)
    kill "$EDGE_PID"
    python3 - "$kind" "$round" "$latency" "$throughput" "$in50" "$in99" $((mget1 - mget0)) $((all1 - all0)) <<'PY'
import json, sys
kind, rnd, latency, throughput, in50, in99, mget, total = sys.argv[1:]
latency, throughput = json.loads(latency), json.loads(throughput)
reads = latency["reads"]
print(f"{kind:8} {rnd:5} {latency['hits']:8} {latency['p50_ms']:8} {latency['p99_ms']:9} {in50:>9} {in99:>6}"
      f" {int(mget) / reads:9.2f} {int(total) / reads:9.2f} {throughput['per_second']:8}"
      f"{'' if throughput['hits'] == throughput['reads'] else '  (' + str(throughput['hits']) + ' hits)'}")
PY
  done
done
