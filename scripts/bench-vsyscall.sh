#!/usr/bin/env bash
# Measures legacy vsyscall callers in the QEMU rig (tests/vm/run-in-vm.sh), side by side
# in one run: Debian's 6.1 kernel booted vsyscall=none with the guest under
# `compatrun -k rhel6` (call sites patched, and --no-patch), against native on the same
# kernel booted vsyscall=emulate (the kernel's own emulation of the page). Prints the
# raw lines; docs/PERFORMANCE.md has the figures.
#
# Workloads: a static loop of vsyscall time() calls through one `mov`+`call` site
# (tests/fixtures/vsyscall_sites.c, mode bench); from the real wheezy tree
# (scripts/old-rootfs.sh; its eglibc's time() is the glibc 2.12 sequence): perl loops of
# 20,000 and 200,000 time() calls (2,000 with --no-patch), one start of /bin/true, and
# 300 runs of /bin/true from dash. ROUNDS (default 3) pairs of boots, each workload twice
# per boot.
# The VM is QEMU TCG (software emulation) with 2 vCPUs on this machine's 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
cargo build --release -q
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-vsyscall.XXXXXX")
trap 'rm -rf "$work"' EXIT
cc -static -O1 -pthread -o "$work/vsyscall_sites" tests/fixtures/vsyscall_sites.c
old=$(bash scripts/old-rootfs.sh)
[ -n "$old" ] || { echo "bench-vsyscall: the wheezy corpus is missing" >&2; exit 1; }
mkdir -p "$work/wheezy/dev"
(cd "$old" && cp -a --parents usr/bin/perl usr/lib/libperl.so.5.14* lib64 bin/dash bin/sh bin/true \
   lib/x86_64-linux-gnu/ld-2.13.so lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
   lib/x86_64-linux-gnu/lib{c,dl,m,pthread,crypt}[.-]* "$work/wheezy/" 2>/dev/null || true)

perl() { echo "chroot wheezy /usr/bin/perl -e 'my \$t; \$t = time for 1..$1'"; }
trues="chroot wheezy /bin/dash -c 'i=0; while [ \$i -lt 300 ]; do /bin/true; i=\$((i+1)); done'"
prep='mknod wheezy/dev/null c 1 3; '
# One boot of each kind per round, alternating, so that a change in this machine's load
# hits both sides of a round alike. In the vsyscall=none boot, what never calls the
# vsyscall page (the starts and the 300 /bin/true) also runs natively, interleaved with
# compatrun: a same-boot ratio beside the cross-boot one.
none="$prep"
none+="./compatrun -k rhel6 -- ./vsyscall_sites bench 1000000; "
none+="./compatrun --no-patch -k rhel6 -- ./vsyscall_sites bench 2000; "
emulate="$prep cat /proc/cmdline; ./vsyscall_sites bench 1000000; "
for i in 1 2; do
  none+="echo start; time ./compatrun -k rhel6 -- chroot wheezy /bin/true; "
  none+="echo start-native-none; time chroot wheezy /bin/true; "
  none+="echo perl-patched; time ./compatrun -k rhel6 -- $(perl 20000); "
  none+="echo perl200k-patched; time ./compatrun -k rhel6 -- $(perl 200000); "
  none+="echo true300; time ./compatrun -k rhel6 -- $trues; "
  none+="echo true300-native-none; time $trues; "
  emulate+="echo start-native; time chroot wheezy /bin/true; "
  emulate+="echo perl-native; time $(perl 20000); "
  emulate+="echo perl200k-native; time $(perl 200000); "
  emulate+="echo true300-native; time $trues; "
done
none+="echo perl-no-patch-2000; time ./compatrun --no-patch -k rhel6 -- $(perl 2000); "
emulate+="echo perl-native-2000; time $(perl 2000); "
rig=(bash tests/vm/run-in-vm.sh --timeout 900 --add "$work/vsyscall_sites:vsyscall_sites"
     --add "$work/wheezy:wheezy" --elf target/release/compatrun:compatrun)
for r in $(seq "$ROUNDS"); do
  echo "### round $r: vsyscall=none, under compatrun"
  "${rig[@]}" -- "$none"
  echo "### round $r: vsyscall=emulate, native"
  "${rig[@]}" --append vsyscall=emulate -- "$emulate"
done
