#!/bin/sh
# Build a Debian base image from Debian's own packages, for machines with no image registry.
#
#   asterisk-images/base/build-base.sh [SUITE] [TAG] [MIRROR]
#     SUITE   Debian suite (default bookworm)
#     TAG     image tag (default siplab/debian:$SUITE)
#     MIRROR  Debian mirror (default: the first deb.debian.org-style URI apt uses here,
#             else http://deb.debian.org/debian)
#
# Steps: debootstrap --variant=minbase into a temporary directory, tar it into the cache
# (${SIPLAB_CACHE:-~/.cache/siplab}/rootfs-debian-$SUITE.tar; reused while it exists, delete it
# to refresh), then `docker import` the tarball. Needs root (debootstrap chroots), the
# debootstrap package and a running Docker engine. lab/docker/base_image.py drives the same
# steps from Python; this script is for people building by hand.
set -eu

SUITE="${1:-bookworm}"
TAG="${2:-siplab/debian:$SUITE}"
MIRROR="${3:-}"
CACHE="${SIPLAB_CACHE:-$HOME/.cache/siplab}"
TARBALL="$CACHE/rootfs-debian-$SUITE.tar"

if [ -z "$MIRROR" ]; then
    MIRROR=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
                 /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
             | awk '{print $2}' | head -n 1)
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    ROOT=$(mktemp -d "$CACHE/rootfs-$SUITE.XXXXXX")
    trap 'rm -rf "$ROOT"' EXIT
    echo "debootstrap $SUITE from $MIRROR into $ROOT" >&2
    debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR"
    case "$SUITE" in
    sid|unstable)
        # sid has no -updates or -security suites. A frozen mirror's sid Release file has an
        # expired Valid-Until (debootstrap does not check it; apt-get update does).
        printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$ROOT/etc/apt/sources.list"
        printf 'Acquire::Check-Valid-Until "false";\n' > "$ROOT/etc/apt/apt.conf.d/99siplab-no-valid-until"
        ;;
    *)
        # Same sources as a stock image: the suite, its updates and security.
        printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
            "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SUITE" > "$ROOT/etc/apt/sources.list"
        ;;
    esac
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
    tar -C "$ROOT" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi
docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    "$TARBALL" "$TAG" >/dev/null
echo "$TAG"
