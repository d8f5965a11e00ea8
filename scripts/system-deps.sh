#!/usr/bin/env bash
# Installs the Debian packages the tests use, when run as root and missing.
# Not root: prints what is missing; the tests that need it are skipped with the reason.
set -euo pipefail
need=()
command -v echoscu >/dev/null || need+=(dcmtk)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v redis-server >/dev/null || need+=(redis-server)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v pgrep >/dev/null || need+=(procps)
command -v chromium >/dev/null || need+=(chromium)
command -v Orthanc >/dev/null || need+=(orthanc)  # the interop peer (Q/R, Storage Commitment, DICOM TLS)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "Not installed (not root or no apt-get): ${need[*]}; tests that need them will be skipped, with the reason."
fi
