#!/usr/bin/env bash
# Prints the path of a minimal Debian root file system with systemd and logrotate (the host's
# release, from the host's mirror), made once with debootstrap and kept in $GLUU_ROOTFS_CACHE
# (default /var/cache/gluu-ha). tests/tests/under_systemd.rs copies it, installs gluu-ha into the copy
# and boots it with systemd-nspawn: the units run under a real systemd there. Needs root.
#
#   scripts/rootfs.sh        (make it if missing, print its path)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh >&2

. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
mirror=$(sed -n 's/^URIs: *//p; s/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\) .*/\2/p' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
cache=${GLUU_ROOTFS_CACHE:-/var/cache/gluu-ha}
# What the test needs inside besides minbase; a cache made with another list is not reused.
packages=systemd,systemd-sysv,dbus,logrotate
root=$cache/rootfs-$suite-$(printf %s "$packages" | sha256sum | cut -c1-8)

if [ ! -e "$root/.complete" ]; then
    mkdir -p "$cache"
    # Built beside the final path and renamed into place: an interrupted run leaves no
    # half-made tree that a later run would take for finished.
    tmp=$(mktemp -d "$cache/.rootfs-$suite.XXXXXX")
    chmod 755 "$tmp" # it becomes the container's /; mktemp made it 0700
    trap 'rm -rf "$tmp"' EXIT
    echo "rootfs: debootstrap $suite from $mirror into $root" >&2
    if ! debootstrap --variant=minbase --include="$packages" \
        "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2
        rm -f "$tmp.log"
        exit 1
    fi
    rm -f "$tmp.log"
    touch "$tmp/.complete"
    rm -rf "$root"
    mv "$tmp" "$root"
    trap - EXIT
fi
echo "$root"
