#!/usr/bin/env bash
# Load benchmark: resources/read POSTs sent direct to the demo upstream, through nginx (plain
# reverse proxy, the baseline) and through mcp-edge, in one run on this machine.
# usage: [REPEAT=3] [MILLION=1000000] [BIN=target/release/mcp-edge] [FLOOR_BIN=…]
#          benches/load/run.sh [pass|floor|hits|disk|tls|sdk|all, or a comma list] [DURATION_SECONDS=5] [CONNECTIONS=64]
#   pass: pass-through (direct vs nginx vs mcp-edge); floor: only mcp-edge against the Pingora
#   floor, uncached tools/call and resources/read (REPEAT=30 2 for a figure whose interval is
#   narrow enough to quote); hits: cache hits of 1 KiB resources vs nginx returning a fixed
#   1 KiB body, as the cache grows, and from the disk tier (disk: only that); tls: hits over
#   HTTPS, HTTP/1.1 (wrk) and HTTP/2 (h2load, H2_CONNECTIONS=16 × H2_STREAMS=8), vs nginx's fixed
#   body over HTTPS; sdk: hits of the request an SDK client sends (its _meta) beside the bench's
#   own minimal _meta, each vs nginx's fixed body. all: every mode but floor.
# Needs: wrk and nginx (apt-get install -y wrk nginx-light); tls also h2load and openssl
# (apt-get install -y nghttp2-client openssl) and an nginx with http_v2 (nginx-light has it).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh
MODE=${1:-all}
DURATION=${2:-5}
CONNECTIONS=${3:-64}
mode() { [[ ",$MODE," == *",$1,"* ]] || { [ "$MODE" = all ] && [ "$1" != floor ]; }; }
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "needs $tool: apt-get install -y wrk nginx-light" >&2; exit 1; }
done
if mode tls; then
  command -v h2load >/dev/null || { echo "needs h2load: apt-get install -y nghttp2-client" >&2; exit 1; }
  command -v openssl >/dev/null || { echo "needs openssl: apt-get install -y openssl" >&2; exit 1; }
  nginx -V 2>&1 | grep -q http_v2_module || { echo "needs an nginx with http_v2_module" >&2; exit 1; }
fi
NEEDS_FLOOR=0; if mode pass || mode floor; then NEEDS_FLOOR=1; fi
# BIN=path/to/mcp-edge measures another build (e.g. an earlier commit's) against the same
# baselines; FLOOR_BIN=path/to/pingora_floor with it builds nothing.
if [ -z "${BIN:-}" ]; then
  cargo build --release -p mcp-edge -q --bin mcp-edge --example pingora_floor
  BIN=target/release/mcp-edge
elif [ -z "${FLOOR_BIN:-}" ] && [ $NEEDS_FLOOR = 1 ]; then
  cargo build --release -p mcp-edge -q --example pingora_floor
fi
FLOOR_BIN=${FLOOR_BIN:-target/release/examples/pingora_floor}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

UP=$(port); EDGE=$(port); NGINX=$(port); DISK_EDGE=$(port)
UP_NOCACHE=$(port); FLOOR=$(port); DISK_ADMIN=$(port)
TLS_EDGE=$(port); TLS_EDGE_PLAIN=$(port); NGINX_TLS=$(port)
# Entries live an hour: filling a million of them takes minutes.
"${SERVER[@]}" "$BIN" upstream --listen "127.0.0.1:$UP" --name bench --json --ttl-ms 3600000 2>"$DIR/upstream.log" & PIDS+=($!)
# The pass-through upstream says ttlMs 0: its answers are never cached.
"${SERVER[@]}" "$BIN" upstream --listen "127.0.0.1:$UP_NOCACHE" --name bench --json --ttl-ms 0 2>>"$DIR/upstream.log" & PIDS+=($!)
cat > "$DIR/edge.toml" <<TOML
[server]
listen = ["127.0.0.1:$EDGE"]
threads = $WORKERS
[admin]
listen = ""
[cache]
memory = "2GiB"
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
[[route]]
path = "/nocache"
upstreams = ["http://127.0.0.1:$UP_NOCACHE/mcp"]
TOML
disk_config "$DIR/disk.toml" "$DISK_EDGE" "127.0.0.1:$DISK_ADMIN" "$DIR/cache"
RUST_LOG=warn "${SERVER[@]}" "$BIN" run --config "$DIR/edge.toml" 2>"$DIR/edge.log" & PIDS+=($!)
RUST_LOG=warn "${SERVER[@]}" "$BIN" run --config "$DIR/disk.toml" 2>"$DIR/disk.log" & DISK_PID=$!; PIDS+=("$DISK_PID")
start_nginx "$UP_NOCACHE" "$NGINX"
if [ $NEEDS_FLOOR = 1 ]; then
  "${SERVER[@]}" "$FLOOR_BIN" "127.0.0.1:$FLOOR" "127.0.0.1:$UP_NOCACHE" "$WORKERS" 2>"$DIR/floor.log" & PIDS+=($!)
  wait_port "$FLOOR"
