# shellcheck shell=bash
# Shared by the load benchmarks (sourced from the repository root): pinning, ports, wrk runs,
# nginx, filling a cache. The caller sets DIR (scratch directory), PIDS (processes to stop),
# CONNECTIONS, DURATION and, for fill, upstream_reads and disk_config, UP (the cached upstream's port).
# PIN=1 (default): the load generator gets CPU 0, every server (upstreams, nginx, mcp-edge) CPU 1,
# and the proxies one worker each, so client and servers do not steal each other's time (on a
# shared 2-core machine that theft dominated p99, nginx's included). PIN=0: no pinning, 2 workers.
PIN=${PIN:-1}
if [ "$PIN" = 1 ]; then
  CLIENT=(taskset -c 0); SERVER=(taskset -c 1); WRK_THREADS=1; WORKERS=${WORKERS:-1}
else
  CLIENT=(); SERVER=(); WRK_THREADS=2; WORKERS=${WORKERS:-2}
fi
REPEAT=${REPEAT:-3}

scratch() { # a scratch directory (DIR) and the processes to stop when the script ends (PIDS)
  DIR=$(mktemp -d); PIDS=()
  trap stop_all EXIT
}
stop_all() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
raise_descriptor_limit() { # wanted: as far as the hard limit allows
  ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

wrk_once() { # url script [seconds]: one wrk run at full load; prints its RESULT line (report.lua)
  "${CLIENT[@]}" wrk -t$WRK_THREADS -c"$CONNECTIONS" -d"${3:-$DURATION}s" -s "$2" "$1" | grep '^RESULT'
}
warm_up() { # url script
  wrk_once "$1" "$2" 1 >/dev/null 2>&1 || true
}
# The fixed 1 KiB JSON body nginx returns as the cache hits' baseline (a resources/read answer's shape).
FIXED_BODY='{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"demo://docs/1","text":"'$(printf 'x%.0s' $(seq 950))'"}]}}'
start_nginx() { # upstream_port port: nginx as a reverse proxy of the upstream, and its fixed 1 KiB body
  mkdir -p "$DIR"/{body,proxy,fastcgi,uwsgi,scgi}
  sed -e "s|@WORKERS@|$WORKERS|; s|@DIR@|$DIR|g; s|@UPSTREAM_PORT@|$1|; s|@PORT@|$2|; s|@FIXED_BODY@|$FIXED_BODY|" \
    benches/load/nginx.conf.in > "$DIR/nginx.conf"
  "${SERVER[@]}" nginx -c "$DIR/nginx.conf" -p "$DIR" 2>"$DIR/nginx.log" & PIDS+=($!)
}
make_cert() { # dir: a self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost (dir/cert.pem, dir/key.pem)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}
nginx_http2_syntax() { # how this nginx turns HTTP/2 on: "directive" (`http2 on;`, 1.25.1+) or "listen" (`listen … ssl http2`)
  local version
  version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
  if [ "$(printf '%s\n1.25.1\n' "$version" | sort -V | head -1)" = 1.25.1 ]; then echo directive; else echo listen; fi
}
start_nginx_tls() { # port cert key: nginx returning the fixed 1 KiB body over TLS, HTTP/1.1 and HTTP/2 (ALPN)
  local listen_h2="" http2_on=""
  if [ "$(nginx_http2_syntax)" = directive ]; then http2_on="http2 on;"; else listen_h2=" http2"; fi
  mkdir -p "$DIR/nginx-tls"/{body,proxy,fastcgi,uwsgi,scgi}
  sed -e "s|@WORKERS@|$WORKERS|; s|@DIR@|$DIR/nginx-tls|g; s|@PORT@|$1|; s|@CERT@|$2|; s|@KEY@|$3|" \
    -e "s|@LISTEN_H2@|$listen_h2|; s|@HTTP2_ON@|$http2_on|; s|@FIXED_BODY@|$FIXED_BODY|" \
    benches/load/nginx-tls.conf.in > "$DIR/nginx-tls/nginx.conf"
  "${SERVER[@]}" nginx -c "$DIR/nginx-tls/nginx.conf" -p "$DIR/nginx-tls" 2>"$DIR/nginx-tls.log" & PIDS+=($!)
}
one_route_config() { # file port upstream_port [server lines...]: mcp-edge serving /mcp from the upstream, no admin listener; ROUTE_EXTRA: the route's own tables
  local file=$1 port=$2 upstream=$3
  shift 3
  {
    printf '[server]\nlisten = ["127.0.0.1:%s"]\n' "$port"
    [ $# -gt 0 ] && printf '%s\n' "$@"
    printf '[admin]\nlisten = ""\n[[route]]\npath = "/mcp"\nupstreams = ["http://127.0.0.1:%s/mcp"]\n' "$upstream"
    printf '%s\n' "${ROUTE_EXTRA:-}"
  } > "$file"
}
start_issuer() { # an authorization server (tests/peers/python/auth_server.py): exports AUTHORIZATION (a bearer token it signed) and sets AUTH_TABLE (a [route.auth] checking it)
  local issuer audience="https://bench.example/mcp" token
  issuer=$(port)
  .venv/bin/python tests/peers/python/auth_server.py "$issuer" >/dev/null 2>"$DIR/issuer.log" & PIDS+=($!)
  wait_port "$issuer"
  token=$(curl -sf "http://127.0.0.1:$issuer/mint" -d "{\"aud\": \"$audience\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  export AUTHORIZATION="Bearer $token"
  AUTH_TABLE=$(printf '[route.auth]\nissuer = "http://127.0.0.1:%s"\naudience = "%s"\njwks_url = "http://127.0.0.1:%s/jwks.json"' "$issuer" "$audience" "$issuer")
}
disk_config() { # file port admin_listen cache_dir: mcp-edge with the disk case's cache (8 MiB memory, the rest on disk) before UP
  cat > "$1" <<TOML
[server]
listen = ["127.0.0.1:$2"]
threads = $WORKERS
[admin]
listen = "$3"
[cache]
memory = "8MiB"
disk_path = "$4"
disk_size = "1GiB"
[[route]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$UP/mcp"]
TOML
}
fill_pass() { # url keys seconds: walk the keys in order for that long
  KEYS=$2 SEQUENTIAL=1 STRIDE=$WRK_THREADS "${CLIENT[@]}" wrk -t$WRK_THREADS -c16 -d"$3s" -s benches/load/random-read.lua "$1" >/dev/null
}
fill() { # url keys: sequential passes over the keys until one reaches the upstream no more
  fill_pass "$1" "$2" $(( $2 / 7000 + 2 ))
  for _ in 1 2 3 4 5; do
    local before
    before=$(upstream_reads)
    fill_pass "$1" "$2" $(( $2 / 40000 + 2 ))
    [ "$(upstream_reads)" = "$before" ] && return
  done
  echo "  (the cache could not be filled: some of these hits are misses)"
}
upstream_reads() { # how many resources/read the cached route's upstream has answered
  curl -s "http://127.0.0.1:$UP/mcp" -H 'content-type: application/json' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H 'mcp-name: reads' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"reads","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["content"][0]["text"])'
}
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
h2load_once() { # url body_file [seconds]: one h2load run of that POST over HTTP/2 (TLS), H2_CONNECTIONS
  # (16) connections × H2_STREAMS (8) concurrent streams, with the headers random-read.lua sends
  # for MCP_NAME (default demo://kib/1); prints a RESULT line (h2load_result.py: req/s, mean ms, errors)
  "${CLIENT[@]}" h2load -t"$WRK_THREADS" -c"${H2_CONNECTIONS:-16}" -m"${H2_STREAMS:-8}" -D"${3:-$DURATION}" -d "$2" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: resources/read' -H "mcp-name: ${MCP_NAME:-demo://kib/1}" \
    "$1" | python3 benches/load/h2load_result.py
}
