#!/usr/bin/env bash
# Installs everything sluice needs to build, run and test, from Debian 12's archive.
# Idempotent; safe to run again. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
  libdpdk-dev dpdk liblmdb-dev lmdb-utils libsodium-dev libcmocka-dev
  libcurl4-openssl-dev libjansson-dev zlib1g-dev python3-h11
  curl wrk python3 python3-websockets python3-aiohttp python3-scapy iproute2 nftables procps
  ethtool iputils-ping
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
