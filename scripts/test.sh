#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
cargo test --workspace --release "$@"
