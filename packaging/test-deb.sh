#!/usr/bin/env bash
# Builds the .deb, checks it with lintian, installs it, runs the installed binary as the
# mcp-edge user with the installed configuration, reloads it, then removes and purges it.
# Needs root (dpkg) and a release build (target/release/mcp-edge). systemd does not run here:
# the unit is checked with systemd-analyze verify where available.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
command -v lintian >/dev/null || apt-get install -y -qq lintian >/dev/null
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
command -v pkill >/dev/null || apt-get install -y -qq procps >/dev/null

say "build"
cargo deb -p mcp-edge --no-build --quiet
TARGET=${CARGO_TARGET_DIR:-target}
DEB=$(ls -t "$TARGET"/debian/mcp-edge_*.deb | head -1)
echo "$DEB"

say "lintian"
# Errors fail the build; warnings are listed and explained in packaging/README.md.
lintian --fail-on error --suppress-tags-from-file packaging/lintian-explained "$DEB" || fail "lintian errors"

say "install"
dpkg -i "$DEB"
getent passwd mcp-edge >/dev/null || fail "no mcp-edge user"
test -x /usr/bin/mcp-edge || fail "no binary"
test -f /usr/share/mcp-edge/grafana-dashboard.json || fail "no Grafana dashboard"
test -f /usr/share/mcp-edge/mcp-edge-alerts.yml || fail "no alert rules"
test -f /usr/share/mcp-edge/mcp-edge-scaling.yml || fail "no scaling rules"
test -f /lib/systemd/system/mcp-edge.service || test -f /usr/lib/systemd/system/mcp-edge.service || fail "no unit"
# (Output is captured before matching: with pipefail, `cmd | grep -q` fails when grep exits
# early and cmd dies of SIGPIPE.)
contains() { [[ "$1" == *"$2"* ]]; }
contains "$(dpkg-query -W -f='${Conffiles}\n' mcp-edge)" /etc/mcp-edge/mcp-edge.toml || fail "config is not a conffile"
# Who can read the cached answers (docs/SECURITY.md, disk cache): the service's user only.
test "$(stat -c '%U:%G %a' /var/cache/mcp-edge)" = "mcp-edge:mcp-edge 750" || fail "cache directory: $(stat -c '%U:%G %a' /var/cache/mcp-edge)"
test "$(stat -c '%U:%G %a' /etc/mcp-edge/mcp-edge.toml)" = "root:mcp-edge 640" || fail "config: $(stat -c '%U:%G %a' /etc/mcp-edge/mcp-edge.toml)"
UNIT_TEXT=$(cat /lib/systemd/system/mcp-edge.service /usr/lib/systemd/system/mcp-edge.service 2>/dev/null || true)
for line in User=mcp-edge CacheDirectoryMode=0750 UMask=0027; do
  contains "$UNIT_TEXT" "$line" || fail "the unit lacks $line"
done
/usr/bin/mcp-edge check --config /etc/mcp-edge/mcp-edge.toml
if command -v systemd-analyze >/dev/null; then
  say "systemd-analyze verify (installed unit)"
  UNIT=$(ls /lib/systemd/system/mcp-edge.service /usr/lib/systemd/system/mcp-edge.service 2>/dev/null | head -1)
  systemd-analyze verify "$UNIT" >/tmp/mcp-edge-unit.txt 2>&1 || true
  cat /tmp/mcp-edge-unit.txt
  ! grep -q "mcp-edge.service" /tmp/mcp-edge-unit.txt || fail "systemd-analyze found problems in the unit"  # a file: no pipe
fi

say "serve as mcp-edge with the installed config"
UPSTREAMS=()
"$TARGET"/release/mcp-edge upstream --listen 127.0.0.1:3001 --name first >/tmp/mcp-edge-up1.log 2>&1 & UPSTREAMS+=($!)
"$TARGET"/release/mcp-edge upstream --listen 127.0.0.1:3002 --name second >/tmp/mcp-edge-up2.log 2>&1 & UPSTREAMS+=($!)
# The upstreams listen before the proxy starts: a first request refused would eject its replica
# for a health interval.
for port in 3001 3002; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/mcp" && break; sleep 0.1; done
done
runuser -u mcp-edge -- /usr/bin/mcp-edge run --config /etc/mcp-edge/mcp-edge.toml >/tmp/mcp-edge-run.log 2>&1 &
EDGE=$!
cleanup() { kill "$EDGE" "${UPSTREAMS[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:9090/healthz >/dev/null && break; sleep 0.1; done
whoami_through_edge() {
  curl -s http://127.0.0.1:8080/mcp -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H 'mcp-name: whoami' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
}
contains "$(whoami_through_edge)" '"text":"first"' || { cat /tmp/mcp-edge-run.log; fail "no answer through the installed proxy"; }
test "$(ps -o user= -p "$EDGE" | tr -d ' ')" = mcp-edge || test "$(ps -o user= --ppid "$EDGE" | tr -d ' ' | head -1)" = mcp-edge \
  || fail "not running as mcp-edge"
[ -n "$(ls -A /var/cache/mcp-edge)" ] || fail "the disk cache was not created in /var/cache/mcp-edge"

say "reload after editing the config"
sed -i 's|http://127.0.0.1:3001/mcp|http://127.0.0.1:3002/mcp|' /etc/mcp-edge/mcp-edge.toml
pkill -HUP -f "/usr/bin/mcp-edge run --config /etc/mcp-edge/mcp-edge.toml"
for _ in $(seq 100); do contains "$(whoami_through_edge)" '"text":"second"' && break; sleep 0.1; done
contains "$(whoami_through_edge)" '"text":"second"' || { cat /tmp/mcp-edge-run.log; fail "SIGHUP did not apply the edited config"; }
cleanup
wait 2>/dev/null || true

say "remove keeps config and cache"
dpkg -r mcp-edge
test ! -e /usr/bin/mcp-edge || fail "binary left after remove"
test -f /etc/mcp-edge/mcp-edge.toml || fail "remove deleted the config"
test -d /var/cache/mcp-edge || fail "remove deleted the cache"

say "purge removes them"
dpkg -P mcp-edge
test ! -e /etc/mcp-edge || fail "purge left /etc/mcp-edge"
test ! -e /var/cache/mcp-edge || fail "purge left the cache"
echo "packaging: 1 passed, 0 failed"
