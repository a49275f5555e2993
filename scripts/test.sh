#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test once per
# platform (COMPATRUN_PLATFORM, which compatrun reads as its default --platform); the
# tests that do not depend on the platform run once.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
# The real old user space (tests/old_userspace.rs and others), unless one is named already.
if [ -z "${COMPATRUN_OLD_ROOTFS:-}" ]; then
  old=$(bash scripts/old-rootfs.sh)
  if [ -n "$old" ]; then export COMPATRUN_OLD_ROOTFS="$old"; fi
fi
# Tests that do not depend on the platform (the VM and fuzz tests) run in the first
# pass only: later passes name the first one in COMPATRUN_FIRST_PASS.
first=""
for platform in ptrace seccomp; do
  echo "== the suite on the $platform platform" >&2
  # Every test starts with default signal actions, whatever the caller ignores (a
  # background job starts with SIGINT and SIGQUIT ignored): tests set what they need.
  COMPATRUN_PLATFORM=$platform COMPATRUN_FIRST_PASS=$first \
    env --default-signal cargo test --workspace --release "$@"
  first=${first:-$platform}
done
