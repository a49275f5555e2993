#!/usr/bin/env bash
# Installs what compatrun's tests need from Debian, only if something is missing.
# Used by scripts/test.sh; safe to run again (it does nothing when all is present).
set -euo pipefail

PKGS=(
  gcc make tar coreutils bash procps   # the real programs the tests compare with native runs
  libc6-dev-i386 gcc-multilib          # i386 C fixtures (32-bit guests must be caught too)
  python3.11 libpython3.11-testsuite   # CPython's own regression tests, run under compatrun
  qemu-system-x86 busybox-static       # tests/vm: a vsyscall=none VM (kernel: target/vm-cache)
  python3-minimal mawk                 # `python3` and `awk` on PATH: tests/programs/, tests/fixtures/ptydrive.py
  strace gdb                           # debuggers inside a seccomp-platform guest: platforms.rs
  binutils                             # objdump -d, which tests/scan.rs compares the scanner with
  stress-ng                            # load under compatrun: load.rs
  debootstrap skopeo umoci             # real trees and images made by real tools: real_trees.rs
  debian-archive-keyring               # the keys debootstrap checks bullseye's Release file with
  podman runc conmon                   # a real engine calling compatrun as its runtime: oci.rs
  libseccomp-dev                       # builds compatrun: OCI seccomp profiles (src/oci/seccomp.rs)
  containerd                           # containerd and its runc shim calling compatrun: oci_containerd.rs
  docker.io                            # Docker 20.10 (dockerd, its client, containerd): oci_docker.rs
  python3-grpcio                       # tests/fixtures/cri_client.py, a CRI client: oci_containerd.rs
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "test-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
