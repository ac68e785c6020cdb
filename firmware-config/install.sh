#!/usr/bin/env bash
# Installs sluice as a system service, in one command (docs/operations.md,
# "Installing as a service"):
#
#   sudo firmware-config/install.sh [--build DIR] [--prefix DIR] [--etc DIR]
#                                   [--unitdir DIR] [--completions DIR] [--no-system]
#
#   --build DIR        the meson build directory with the programs (default: build)
#   --prefix DIR       programs into DIR/bin, docs into DIR/share/doc/sluice (/usr/local)
#   --etc DIR          configuration directory (/etc/sluice)
#   --unitdir DIR      systemd units (/etc/systemd/system)
#   --completions DIR  bash completion (/usr/share/bash-completion/completions)
#   --no-system        do not create the sluice user or touch systemd (for packaging
#                      and tests: only files are written)
#
# What it does: creates the system user and group `sluice`; installs
# sluice-dataplane, sluice-control, sluicectl and sluice-bench; writes
# ETC/sluice.conf from firmware-config/sluice.conf with the store in
# /var/lib/sluice and the admin socket in /run/sluice (only when there is no
# configuration yet: an existing one is never overwritten); installs the two
# units with these paths, the bash completion of sluicectl and the docs
# pages; then systemctl daemon-reload and enable (not start) both units.
# Idempotent.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=build
prefix=/usr/local
etc=/etc/sluice
unitdir=/etc/systemd/system
completions=/usr/share/bash-completion/completions
system=1

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --etc) etc=$2; shift 2 ;;
    --unitdir) unitdir=$2; shift 2 ;;
    --completions) completions=$2; shift 2 ;;
    --no-system) system=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done
case $build in /*) ;; *) build=$src/$build ;; esac

for p in sluice-dataplane sluice-control sluicectl sluice-bench; do
  if [ ! -x "$build/$p" ]; then
    echo "install.sh: $build/$p is missing: build first (meson setup build && ninja -C build)" >&2
    exit 1
  fi
done
if [ "$system" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --no-system to write files only" >&2
  exit 1
fi

bindir=$prefix/bin
docdir=$prefix/share/doc/sluice
conf=$etc/sluice.conf

if [ "$system" = 1 ] && ! getent passwd sluice >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/sluice --no-create-home \
    --shell /usr/sbin/nologin --comment "sluice appliance" sluice
  echo "created system user sluice"
fi

install -d -m 0755 "$bindir" "$docdir/man" "$unitdir" "$completions"
for p in sluice-dataplane sluice-control sluicectl sluice-bench; do
  install -m 0755 "$build/$p" "$bindir/$p"
done
install -m 0644 "$src"/docs/man/*.md "$docdir/man/"
install -m 0644 "$here/bash-completion/sluicectl" "$completions/sluicectl"

if [ ! -e "$conf" ]; then
  install -d -m 0750 "$etc"
  sed -e 's|^admin_socket = .*|admin_socket = /run/sluice/admin.sock|' \
      -e 's|^store = .*|store = /var/lib/sluice/store|' \
      "$here/sluice.conf" >"$conf.new"
  chmod 0640 "$conf.new"
  mv "$conf.new" "$conf"
  if [ "$system" = 1 ]; then chgrp sluice "$etc" "$conf"; fi
  echo "wrote $conf (store /var/lib/sluice/store, admin socket /run/sluice/admin.sock)"
else
  echo "kept the existing $conf"
fi

for u in sluice-control sluice-dataplane; do
  sed -e "s|@BINDIR@|$bindir|g" -e "s|@CONF@|$conf|g" -e "s|@DOCDIR@|$docdir|g" \
    "$here/systemd/$u.service" >"$unitdir/$u.service.new"
  chmod 0644 "$unitdir/$u.service.new"
  mv "$unitdir/$u.service.new" "$unitdir/$u.service"
done

if [ "$system" = 1 ]; then
  systemctl daemon-reload
  systemctl enable sluice-control.service sluice-dataplane.service
  echo "installed; start with: systemctl start sluice-control sluice-dataplane"
  echo "then create an operator: sluicectl -c $conf users add NAME --role admin (as root or user sluice)"
else
  echo "files written under $bindir, $unitdir, $completions, $etc"
fi