fi
if mode tls; then
  # A self-signed ECDSA P-256 certificate for both; mcp-edge keeps a plain listener beside its
  # TLS one (the cache is filled through it), nginx serves its fixed body over TLS.
  make_cert "$DIR"
  cat > "$DIR/tls.toml" <<TOML
[server]
listen = ["127.0.0.1:$TLS_EDGE_PLAIN"]
threads = $WORKERS
[server.tls]
listen = ["127.0.0.1:$TLS_EDGE"]
cert = "$DIR/cert.pem"
key = "$DIR/key.pem"
[admin]
listen = ""
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
  RUST_LOG=warn "${SERVER[@]}" "$BIN" run --config "$DIR/tls.toml" 2>"$DIR/tls.log" & PIDS+=($!)
  start_nginx_tls "$NGINX_TLS" "$DIR/cert.pem" "$DIR/key.pem"
  wait_port "$TLS_EDGE"; wait_port "$TLS_EDGE_PLAIN"; wait_port "$NGINX_TLS"
fi
wait_port "$UP"; wait_port "$UP_NOCACHE"; wait_port "$EDGE"; wait_port "$NGINX"; wait_port "$DISK_EDGE"
echo "$(date -u '+%F %H:%M UTC'), $(nproc) CPUs, load average before the runs $(cut -d" " -f1-3 /proc/loadavg)"

