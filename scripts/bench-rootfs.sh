#!/usr/bin/env bash
# Start-up cost of a guest in a root filesystem: `compatrun --rootfs TREE -- /bin/true`
# side by side with the native start in the same namespaces, timed by hyperfine in one
# invocation per tree and round, as root and as uid 65534 (docs/PERFORMANCE.md,
# "Starting a guest in a root filesystem").
#
# Usage: scripts/bench-rootfs.sh [RUNS] [ROUNDS]   (default 30 runs per command, 3 rounds)
#
# Trees: scripts/test-trees.sh's bullseye (debootstrap minbase; /bin/true dynamically
# linked, glibc 2.31) and busybox (busybox-static; /bin/true static). Commands per tree:
#   native, root        unshare -m -p -f -u --mount-proc chroot TREE /bin/true
#   compatrun, root     compatrun --platform P [-k PERSONA] --rootfs TREE -- /bin/true,
#                       P = ptrace, seccomp; persona host, and rhel7 (bullseye) or 2.6
#                       (busybox)
#   native, uid 65534   setpriv ... unshare -r -m -p -f -u --mount-proc chroot TREE /bin/true
#   compatrun, uid 65534  setpriv ... compatrun --platform P --rootfs TREE -- /bin/true
# Prints, per tree, a markdown table: mean ± sd of the first round, and each round's
# ratio to the native start of the same user. Absolute times on a shared machine are
# noise; the ratios, measured side by side, are the result.
#
# Environment: COMPATRUN (default target/release/compatrun, built if missing), OUT (a
# directory for hyperfine's JSON, default target/bench-rootfs). Needs root; installs
# Debian's hyperfine if missing (NO_INSTALL=1 to never install).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-30}"
ROUNDS="${2:-3}"
OUT="${OUT:-target/bench-rootfs}"
[ "$(id -u)" -eq 0 ] || { echo "bench-rootfs: run as root (the native start and uid 65534 need it)" >&2; exit 1; }
if ! command -v hyperfine >/dev/null && [ "${NO_INSTALL:-0}" != 1 ]; then
  echo "bench-rootfs: installing hyperfine" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hyperfine >&2
fi
command -v hyperfine >/dev/null || { echo "bench-rootfs: hyperfine is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-rootfs: python3 is required" >&2; exit 1; }

COMPATRUN="${COMPATRUN:-target/release/compatrun}"
[ -x "$COMPATRUN" ] || cargo build --release >&2
COMPATRUN="$(realpath "$COMPATRUN")"
trees="$(realpath "$(bash scripts/test-trees.sh)")"
mkdir -p "$OUT"
NOBODY="setpriv --reuid 65534 --regid 65534 --clear-groups --"

for tree in bullseye busybox; do
  T="$trees/$tree"
  persona=rhel7
  [ "$tree" = busybox ] && persona=2.6
  for round in $(seq 1 "$ROUNDS"); do
    echo "bench-rootfs: $tree, round $round of $ROUNDS" >&2
    hyperfine -N --runs "$RUNS" --warmup 3 --style none \
      --export-json "$OUT/$tree-$round.json" \
      -n "native root" "unshare -m -p -f -u --mount-proc chroot $T /bin/true" \
      -n "ptrace root" "$COMPATRUN --platform ptrace --rootfs $T -- /bin/true" \
      -n "seccomp root" "$COMPATRUN --platform seccomp --rootfs $T -- /bin/true" \
      -n "ptrace $persona root" "$COMPATRUN --platform ptrace -k $persona --rootfs $T -- /bin/true" \
      -n "seccomp $persona root" "$COMPATRUN --platform seccomp -k $persona --rootfs $T -- /bin/true" \
      -n "native nobody" "$NOBODY unshare -r -m -p -f -u --mount-proc chroot $T /bin/true" \
      -n "ptrace nobody" "$NOBODY $COMPATRUN --platform ptrace --rootfs $T -- /bin/true" \
      -n "seccomp nobody" "$NOBODY $COMPATRUN --platform seccomp --rootfs $T -- /bin/true" \
      >/dev/null
  done
  python3 - "$OUT" "$tree" "$ROUNDS" <<'EOF'
import json, sys
out, tree, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.load(open(f"{out}/{tree}-{r}.json"))["results"] for r in range(1, rounds + 1)]
print(f"\n### {tree}\n")
print("| start | user | time (round 1) | against native, each round |")
print("|---|---|---:|---|")
for i, res in enumerate(runs[0]):
    name = res["command"]
    user = name.rsplit(" ", 1)[1]
    what = name.rsplit(" ", 1)[0]
    ratios = []
    for r in runs:
        native = next(x for x in r if x["command"] == f"native {user}")["mean"]
        ratios.append(f"{r[i]['mean'] / native:.2f}x")
    t = f"{res['mean'] * 1e3:.1f} ms ± {res['stddev'] * 1e3:.1f}"
    print(f"| {what} | {'uid 65534' if user == 'nobody' else 'root'} | {t} | "
          f"{'' if what == 'native' else ', '.join(ratios)} |")
EOF
done
