#!/usr/bin/env bash
# `compatrun scan` against `objdump -d` over the same ELF files, side by side, in turns.
# Usage: scripts/bench-scan.sh TREE [RUNS]   (build first: cargo build --release)
# objdump runs two at a time (xargs -P 2), as the scan uses both cores; both read warm
# files (one untimed warm-up each). Prints wall and CPU seconds per run.
set -euo pipefail
cd "$(dirname "$0")/.."
tree="${1:?usage: scripts/bench-scan.sh TREE [RUNS]}"
runs="${2:-3}"
bin=target/release/compatrun
list=$(mktemp)
trap 'rm -f "$list"' EXIT
"$bin" scan --json --rootfs "$tree" | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.stdout.write("".join(sys.argv[1] + f["path"] + "\0" for f in d["files"]))' "$tree" > "$list"
echo "$(tr -cd '\0' < "$list" | wc -c) ELF files in $tree"
scan() { "$bin" scan --rootfs "$tree" > /dev/null; }
objdump_all() { xargs -0 -n 20 -P 2 objdump -d < "$list" > /dev/null; }
scan; objdump_all
for i in $(seq "$runs"); do
  for what in scan objdump_all; do
    /usr/bin/time -f "$what run $i: %e s wall, %U s user, %S s sys" bash -c "$(declare -f scan objdump_all); bin=$bin tree=$tree list=$list $what"
  done
done
