#!/usr/bin/env bash
# Builds, once, the real trees and images tests/real_trees.rs runs (and
# scripts/bench-rootfs.sh measures), under target/test-trees/. Each is made under a
# temporary name and recorded in a stamp file only when complete: later runs reuse it,
# a half-made one (no stamp, or a stamp of an older recipe) is made again.
#   bullseye/    Debian 11 minbase, by `debootstrap --variant=minbase` (~40 s, 215 MB).
#                Left as debootstrap made it: tests bring their own files with --bind.
#   busybox/     Debian's busybox-static (scripts/test-deps.sh installs it) with every
#                applet linked in /bin, a passwd and group, empty proc, sys, dev, tmp, mnt.
#   oci/         an OCI layout made by umoci from bullseye, two layers:
#                  1. the tree (umoci repack);
#                  2. umoci repack of deletions: /etc/issue.net (a file whiteout),
#                     and in /etc/update-motd.d 10-uname deleted and only-above
#                     added (umoci 0.4.7 was seen to leave a deleted directory out of
#                     its diff, so none is deleted here);
#                config: Cmd /bin/bash, Env LANG=C.UTF-8, WorkingDir /root.
#   oci.tar      that layout as a tar.
#   docker.tar   `skopeo copy` of it to a docker-archive (tag bullseye:latest).
#   oci-opaque/  oci/ plus a third layer by `umoci insert --opaque` of a directory
#                holding only `only-upper` at /etc/skel (an opaque directory: the
#                tree's skel files vanish). umoci up to 0.4.7 (Debian 12's) writes
#                such a layer without the tar end-of-archive blocks and without the
#                last file's padding (opencontainers/umoci#436, fixed after 0.4.7);
#                Go-based engines accept it.
# Needs root (debootstrap, umoci unpack) and deb.debian.org (COMPATRUN_DEBIAN_MIRROR
# names another mirror). Prints the directory. Packages: scripts/test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="target/test-trees"
mirror="${COMPATRUN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$out"
# One builder at a time (two test binaries may ask at once).
exec 9>"$out/.lock"
flock 9

# is_done NAME RECIPE: whether NAME was completed with this RECIPE.
is_done() { [ "$(cat "$out/$1.ok" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" >"$out/$1.ok"; }

recipe="debootstrap --variant=minbase bullseye"
if ! is_done bullseye "$recipe"; then
  rm -rf "$out/bullseye" "$out/bullseye.tmp" "$out/bullseye.ok"
  echo "test-trees: $recipe ($mirror)" >&2
  start=$SECONDS
  debootstrap --variant=minbase bullseye "$out/bullseye.tmp" "$mirror" >"$out/debootstrap.log" 2>&1 ||
    { tail -5 "$out/debootstrap.log" >&2; exit 1; }
  mv "$out/bullseye.tmp" "$out/bullseye"
  echo "test-trees: bullseye made in $((SECONDS - start)) s, $(du -sh "$out/bullseye" | cut -f1)" >&2
  mark bullseye "$recipe"
fi

recipe="busybox-static $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo none) v2"
if ! is_done busybox "$recipe"; then
  [ -x /bin/busybox ] || { echo "test-trees: /bin/busybox missing (busybox-static)" >&2; exit 1; }
  rm -rf "$out/busybox" "$out/busybox.tmp" "$out/busybox.ok"
  bb="$out/busybox.tmp"
  mkdir -p "$bb"/{bin,etc,proc,sys,dev,tmp,root,mnt}
  cp /bin/busybox "$bb/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$bb/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$bb/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$bb/etc/group"
  chmod 1777 "$bb/tmp"
  mv "$bb" "$out/busybox"
  mark busybox "$recipe"
fi

recipe="umoci: 2 layers (whiteouts), oci.tar, skopeo docker-archive; 3rd layer opaque /etc/skel; v3"
if ! is_done images "$recipe"; then
  rm -rf "$out/oci" "$out/oci.tar" "$out/docker.tar" "$out/oci-opaque" "$out/images.ok" "$out/images.tmp"
  echo "test-trees: images of bullseye with umoci and skopeo" >&2
  start=$SECONDS
  w="$out/images.tmp"
  mkdir -p "$w"
  img="$w/oci:bullseye"
  umoci init --layout "$w/oci"
  umoci new --image "$img"
  # Layer 1: the tree.
  umoci unpack --image "$img" "$w/b1" >/dev/null
  cp -a "$out/bullseye/." "$w/b1/rootfs/"
  umoci repack --image "$img" "$w/b1" >/dev/null
  umoci config --image "$img" --config.cmd /bin/bash --config.env LANG=C.UTF-8 \
    --config.workingdir /root >/dev/null
  # Layer 2: deletions as umoci's own diff encodes them.
  umoci unpack --image "$img" "$w/b2" >/dev/null
  rm "$w/b2/rootfs/etc/issue.net"
  rm "$w/b2/rootfs/etc/update-motd.d/10-uname"
  echo "from the second layer" >"$w/b2/rootfs/etc/update-motd.d/only-above"
  umoci repack --image "$img" "$w/b2" >/dev/null
  umoci gc --layout "$w/oci"
  tar -C "$w/oci" -cf "$w/oci.tar" .
  skopeo copy --quiet "oci:$w/oci:bullseye" "docker-archive:$w/docker.tar:bullseye:latest"
  # Layer 3, in a copy: an opaque directory.
  cp -a "$w/oci" "$w/oci-opaque"
  mkdir "$w/skel"
  echo "from the third layer" >"$w/skel/only-upper"
  umoci insert --image "$w/oci-opaque:bullseye" --opaque "$w/skel" /etc/skel >/dev/null
  umoci gc --layout "$w/oci-opaque"
  mv "$w/oci" "$w/oci.tar" "$w/docker.tar" "$w/oci-opaque" "$out/"
  rm -rf "$w"
  chmod -R a+rX "$out/oci" "$out/oci.tar" "$out/docker.tar" "$out/oci-opaque"
  echo "test-trees: images made in $((SECONDS - start)) s" >&2
  mark images "$recipe"
fi
# Readable by uid 65534 (the unprivileged runs) down to the trees, which stay as made.
chmod a+rx "$out"
echo "$out"
