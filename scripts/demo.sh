#!/usr/bin/env bash
# Builds mcp-edge and starts the demo: a built-in MCP server with mcp-edge in front of it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  # Pingora's zlib-ng needs cmake to build.
  echo "demo: installing cmake"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq cmake
fi
cargo build --release -p mcp-edge
exec target/release/mcp-edge demo "$@"
