#!/usr/bin/env bash
# Measures legacy vsyscall callers in the QEMU rig (tests/vm/run-in-vm.sh), side by side
# in one run: Debian's 6.1 kernel booted vsyscall=none with the guest under
# `compatrun -k rhel6` (call sites patched, and --no-patch), against native on the same
# kernel booted vsyscall=emulate (the kernel's own emulation of the page). Prints the
# raw lines; docs/PERFORMANCE.md has the figures.
#
# Workloads: a static loop of vsyscall time() calls through one `mov`+`call` site
# (tests/fixtures/vsyscall_sites.c, mode bench); a perl loop of 20,000 time() calls and
# 300 runs of /bin/true from dash, both from the real wheezy tree (scripts/old-rootfs.sh;
# its eglibc's time() is the glibc 2.12 sequence). Each is run ROUNDS times (default 3).
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

perl="chroot wheezy /usr/bin/perl -e 'my \$t; \$t = time for 1..20000'"
trues="chroot wheezy /bin/dash -c 'i=0; while [ \$i -lt 300 ]; do /bin/true; i=\$((i+1)); done'"
prep='mknod wheezy/dev/null c 1 3; '
none=$prep
emulate=$prep
for r in $(seq "$ROUNDS"); do
  none+="echo '== round $r'; ./compatrun -k rhel6 -- ./vsyscall_sites bench 1000000; "
  none+="./compatrun --no-patch -k rhel6 -- ./vsyscall_sites bench 2000; "
  none+="echo perl-patched; time ./compatrun -k rhel6 -- $perl; "
  none+="echo perl-no-patch; time ./compatrun --no-patch -k rhel6 -- $perl; "
  none+="echo true300; time ./compatrun -k rhel6 -- $trues; "
  emulate+="echo '== round $r'; ./vsyscall_sites bench 1000000; "
  emulate+="echo perl-native; time $perl; "
  emulate+="echo true300-native; time $trues; "
done
rig=(bash tests/vm/run-in-vm.sh --timeout 900 --add "$work/vsyscall_sites:vsyscall_sites"
     --add "$work/wheezy:wheezy" --elf target/release/compatrun:compatrun)
echo "### vsyscall=none, under compatrun"
"${rig[@]}" -- "$none"
echo "### vsyscall=emulate, native"
"${rig[@]}" --append vsyscall=emulate -- "cat /proc/cmdline; $emulate"
