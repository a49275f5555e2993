#!/usr/bin/env bash
# Builds, once, the real trees and images tests/real_trees.rs runs, under
# target/test-trees/ (reused by later runs; a half-made one is rebuilt):
#   bullseye/         Debian 11 minbase, by debootstrap from deb.debian.org (~1 min, root)
#   oci/              an OCI layout made by umoci from it: layer 1 the tree, layer 2
#                     deleting /etc/issue.net (a whiteout) and replacing /etc/update-motd.d
#   oci.tar           that layout as a tar
#   docker.tar        skopeo copy of it to a docker-archive
# Needs root (debootstrap, umoci unpack); the packages come from scripts/test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="target/test-trees"
mkdir -p "$out"
tree="$out/bullseye"
if [ ! -e "$tree/.complete" ]; then
  rm -rf "$tree"
  echo "test-trees: debootstrap bullseye (minbase)" >&2
  debootstrap --variant=minbase bullseye "$tree" http://deb.debian.org/debian >"$out/debootstrap.log" 2>&1 ||
    { tail -5 "$out/debootstrap.log" >&2; exit 1; }
  touch "$tree/.complete"
fi
if [ ! -e "$out/images.complete" ]; then
  rm -rf "$out/oci" "$out/oci.tar" "$out/docker.tar" "$out/bundle" "$out/bundle2"
  umoci init --layout "$out/oci"
  umoci new --image "$out/oci:bullseye"
  umoci unpack --image "$out/oci:bullseye" "$out/bundle" >/dev/null
  cp -a "$tree/." "$out/bundle/rootfs/"
  rm -f "$out/bundle/rootfs/.complete"
  umoci repack --image "$out/oci:bullseye" "$out/bundle" >/dev/null
  umoci config --image "$out/oci:bullseye" --config.cmd /bin/bash --config.env LANG=C.UTF-8 \
    --config.workingdir /root >/dev/null
  umoci unpack --image "$out/oci:bullseye" "$out/bundle2" >/dev/null
  rm "$out/bundle2/rootfs/etc/issue.net"
  rm -rf "$out/bundle2/rootfs/etc/update-motd.d"
  mkdir "$out/bundle2/rootfs/etc/update-motd.d"
  echo "from the second layer" >"$out/bundle2/rootfs/etc/update-motd.d/only-above"
  umoci repack --image "$out/oci:bullseye" "$out/bundle2" >/dev/null
  umoci gc --layout "$out/oci"
  rm -rf "$out/bundle" "$out/bundle2"
  tar -C "$out/oci" -cf "$out/oci.tar" .
  skopeo copy --quiet "oci:$out/oci:bullseye" "docker-archive:$out/docker.tar:bullseye:latest"
  touch "$out/images.complete"
fi
chmod -R a+rX "$out" 2>/dev/null || true
echo "$out"