measure() { # name url VAR [script]: the median of REPEAT runs (this machine is noisy)
  local script=${4:-benches/load/read.lua}
  warm_up "$2" "$script"
  local lines=""
  for _ in $(seq "$REPEAT"); do
    lines+="$(wrk_once "$2" "$script")"$'\n'
  done
  local line
  line=$(printf '%s' "$lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "$1" "$line"
  eval "$(echo "${line% rps_range=*}" | sed 's/ /;/g; s/\([a-z0-9]*\)=/\U\1_'"$3"'=/g')"
}
# name url VAR: like measure, but each run of the target follows a run of nginx's fixed body, so
# both medians come from the same stretch of this noisy machine; prints the ratio of the two.
measure_vs_fixed() {
  vs_fixed "$1" "$3" random_read "$2" "http://127.0.0.1:$NGINX/fixed"
}
# name VAR runner url fixed_url: measure_vs_fixed with any client: `runner url [seconds]` makes
# one run and prints its RESULT line; a 1 s warm-up of the target, then REPEAT rounds of nginx's
# fixed body then the target. Besides the ratio of the medians, the median of the rounds' ratios
# with its 95% interval (ratio_median.py), which a drift across the run moves less.
vs_fixed() {
  local fixed_lines="" lines="" ratios="" f t
  "$3" "$4" 1 >/dev/null 2>&1 || true
  for _ in $(seq "$REPEAT"); do
    f=$("$3" "$5"); fixed_lines+="$f"$'\n'
    t=$("$3" "$4"); lines+="$t"$'\n'
    ratios+="$(rps_of "$t") $(rps_of "$f")"$'\n'
  done
  report_vs_fixed "$1" "$lines" "$fixed_lines" "$2"
  printf '%s' "$ratios" | python3 benches/load/ratio_median.py "mcp-edge / nginx fixed"
}
random_read() { wrk_once "$1" benches/load/random-read.lua "${2:-}"; } # url [seconds]; KEYS, SDK_META, GZIP
h2_read() { h2load_once "$1" "$DIR/read-kib-1.json" "${2:-}"; }       # url [seconds]: one key, over HTTP/2
# The request of a stateless-era SDK client (SDK_META=1: its _meta holds the protocol version,
# its information and capabilities, all part of the cache key) and the bench's own (_meta: the
# protocol version only), 1 000 keys each, in rounds of four runs: nginx's fixed body, then
# mcp-edge, for each request. Prints both against nginx and the rounds' SDK/minimal ratios.
sdk_vs_minimal() { # url
  local fixed_url="http://127.0.0.1:$NGINX/fixed" fixed_lines="" lines="" sdk_fixed_lines="" sdk_lines=""
  local m s mf sf minimal_ratios="" sdk_ratios=""
  export KEYS=1000
  fill "$1" "$KEYS"; SDK_META=1 fill "$1" "$KEYS"
  random_read "$1" 1 >/dev/null; SDK_META=1 random_read "$1" 1 >/dev/null
  local before ratios=""
  before=$(upstream_reads)
  for _ in $(seq "$REPEAT"); do
    mf=$(random_read "$fixed_url"); fixed_lines+="$mf"$'\n'
    m=$(random_read "$1"); lines+="$m"$'\n'
    sf=$(SDK_META=1 random_read "$fixed_url"); sdk_fixed_lines+="$sf"$'\n'
    s=$(SDK_META=1 random_read "$1"); sdk_lines+="$s"$'\n'
    ratios+="$(rps_of "$s") $(rps_of "$m")"$'\n'
    minimal_ratios+="$(rps_of "$m") $(rps_of "$mf")"$'\n'
    sdk_ratios+="$(rps_of "$s") $(rps_of "$sf")"$'\n'
  done
  report_vs_fixed "mcp-edge hits, minimal _meta" "$lines" "$fixed_lines" SDK_MINIMAL
  printf '%s' "$minimal_ratios" | python3 benches/load/ratio_median.py "mcp-edge / nginx fixed"
  report_vs_fixed "mcp-edge hits, SDK client's _meta" "$sdk_lines" "$sdk_fixed_lines" SDK
  printf '%s' "$sdk_ratios" | python3 benches/load/ratio_median.py "mcp-edge / nginx fixed"
  printf '%s' "$ratios" | python3 benches/load/ratio_median.py "SDK _meta / minimal _meta hits"
  echo "  misses during the runs (upstream reads): $(( $(upstream_reads) - before ))"
  unset KEYS
}
# name lines fixed_lines VAR: prints the medians of a target's runs and of nginx's fixed body's
# runs beside them, and their ratio.
report_vs_fixed() {
  local line fixed_line lines=$2 fixed_lines=$3
  line=$(printf '%s' "$lines" | python3 benches/load/median.py)
  fixed_line=$(printf '%s' "$fixed_lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "$1" "$line"
  printf '%-40s %s\n' "  nginx fixed body, same stretch" "$fixed_line"
  local rps=${line#rps=} fixed=${fixed_line#rps=}
  echo "  vs nginx fixed: $(ratio "${rps%% *}" "${fixed%% *}")"
  eval "RPS_$4=${rps%% *}"
}
# label url_floor url_edge VAR [script]: the Pingora floor and mcp-edge measured in turns (floor
# first in odd rounds, mcp-edge first in even ones), so a drift of this noisy machine favours
# neither; prints both medians and the median of the rounds' mcp-edge/floor ratios.
measure_vs_floor() {
  local script=${5:-benches/load/read.lua} floor_lines="" edge_lines="" ratios="" f e
  warm_up "$2" "$script"; warm_up "$3" "$script"
  for round in $(seq "$REPEAT"); do
    if [ $((round % 2)) = 1 ]; then
      f=$(wrk_once "$2" "$script"); e=$(wrk_once "$3" "$script")
    else
      e=$(wrk_once "$3" "$script"); f=$(wrk_once "$2" "$script")
    fi
    floor_lines+="$f"$'\n'; edge_lines+="$e"$'\n'
    ratios+="$(rps_of "$e") $(rps_of "$f")"$'\n'
  done
  printf '%-40s %s\n' "pingora floor, $1" "$(printf '%s' "$floor_lines" | python3 benches/load/median.py)"
  local line
  line=$(printf '%s' "$edge_lines" | python3 benches/load/median.py)
  printf '%-40s %s\n' "mcp-edge, $1" "$line"
  eval "$(echo "${line% rps_range=*}" | sed 's/ /;/g; s/\([a-z0-9]*\)=/\U\1_'"$4"'=/g')"
  printf '%s' "$ratios" | python3 benches/load/ratio_median.py
}
tls_params() { # port: the protocol and cipher an OpenSSL client (as wrk's and h2load's) negotiates
  openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null | sed -n 's/^New, \(.*\), Cipher is \(.*\)/\1 \2/p'
}
rps_of() { local rest=${1#*rps=}; echo "${rest%% *}"; }
# Uncached resources/read (sets RPS_EDGE) and tools/call (RPS_CALL_EDGE) against the floor. An
# uncached tools/call takes no cache path at all (no lookup, no coalescing, no capture).
compare_with_floor() {
  measure_vs_floor "resources/read" "http://127.0.0.1:$FLOOR/mcp" "http://127.0.0.1:$EDGE/nocache" EDGE
  measure_vs_floor "tools/call" "http://127.0.0.1:$FLOOR/mcp" "http://127.0.0.1:$EDGE/nocache" CALL_EDGE \
    benches/load/call.lua
}
tier_split() { # which tier the disk edge's hits came from (its counters start at its restart)
  curl -s "http://127.0.0.1:$DISK_ADMIN/metrics" | python3 -c '
import re, sys
hits = dict(re.findall(r"mcp_cache_operations_total\{operation=\"lookup\",result=\"hit\",tier=\"(\w+)\"\} (\d+)", sys.stdin.read()))
print("  hits served from disk:", hits.get("disk", 0), "from memory:", hits.get("memory", 0))'
}

if mode pass; then
  echo "== pass-through: resources/read, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  # ttlMs 0 upstream: nothing is cached, every request goes through.
  measure "direct to upstream" "http://127.0.0.1:$UP_NOCACHE/mcp" DIRECT
  measure "nginx reverse proxy" "http://127.0.0.1:$NGINX/mcp_nocache" NGINX
  # The Pingora floor and mcp-edge in turns (see measure_vs_floor): their ratio is the figure.
  compare_with_floor
  # shellcheck disable=SC2153 # RPS_EDGE is set by measure_vs_floor's eval
  echo "mcp-edge / nginx req/s (resources/read): $(ratio "$RPS_EDGE" "$RPS_NGINX")"
  python3 -c "import sys; d,e,f,g=map(float,sys.argv[1:]); print(f'added latency vs direct: p50 {e-d:+.3f} ms, p99 {g-f:+.3f} ms')" \
    "$P50_DIRECT" "$P50_EDGE" "$P99_DIRECT" "$P99_EDGE"
  # At full load a proxy's added latency is mostly its queue (64 connections / its req/s); paced
  # (each connection pauses after every answer, ~10 k req/s in all) it is the latency it adds.
  echo "-- paced: each connection pauses ${PAUSE_MS:=5} ms after every answer"
  export PAUSE_MS
  measure "direct to upstream, paced" "http://127.0.0.1:$UP_NOCACHE/mcp" PACED_DIRECT
  measure "nginx reverse proxy, paced" "http://127.0.0.1:$NGINX/mcp_nocache" PACED_NGINX
  measure "pingora-proxy, no logic, paced" "http://127.0.0.1:$FLOOR/mcp" PACED_FLOOR
  measure "mcp-edge (pass-through), paced" "http://127.0.0.1:$EDGE/nocache" PACED_EDGE
  unset PAUSE_MS
  python3 -c "import sys; d,n,f,e=map(float,sys.argv[1:]); print(f'paced p99 added over direct: nginx {n-d:+.3f} ms, Pingora floor {f-d:+.3f} ms, mcp-edge {e-d:+.3f} ms')" \
    "$P99_PACED_DIRECT" "$P99_PACED_NGINX" "$P99_PACED_FLOOR" "$P99_PACED_EDGE"
fi

if mode floor; then
  echo "== mcp-edge against the Pingora floor: $CONNECTIONS connections, ${REPEAT}x${DURATION}s rounds, $WORKERS proxy workers, PIN=$PIN"
  compare_with_floor
fi

if mode hits; then
  echo "== cache hits: 1 KiB resources/read, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  # nginx's fixed body is driven by the same wrk script as the hits (nginx ignores the body),
  # so the client costs the same; it is measured beside every hit figure (measure_vs_fixed).
  for keys in 1 1000 100000 ${MILLION:-1000000}; do
    fill "http://127.0.0.1:$EDGE/mcp" "$keys"
    before=$(upstream_reads)
    KEYS=$keys measure_vs_fixed "mcp-edge hits, $keys entries (memory)" "http://127.0.0.1:$EDGE/mcp" "HITS$keys"
    echo "  misses during the run (upstream reads): $(( $(upstream_reads) - before ))"
  done
  GZIP=1 KEYS=1 measure_vs_fixed "mcp-edge gzip hits, 1 entry (pre-compressed)" "http://127.0.0.1:$EDGE/mcp" GZIP
fi

if mode hits || mode disk; then
  echo "== disk tier: 1 KiB resources/read after a restart, $CONNECTIONS connections, ${REPEAT}x${DURATION}s (medians)"
  fill "http://127.0.0.1:$DISK_EDGE/mcp" 100000
  kill "$DISK_PID"; wait "$DISK_PID" 2>/dev/null || true
  RUST_LOG=warn "${SERVER[@]}" "$BIN" run --config "$DIR/disk.toml" 2>>"$DIR/disk.log" & DISK_PID=$!; PIDS+=("$DISK_PID")
  wait_port "$DISK_EDGE"
  KEYS=100000 measure_vs_fixed "mcp-edge hits, 100000 entries, after restart (8 MiB memory, rest on disk)" \
    "http://127.0.0.1:$DISK_EDGE/mcp" DISK
  tier_split
  # The same cache restarted REPEAT times with a memory tier that holds it all: each time the
  # first run after the restart, no warm-up (each entry comes from disk once, then from
  # memory), beside a run of nginx's fixed body.
  sed 's/^memory = "8MiB"/memory = "1GiB"/' "$DIR/disk.toml" > "$DIR/disk-warm.toml"
  warm_lines="" fixed_lines=""
  for _ in $(seq "$REPEAT"); do
    kill "$DISK_PID"; wait "$DISK_PID" 2>/dev/null || true
    fixed_lines+="$(KEYS=100000 wrk_once "http://127.0.0.1:$NGINX/fixed" benches/load/random-read.lua)"$'\n'
    RUST_LOG=warn "${SERVER[@]}" "$BIN" run --config "$DIR/disk-warm.toml" 2>>"$DIR/disk.log" & DISK_PID=$!; PIDS+=($!)
    wait_port "$DISK_EDGE"
    warm_lines+="$(KEYS=100000 wrk_once "http://127.0.0.1:$DISK_EDGE/mcp" benches/load/random-read.lua)"$'\n'
  done
  report_vs_fixed "mcp-edge, first ${DURATION}s after a restart (1 GiB memory)" "$warm_lines" "$fixed_lines" WARM
  tier_split
fi

if mode tls; then
  echo "== TLS: 1 KiB cache hits over HTTPS vs nginx's fixed body over HTTPS, ${REPEAT}x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  echo "  negotiated (ECDSA P-256 certificate): mcp-edge $(tls_params "$TLS_EDGE"), nginx $(tls_params "$NGINX_TLS")"
  fill "http://127.0.0.1:$TLS_EDGE_PLAIN/mcp" 1000
  before=$(upstream_reads)
  echo "-- HTTP/1.1 (wrk, random-read.lua), $CONNECTIONS connections"
  KEYS=1000 vs_fixed "mcp-edge hits over TLS, 1000 entries" TLS_H1 random_read \
    "https://127.0.0.1:$TLS_EDGE/mcp" "https://127.0.0.1:$NGINX_TLS/fixed"
  # h2load sends one body: every request reads demo://kib/1 (the same bytes random-read.lua sends
  # for it), a hit on one entry.
  printf '%s' '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"demo://kib/1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}' \
    > "$DIR/read-kib-1.json"
  echo "-- HTTP/2 (h2load), ${H2_CONNECTIONS:-16} connections x ${H2_STREAMS:-8} streams, one entry;" \
    "$(curl -sk --http2 -o /dev/null -w '%{http_version} %{http_code}' -D "$DIR/h2.head" "https://127.0.0.1:$TLS_EDGE/mcp" \
      -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
      -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: resources/read' -H 'mcp-name: demo://kib/1' \
      --data-binary @"$DIR/read-kib-1.json" | sed 's/^/HTTP\//') $(grep -i '^x-cache:' "$DIR/h2.head" | tr -d '\r')"
  vs_fixed "mcp-edge hits over h2, 1 entry" TLS_H2 h2_read "https://127.0.0.1:$TLS_EDGE/mcp" "https://127.0.0.1:$NGINX_TLS/fixed"
  echo "  misses during the runs (upstream reads): $(( $(upstream_reads) - before ))"
fi

if mode sdk; then
  echo "== SDK client's _meta: 1 KiB cache hits, 1000 entries, plain HTTP/1.1, $CONNECTIONS connections, ${REPEAT} rounds of 4x${DURATION}s (medians), $WORKERS proxy workers, PIN=$PIN"
  sdk_vs_minimal "http://127.0.0.1:$EDGE/mcp"
fi
