#!/usr/bin/env bash
# Installs the real MCP peers the end-to-end tests drive: the official Python SDK (in .venv)
# and @modelcontextprotocol/server-everything (in tests/peers/node). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import mcp" 2>/dev/null; then
  echo "setup-peers: installing the MCP Python SDK into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "mcp==2.3.0"
fi

if [ ! -f tests/peers/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
  echo "setup-peers: installing server-everything into tests/peers/node"
  (cd tests/peers/node && npm install --no-audit --no-fund --loglevel=error)
fi
