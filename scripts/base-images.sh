#!/usr/bin/env bash
# Builds stand-ins for the lab's base images from Debian packages, for machines that reach no
# image registry (air-gapped hospital networks, CI):
#
#   dicomlab-base/debian:bookworm-minbase   debootstrap --variant=minbase, then docker import
#   dicomlab-base/python:3.11-slim          Debian's python3 + venv + pip, the host's CA bundle
#   dicomlab-base/redis:7                   Debian's redis-server
#
# The debootstrap root file system is cached as a tarball ($DICOMLAB_CACHE, default
# ~/.cache/dicomlab), and an image that already exists is not rebuilt: a second run takes seconds.
#
# Usage: scripts/base-images.sh [--force] [--print-env]
#   --force      rebuild everything, cache included
#   --print-env  print PYTHON_IMAGE=... and REDIS_IMAGE=... for the compose build arguments
# Needs: root (debootstrap), a running Docker engine, a Debian mirror (DEBIAN_MIRROR).
set -euo pipefail
cd "$(dirname "$0")/.."

MINBASE_IMAGE=${MINBASE_IMAGE:-dicomlab-base/debian:bookworm-minbase}
STANDIN_PYTHON_IMAGE=${STANDIN_PYTHON_IMAGE:-dicomlab-base/python:3.11-slim}
STANDIN_REDIS_IMAGE=${STANDIN_REDIS_IMAGE:-dicomlab-base/redis:7}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DICOMLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dicomlab}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

force=0 print_env=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --print-env) print_env=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "base-images: $*" >&2; }
have_image() { [ "$force" -eq 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || { log "no Docker engine answers (start dockerd, or run scripts/docker-engine.sh)"; exit 1; }

minbase() {
  have_image "$MINBASE_IMAGE" && { log "$MINBASE_IMAGE exists"; return; }
  local tarball="$CACHE/$SUITE-minbase.tar"
  if [ "$force" -eq 1 ] || [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
    [ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
    mkdir -p "$CACHE"
    local root
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' RETURN
    log "debootstrap --variant=minbase $SUITE from $MIRROR (once; cached in $tarball)"
    if ! debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
      tail -n 30 "$CACHE/debootstrap.log" >&2
      log "debootstrap failed (full log: $CACHE/debootstrap.log)"
      exit 1
    fi
    # The updates and security suites too, so images built on top get fixes.
    cat > "$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $SUITE-security main
SOURCES
    # Slim like the official images: no apt caches, no documentation, no locales.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/info/*
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
  else
    log "using cached root file system $tarball"
  fi
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" "$MINBASE_IMAGE" >/dev/null
  log "imported $MINBASE_IMAGE"
}

standin() {  # image dockerfile [extra file for the context]
  local image=$1 dockerfile=$2 extra=${3:-}
  have_image "$image" && { log "$image exists"; return; }
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  [ -n "$extra" ] && cp "$extra" "$ctx/"
  log "building $image"
  docker build -q --build-arg "MINBASE_IMAGE=$MINBASE_IMAGE" -t "$image" -f "$dockerfile" "$ctx" >/dev/null
  log "built $image"
}

minbase
[ -s "$HOST_CA" ] || { log "no CA bundle at $HOST_CA (set HOST_CA_BUNDLE)"; exit 1; }
standin "$STANDIN_PYTHON_IMAGE" scripts/base-images/python.Dockerfile "$HOST_CA"
standin "$STANDIN_REDIS_IMAGE" scripts/base-images/redis.Dockerfile
if [ "$print_env" -eq 1 ]; then
  echo "PYTHON_IMAGE=$STANDIN_PYTHON_IMAGE"
  echo "REDIS_IMAGE=$STANDIN_REDIS_IMAGE"
fi
