#!/usr/bin/env bash
# Boots Debian's own 6.1 kernel in QEMU (software emulation, vsyscall=none) with a
# busybox initramfs, runs one shell command line inside, prints its output and exits
# with its status (128+N for a death by signal N, as a shell reports it).
#
# Usage:
#   tests/vm/run-in-vm.sh [OPTIONS] [--] COMMAND...
#   tests/vm/run-in-vm.sh --prepare      # install/fetch everything, boot nothing
#
# Options (repeatable; DEST is relative to /work, the command's working directory):
#   --add SRC[:DEST]   copy a file or directory (recursively) into the VM
#   --elf SRC[:DEST]   copy an ELF plus its ldd libraries and dynamic loader (libs go
#                      to their host paths, so dynamically linked programs just run)
#   --append ARGS      extra kernel command line arguments
#   --timeout SECS     give up on the VM after SECS (default $VM_TIMEOUT or 120)
#   --prepare          only make sure qemu, busybox and the kernel are ready; exit 0
#
# COMMAND words are joined with spaces and run by busybox sh in /work, so one call can
# run several commands ("a; b; c"). stdout and stderr share the serial console, so
# they come back merged on stdout. PATH inside is /work:/bin:/sbin:/usr/bin:/usr/sbin.
#
# Exit status: the command's; 124 when the VM timed out; 125 when the VM ended
# without reporting a status (console log kept and named on stderr); 77 when QEMU
# or the kernel cannot be had here at all (apt cannot install/fetch them).
#
# Environment: VM_CACHE (default <repo>/target/vm-cache), VM_KERNEL (use this vmlinuz
# instead of Debian's package), VM_KERNEL_REFRESH=1 (re-resolve the newest 6.1
# image), VM_KEEP=1 (keep the run directory), VM_NO_STRIP=1 (copy ELFs with their
# debug info), VM_QUIET=1 (no progress lines on stderr).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${VM_CACHE:-$REPO/target/vm-cache}
TIMEOUT=${VM_TIMEOUT:-120}
APPEND_EXTRA=""
PREPARE=0
ADDS=()
ELFS=()

log() { [ "${VM_QUIET:-0}" = 1 ] || echo "run-in-vm: $*" >&2; }
die() { echo "run-in-vm: $1" >&2; exit "${2:-1}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --add) ADDS+=("$2"); shift 2 ;;
    --elf) ELFS+=("$2"); shift 2 ;;
    --append) APPEND_EXTRA="$APPEND_EXTRA $2"; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" 2 ;;
    *) break ;;
  esac
done
[ "$PREPARE" = 1 ] || [ $# -gt 0 ] || die "no command given (see --help)" 2
COMMAND="$*"

mkdir -p "$CACHE"
# One setup at a time (parallel test binaries share the cache).
exec 9>"$CACHE/.lock"
flock 9

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  $SUDO apt-get update -qq >&2 || return 1
  APT_UPDATED=1
}

# --- host tools: qemu-system-x86, busybox-static ------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# busybox-static provides /bin/busybox; the dynamic "busybox" package would not run in
# the initramfs, so insist on the static one.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt_update && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; } \
    || die "cannot install ${need[*]} with apt-get" 77
fi
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 missing after install" 77
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing" 77

# --- kernel: newest linux-image-6.1.0-N-amd64 from bookworm, boot/ only --------------
if [ -n "${VM_KERNEL:-}" ]; then
  KERNEL=$VM_KERNEL
