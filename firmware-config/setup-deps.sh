#!/usr/bin/env bash
# Installs everything sluice needs to build, run and test, from Debian 12's archive.
# Idempotent; safe to run again. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
  libdpdk-dev dpdk liblmdb-dev lmdb-utils libsodium-dev libcmocka-dev
  libcurl4-openssl-dev libjansson-dev libssl-dev openssl zlib1g-dev liburing-dev python3-h11
  curl wrk python3 python3-websockets python3-aiohttp python3-scapy iproute2 nftables procps
  ethtool iputils-ping openssl gnuplot-nox
  python3-brotli chromium fonts-dejavu-core
  libnss3-tools testssl.sh nginx-light
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

# Node.js 20 or newer with npm builds the web UI. The machine image brings
# it (a packaged Node 20); Debian 12's own nodejs is 18, so it is only a
# fallback when no node is installed at all, and the version is checked.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "setup-deps.sh: Node.js $(node --version) is too old; the web UI needs Node.js 20 or newer with npm" >&2
  exit 1
fi

# The web UI's bundler and libraries (ui/package.json, exact versions in
# ui/package-lock.json) and the browser tests' driver. No browser is
# downloaded: the tests drive Debian's chromium.
UI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/ui"
if [ ! -f "$UI_DIR/node_modules/.package-lock.json" ] ||
   ! cmp -s "$UI_DIR/package-lock.json" "$UI_DIR/node_modules/.sluice-lock"; then
  (cd "$UI_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error &&
   cp package-lock.json node_modules/.sluice-lock)
fi

# The integration tests' third-party clients and servers (the OpenAI SDK,
# mock-llm), exact versions from tests/node/package-lock.json.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -d "$ROOT/tests/node/node_modules/openai" ] || [ ! -d "$ROOT/tests/node/node_modules/@dwmkerr/mock-llm" ]; then
  npm ci --prefix "$ROOT/tests/node" --no-audit --no-fund
fi
