#!/usr/bin/env bash
# The whole test suite: unit tests of policies/, end-to-end tests of the real binary against
# the demo upstream, the Python SDK and server-everything. One release build serves them all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-peers.sh
cargo test --release --workspace "$@"
