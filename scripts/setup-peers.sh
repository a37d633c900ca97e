#!/usr/bin/env bash
# Installs the real peers the end-to-end tests drive: the official Python SDK (in .venv),
# @modelcontextprotocol/server-everything (in tests/peers/node), redis-server and chromium.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# dnslib: the DNS server the discovery tests control (tests/peers/python/peer_dns.py);
# opentelemetry-proto: the OTLP receiver the trace tests export to (otlp_receiver.py);
# PyJWT with cryptography: the authorization server that signs the auth tests' tokens
# (auth_server.py).
if ! .venv/bin/python -c "import mcp, dnslib, opentelemetry.proto, jwt, cryptography" 2>/dev/null; then
  echo "setup-peers: installing the MCP Python SDK, dnslib, opentelemetry-proto and PyJWT into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "mcp==2.3.0" "dnslib==0.9.26" \
    "opentelemetry-proto==1.45.2" "pyjwt[crypto]==2.15.1" "cryptography==51.0.1"
fi

if [ ! -f tests/peers/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
  echo "setup-peers: installing server-everything into tests/peers/node"
  (cd tests/peers/node && npm install --no-audit --no-fund --loglevel=error)
fi

# Debian's packages: redis-server for the shared-tier tests (they start their own servers;
# Valkey speaks the same), chromium for the dashboard's browser test.
missing=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-peers: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
