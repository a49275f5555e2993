#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test once per
# platform (COMPATRUN_PLATFORM, which compatrun reads as its default --platform).
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
# The real old user space (tests/old_userspace.rs and others), unless one is named already.
if [ -z "${COMPATRUN_OLD_ROOTFS:-}" ]; then
  old=$(bash scripts/old-rootfs.sh)
  if [ -n "$old" ]; then export COMPATRUN_OLD_ROOTFS="$old"; fi
fi
for platform in ptrace seccomp; do
  echo "== the suite on the $platform platform" >&2
  COMPATRUN_PLATFORM=$platform cargo test --workspace --release "$@"
done
