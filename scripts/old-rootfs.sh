#!/usr/bin/env bash
# Unpacks the real old user space (a 2013 Debian wheezy tree, ../shared/corpus) once,
# outside the source tree, and prints its path; prints nothing when the corpus is absent.
# Used by scripts/test.sh to set COMPATRUN_OLD_ROOTFS. Safe to run again: a finished
# unpack is marked, and a half-finished one (an interrupted run) is redone.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${COMPATRUN_OLD_CORPUS:-$(pwd)/../shared/corpus/wheezy-amd64.tar.xz}"
[ -f "$corpus" ] || exit 0
dest="${COMPATRUN_OLD_ROOTFS_DIR:-${TMPDIR:-/tmp}/compatrun-old-rootfs/wheezy-amd64}"
stamp="$dest.done"
if [ ! -f "$stamp" ] || [ "$corpus" -nt "$stamp" ]; then
  rm -rf "$dest" "$stamp"
  mkdir -p "$dest"
  echo "old-rootfs: unpacking $(basename "$corpus") into $dest" >&2
  tar -C "$dest" --numeric-owner -xJf "$corpus"
  touch "$stamp"
fi
echo "$dest"
