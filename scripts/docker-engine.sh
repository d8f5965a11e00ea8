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

# Start dockerd when none runs; wait for it to answer. A dockerd still shutting down keeps
# its pid file and a new one would refuse to start: wait for it to go, then start again.
dockerd_running() { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }
deadline=$(( $(date +%s) + 90 ))
until docker info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "dockerd did not answer within 90 s; the end of its log:"
    tail -n 30 /var/log/dockerd.log >&2 || true
    exit 1
  fi
  if ! dockerd_running && [ "${started_at:-0}" -lt "$(( $(date +%s) - 5 ))" ]; then
    rm -f /var/run/docker.pid
    log "starting dockerd (log: /var/log/dockerd.log)"
    # setsid: dockerd outlives this script and the shell that ran it.
    setsid nohup dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
    started_at=$(date +%s)
  fi
  sleep 0.5
done
log "dockerd answers ($(docker info --format '{{.ServerVersion}}'))"