else
  KDIR=$CACHE/kernel
  KERNEL=$(ls -1 "$KDIR"/*/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$KERNEL" ] || [ "${VM_KERNEL_REFRESH:-0}" = 1 ]; then
    newest() {
      apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
        | awk '{print $1}' | sort -V | tail -n1
    }
    PKG=$(newest)
    if [ -z "$PKG" ]; then apt_update || die "apt-get update failed" 77; PKG=$(newest); fi
    [ -n "$PKG" ] || die "no linux-image-6.1.0-*-amd64 package known to apt (is this bookworm?)" 77
    if [ ! -f "$KDIR/$PKG/boot/vmlinuz-${PKG#linux-image-}" ]; then
      log "fetching $PKG"
      tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
      # -o APT::Sandbox::User=root: the _apt user cannot write into target/.
      dl() { (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$PKG" >&2); }
      # A stale package list may name a version the mirror has dropped: refresh once.
      dl || { apt_update && PKG=$(newest) && [ -n "$PKG" ] && dl; } \
        || { rm -rf "$tmp"; die "apt-get download $PKG failed" 77; }
      # Only boot/ is needed (no modules: initramfs + serial console are built in).
      mkdir -p "$tmp/x"
      dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp/x" ./boot/
      rm -rf "${KDIR:?}/$PKG"; mkdir -p "$KDIR"
      mv "$tmp/x" "$KDIR/$PKG"
      rm -rf "$tmp"
    fi
    KERNEL="$KDIR/$PKG/boot/vmlinuz-${PKG#linux-image-}"
  fi
fi
[ -f "$KERNEL" ] || die "kernel $KERNEL missing" 77

# --- base initramfs (busybox + /init), cached -----------------------------------------
BASE=$CACHE/base-initramfs.cpio
INIT_SRC=$(cat <<'EOF'
#!/bin/sh
export PATH=/work:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
# Keep kernel messages off the console from here on (dmesg still has them).
dmesg -n 1
stty -onlcr 2>/dev/null
cd /work
echo "@@BEGIN@@"
sh /cmd.sh </dev/null 2>&1
rc=$?
echo "@@EXIT $rc@@"
poweroff -f
EOF
)
if [ ! -f "$BASE" ] || [ "$BUSYBOX" -nt "$BASE" ] || [ "${BASH_SOURCE[0]}" -nt "$BASE" ]; then
  log "building base initramfs"
  b=$(mktemp -d "$CACHE/base.XXXXXX")
  mkdir -p "$b"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,work,etc,lib64}
  cp "$BUSYBOX" "$b/bin/busybox"
  for applet in $("$BUSYBOX" --list-full); do
    [ -e "$b/$applet" ] || ln -s /bin/busybox "$b/$applet"
  done
  printf '%s\n' "$INIT_SRC" >"$b/init"
  chmod 755 "$b/init"
  echo "root:x:0:0:root:/root:/bin/sh" >"$b/etc/passwd"
  echo "root:x:0:" >"$b/etc/group"
  (cd "$b" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) >"$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
  rm -rf "$b"
fi

if [ "$PREPARE" = 1 ]; then
  echo "qemu=$QEMU kernel=$KERNEL"
  exit 0
fi
flock -u 9

# --- per-run payload: the command, --add and --elf files --------------------------
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
cleanup() { [ "${VM_KEEP:-0}" = 1 ] && log "kept $RUN" || rm -rf "$RUN"; }
trap cleanup EXIT
P=$RUN/payload
mkdir -p "$P/work"
printf '%s\n' "$COMMAND" >"$P/cmd.sh"

split() { # SRC[:DEST] -> SRC_ DEST_ (DEST defaults to the basename)
  SRC_=${1%%:*}; DEST_=${1#*:}; [ "$DEST_" != "$1" ] || DEST_=$(basename "$SRC_")
  [ -e "$SRC_" ] || die "no such file: $SRC_" 2
}
for a in ${ADDS[@]+"${ADDS[@]}"}; do
  split "$a"; mkdir -p "$(dirname "$P/work/$DEST_")"; cp -a "$SRC_" "$P/work/$DEST_"
done
copy_elf() { # host file -> same path (libraries) or /work/DEST (the program)
  cp -L "$1" "$2"
  if [ "${VM_NO_STRIP:-0}" != 1 ] && command -v strip >/dev/null; then
    chmod u+w "$2"; strip --strip-debug "$2" 2>/dev/null || true
  fi
}
for e in ${ELFS[@]+"${ELFS[@]}"}; do
  split "$e"; mkdir -p "$(dirname "$P/work/$DEST_")"; copy_elf "$SRC_" "$P/work/$DEST_"
  # "libfoo.so => /path (addr)", "/lib64/ld-linux-x86-64.so.2 (addr)"; none for static.
  for lib in $(ldd "$SRC_" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$P$lib" ] && continue
    mkdir -p "$(dirname "$P$lib")"; copy_elf "$lib" "$P$lib"
  done
done
# Merged /usr on the host: ldd names /lib/x86_64-linux-gnu/...; make /usr/lib agree.
[ -d "$P/lib/x86_64-linux-gnu" ] && mkdir -p "$P/usr/lib" \
  && ln -s /lib/x86_64-linux-gnu "$P/usr/lib/x86_64-linux-gnu"
(cd "$P" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) >"$RUN/payload.cpio"
# The kernel unpacks concatenated archives in order; gzip -1 keeps packing quick.
cat "$BASE" "$RUN/payload.cpio" | gzip -1 >"$RUN/initramfs.gz"

# --- boot -----------------------------------------------------------------------
CONSOLE=$RUN/console.log
log "booting $(basename "$KERNEL") (vsyscall=none, tcg)"
t0=$(date +%s.%N)
set +e
timeout -k 5 "$TIMEOUT" "$QEMU" \
  -kernel "$KERNEL" -initrd "$RUN/initramfs.gz" \
  -append "console=ttyS0 vsyscall=none panic=-1 quiet$APPEND_EXTRA" \
  -nographic -no-reboot -m 512 -smp 2 -accel tcg -cpu max -nic none \
  </dev/null >"$CONSOLE" 2>"$RUN/qemu.err"
qrc=$?
set -e
t1=$(date +%s.%N)
log "vm ran $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"

tr -d '\r' <"$CONSOLE" >"$RUN/clean.log"
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  VM_KEEP=1; cat "$RUN/clean.log" >&2
  die "VM timed out after ${TIMEOUT}s (console: $CONSOLE)" 124
fi
status=$(grep -ao '@@EXIT [0-9]*@@' "$RUN/clean.log" | tail -n1 | tr -dc 0-9 || true)
if [ -z "$status" ]; then
  VM_KEEP=1; cat "$RUN/clean.log" "$RUN/qemu.err" >&2
  die "VM ended (qemu status $qrc) without reporting the command's status (console: $CONSOLE)" 125
fi
# The output is what lies between the markers (the end marker may follow output that
# has no final newline: keep that part as it was).
awk '/@@BEGIN@@/ && !on {on=1; next}
     on && /@@EXIT [0-9]+@@/ {sub(/@@EXIT [0-9]+@@.*/, ""); printf "%s", $0; exit}
     on' "$RUN/clean.log"
exit "$status"
