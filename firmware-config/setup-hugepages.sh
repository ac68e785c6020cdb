#!/usr/bin/env bash
# Reserves 2 MiB hugepages for DPDK and mounts hugetlbfs on /dev/hugepages;
# with --vfio, also binds PCI NICs to vfio-pci for transport = dpdk.
#
#   setup-hugepages.sh [PAGES] [--vfio PCI_ADDR...]
#     PAGES   number of 2 MiB pages to have reserved (default 512 = 1 GiB)
#     --vfio  load vfio-pci and bind each PCI_ADDR to it with dpdk-devbind.py
#             (Debian package dpdk). The NIC disappears from the kernel.
#   setup-hugepages.sh --status   show reserved pages and NIC bindings
#
# Idempotent; needs root. Reservations do not survive a reboot: for a
# dedicated box put hugepages=N on the kernel command line instead.
set -euo pipefail

pages=512
vfio=()
status=0
while [ $# -gt 0 ]; do
  case "$1" in
    --vfio) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do vfio+=("$1"); shift; done
            [ "${#vfio[@]}" -gt 0 ] || { echo "--vfio needs at least one PCI address" >&2; exit 2; } ;;
    --status) status=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) [[ "$1" =~ ^[0-9]+$ ]] || { echo "unknown argument: $1" >&2; exit 2; }
       pages="$1"; shift ;;
  esac
done

hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ "$status" -eq 1 ]; then
  grep -E '^Huge' /proc/meminfo
  mountpoint -q /dev/hugepages && echo "/dev/hugepages: mounted" || echo "/dev/hugepages: not mounted"
  command -v dpdk-devbind.py >/dev/null && dpdk-devbind.py --status-dev net || true
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
[ -w "$hp" ] || { echo "$hp: 2 MiB hugepages not supported here" >&2; exit 1; }

# The kernel may give fewer pages than asked when memory is fragmented.
echo "$pages" > "$hp"
got=$(cat "$hp")
if [ "$got" -lt "$pages" ]; then
  echo "reserved $got of $pages hugepages (memory fragmented?)" >&2
  exit 1
fi
echo "hugepages: $got x 2 MiB reserved"

mkdir -p /dev/hugepages
if ! mountpoint -q /dev/hugepages; then
  mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
  echo "hugetlbfs mounted on /dev/hugepages"
fi

if [ "${#vfio[@]}" -gt 0 ]; then
  command -v dpdk-devbind.py >/dev/null || { echo "dpdk-devbind.py missing: apt-get install dpdk" >&2; exit 1; }
  modprobe vfio-pci
  for dev in "${vfio[@]}"; do
    # Bring the kernel's interface down first: devbind refuses an active one.
    for ifc in /sys/bus/pci/devices/"$dev"/net/*; do
      [ -e "$ifc" ] && ip link set "$(basename "$ifc")" down
    done
    dpdk-devbind.py --bind=vfio-pci "$dev"
    echo "$dev bound to vfio-pci"
  done
fi
