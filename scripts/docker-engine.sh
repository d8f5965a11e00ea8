#!/usr/bin/env bash
# Makes a Docker engine answer, for the Compose runtime and its end-to-end test:
# installs Debian's docker.io, docker-compose (1.29) and debootstrap (for the stand-in base
# images) when root and missing, then starts dockerd in the background unless one answers.
# Not root: says what is missing; `make up` then runs the lab as local processes.
set -euo pipefail
log() { echo "docker-engine: $*"; }

if docker info >/dev/null 2>&1; then
  log "a Docker engine answers"
  need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; } || need+=(docker-compose)
else
  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v iptables >/dev/null || need+=(iptables)
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  [ ${#need[@]} -gt 0 ] && log "not root (or no apt-get): missing ${need[*]}"
  docker info >/dev/null 2>&1 || { log "no Docker engine answers; the lab runs as local processes"; exit 0; }
  exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
docker info >/dev/null 2>&1 && exit 0

log "starting dockerd (log: /var/log/dockerd.log)"
# setsid: dockerd outlives this script and the shell that ran it.
setsid nohup dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
deadline=$(( $(date +%s) + 60 ))
until docker info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "dockerd did not answer within 60 s; the end of its log:"
    tail -n 30 /var/log/dockerd.log >&2 || true
    exit 1
  fi
  sleep 0.5
done
log "dockerd answers ($(docker info --format '{{.ServerVersion}}'))"
