#!/bin/sh
# Installs the peers bench/compare runs beside sluice: Debian's nginx with
# nchan, FastAPI + uvicorn and gnuplot (sluice-bench --plot), then the Node
# packages at the exact versions of package-lock.json (npm ci). Needs root for
# apt-get; nothing is downloaded when bench/compare runs.
set -eu
cd "$(dirname "$0")"
PKGS="nginx-light libnginx-mod-nchan python3-fastapi python3-uvicorn gnuplot-nox nodejs npm"
missing=""
for p in $PKGS; do
  # A nodejs from another source (NodeSource) bundles npm and conflicts with Debian's.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nodejs may come from another source that bundles npm: take what installs.
  apt-get install -y -qq --no-install-recommends $missing || \
    apt-get install -y -qq --no-install-recommends $(echo $missing | sed 's/ npm//')
fi
# Debian starts nginx on install; the peers run their own, on their own ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx 2>/dev/null || true; fi
npm ci --no-audit --no-fund
