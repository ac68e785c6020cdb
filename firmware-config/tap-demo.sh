#!/usr/bin/env bash
# One-machine demo of transport = dpdk: sluice's own TCP/IPv4 stack behind a
# TAP device that DPDK's net_tap creates, with this host as the client.
#
#   tap-demo.sh [--check] [--hugepages N] [--build DIR] [--conf FILE]
#     --check         bounded self-test (ping, /healthz, login, one streamed
#                     answer) with a private store, then stop; exit 0 or 1
#     --hugepages N   reserve N >= 64 2 MiB pages (setup-hugepages.sh), run EAL
#                     on them instead of --no-huge
#     --build DIR     where sluice-control, sluice-dataplane and sluicectl are
#                     (default: build/ in the source tree)
#     --conf FILE     default firmware-config/sluice-tap.conf
#
# Starts control and the dataplane, gives the host side of the TAP the .1
# address of sluice's subnet (in this namespace), waits for /readyz and prints
# how to stream a first answer with curl. Ctrl-C stops everything; the TAP
# goes away with the dataplane. Needs root.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build="$src/build"
conf="$here/sluice-tap.conf"
check=0
pages=0
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1; shift ;;
    --hugepages) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "--hugepages needs a page count" >&2; exit 2; }
                 pages="$2"; shift 2 ;;
    --build) [ $# -ge 2 ] || { echo "--build needs a directory" >&2; exit 2; }
             build="$2"; shift 2 ;;
    --conf) [ $# -ge 2 ] || { echo "--conf needs a file" >&2; exit 2; }
            conf="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (--help)" >&2; exit 2 ;;
  esac
done

die() { echo "tap-demo: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (TAP device, EAL)"
for p in sluice-control sluice-dataplane sluicectl; do
  [ -x "$build/$p" ] || die "$build/$p missing: meson setup build && ninja -C build"
done
grep -q rte_eal_init "$build/sluice-dataplane" || die "$build/sluice-dataplane was built without DPDK"
for t in ip curl ping; do command -v "$t" >/dev/null || die "$t not installed (firmware-config/setup-deps.sh)"; done
[ -r "$conf" ] || die "cannot read $conf"

# ini SECTION KEY: the value of KEY in [SECTION] of $conf, or nothing.
ini() {
  awk -v sec="[$1]" -v key="$2" '
    /^[ \t]*\[/ { gsub(/[ \t]/, ""); insec = ($0 == sec); next }
    insec && $0 ~ "^[ \t]*" key "[ \t]*=" { sub(/^[^=]*=[ \t]*/, ""); sub(/[ \t]+$/, ""); print; exit }
  ' "$conf"
}

device=$(ini port.0 device)
iface=$(printf '%s\n' "$device" | sed -n 's/.*iface=\([^,]*\).*/\1/p')
cidr=$(ini port.0 ipv4)
ip_addr=${cidr%/*}
prefix=${cidr#*/}
listen=$(ini dataplane listen)
port=${listen##*:}
[ "${device%%[0-9,]*}" = net_tap ] || die "$conf: [port.0] device '$device' is not a net_tap vdev"
[ -n "$iface" ] || die "$conf: [port.0] device needs iface=NAME"
[[ "$ip_addr" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && "$prefix" =~ ^[0-9]+$ ]] || die "$conf: [port.0] ipv4 '$cidr' is not ADDRESS/PREFIX"
[[ "$port" =~ ^[0-9]+$ ]] || die "$conf: [dataplane] listen '$listen' has no port"
# The host takes .1 of sluice's subnet (.2 if sluice is .1 itself).
host_ip="${ip_addr%.*}.1"
[ "$host_ip" != "$ip_addr" ] || host_ip="${ip_addr%.*}.2"
[ ! -e "/sys/class/net/$iface" ] || die "interface $iface already exists (another demo running?)"
base="http://$ip_addr:$port"

tmp=$(mktemp -d /tmp/sluice-tap-demo.XXXXXX)
dp_pid=""
ctl_pid=""
chan=$(ini channel path)
[ "$check" -eq 0 ] || chan="/dev/shm/sluice-tap-check-$$"
# Stops the dataplane first (its TAP and connections go with it), then control.
cleanup() {
  trap - EXIT INT TERM
  for pid in $dp_pid $ctl_pid; do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # Both programs are gone: their channel file and doorbells go too.
  if [ -n "$chan" ]; then rm -f "$chan" "$chan".bell-*; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "tap-demo: stopping"; exit 0' INT TERM

# The configuration actually run: the file as is, or a copy with a private
# store, socket and channel (--check) and hugepage EAL memory (--hugepages).
runconf="$conf"
if [ "$check" -eq 1 ] || [ "$pages" -gt 0 ]; then
  runconf="$tmp/sluice-tap.conf"
  awk -v check="$check" -v pages="$pages" -v tmp="$tmp" -v chan="$chan" '
    /^[ \t]*\[/ { sec = $0; gsub(/[ \t]/, "", sec) }
    check == 1 && sec == "[channel]" && /^[ \t]*path[ \t]*=/ { print "path = " chan; next }
    check == 1 && sec == "[control]" && /^[ \t]*store[ \t]*=/ { print "store = " tmp "/store"; next }
    check == 1 && sec == "[control]" && /^[ \t]*admin_socket[ \t]*=/ { print "admin_socket = " tmp "/admin.sock"; next }
    pages > 0 && sec == "[dataplane]" && /^[ \t]*eal_args[ \t]*=/ { print "eal_args = -m 128 --no-pci"; next }
    { print }
  ' "$conf" > "$runconf"
fi
if [ "$pages" -gt 0 ]; then
  "$here/setup-hugepages.sh" "$pages"
fi

"$build/sluice-control" -c "$runconf" > "$tmp/control.log" 2>&1 &
ctl_pid=$!
"$build/sluice-dataplane" -c "$runconf" > "$tmp/dataplane.log" 2>&1 &
dp_pid=$!

failed_start() {
  echo "tap-demo: $*" >&2
  for f in control dataplane; do echo "---- $f log ----" >&2; tail -n 20 "$tmp/$f.log" >&2 || true; done
  exit 1
}

# net_tap creates the interface during EAL init.
for _ in $(seq 300); do
  [ -e "/sys/class/net/$iface" ] && break
  kill -0 "$dp_pid" 2>/dev/null || failed_start "sluice-dataplane exited before creating $iface"
  sleep 0.1
done
[ -e "/sys/class/net/$iface" ] || failed_start "$iface did not appear within 30 s"
# Only IPv4 is served: no IPv6 router solicitations on the link.
sysctl -qw "net.ipv6.conf.$iface.disable_ipv6=1" 2>/dev/null || true
ip addr add "$host_ip/$prefix" dev "$iface"
ip link set "$iface" up

ready=0
for _ in $(seq 60); do
  kill -0 "$dp_pid" 2>/dev/null || failed_start "sluice-dataplane exited"
  kill -0 "$ctl_pid" 2>/dev/null || failed_start "sluice-control exited"
  code=$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$base/readyz" || true)
  [ "$code" = 200 ] && { ready=1; break; }
  sleep 0.5
done
[ "$ready" -eq 1 ] || failed_start "GET $base/readyz did not answer 200 within 30 s"

# json KEY: the string member KEY of the JSON object on stdin.
json() { sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p'; }

# The self-test: what the demo instructions do, with checks and time limits.
self_test() {
  local out user pass tok sid mid
  out=$(ping -c 3 -i 0.2 -W 2 "$ip_addr") || { echo "FAIL ping $ip_addr: $out"; return 1; }
  echo "ok   ping $ip_addr"
  out=$(curl -sS -m 5 "$base/healthz") || { echo "FAIL GET /healthz"; return 1; }
  [ "$out" = '{"status":"ok"}' ] || { echo "FAIL GET /healthz: $out"; return 1; }
  echo "ok   GET /healthz"
  user="check$$"
  pass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  printf '%s\n' "$pass" | "$build/sluicectl" -c "$runconf" users add "$user" --role user > /dev/null \
    || { echo "FAIL sluicectl users add $user"; return 1; }
  tok=$(curl -sS -m 10 "$base/api/auth/login" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$user\",\"password\":\"$pass\"}" | json session_token)
  [ -n "$tok" ] || { echo "FAIL POST /api/auth/login"; return 1; }
  echo "ok   login as $user"
  sid=$(curl -sS -m 10 "$base/api/chat/sessions" -H "Authorization: Bearer $tok" \
        -H 'Content-Type: application/json' -d '{"model_id":"synthetic"}' | json id)
  [ -n "$sid" ] || { echo "FAIL POST /api/chat/sessions"; return 1; }
  curl -sS -N -m 60 "$base/api/chat/stream/$sid" -H "Authorization: Bearer $tok" > "$tmp/stream" 2>&1 &
  local sse=$!
  sleep 0.3
  mid=$(curl -sS -m 10 "$base/api/chat/message" -H "Authorization: Bearer $tok" \
        -H 'Content-Type: application/json' -d "{\"session_id\":\"$sid\",\"content\":\"hello sluice\"}" \
        | json message_id)
  [ -n "$mid" ] || { kill "$sse" 2>/dev/null; echo "FAIL POST /api/chat/message"; return 1; }
  for _ in $(seq 300); do
    grep -q '^event: done' "$tmp/stream" && break
    kill -0 "$sse" 2>/dev/null || break
    sleep 0.1
  done
  kill "$sse" 2>/dev/null || true
  wait "$sse" 2>/dev/null || true
  grep -q '^event: done' "$tmp/stream" || { echo "FAIL no done event within 30 s: $(tail -c 300 "$tmp/stream")"; return 1; }
  grep -A1 '^event: done' "$tmp/stream" | grep -q '"status":"complete"' \
    || { echo "FAIL done is not complete: $(grep -A1 '^event: done' "$tmp/stream")"; return 1; }
  local n
  n=$(grep -c '^event: token' "$tmp/stream" || true)
  [ "$n" -gt 0 ] || { echo "FAIL no token events"; return 1; }
  echo "ok   streamed answer $mid ($n token events, done complete)"
}

if [ "$check" -eq 1 ]; then
  if self_test; then echo "tap-demo --check: passed"; exit 0; fi
  for f in control dataplane; do echo "---- $f log ----"; tail -n 20 "$tmp/$f.log"; done
  echo "tap-demo --check: FAILED"
  trap - INT TERM
  exit 1
fi

cat <<EOF
sluice answers on $base through its own TCP/IPv4 stack (DPDK net_tap,
interface $iface; this host is $host_ip). Logs: $tmp/{control,dataplane}.log

A first streamed answer, from another terminal:
  $build/sluicectl -c $runconf users add demo --role user    # type a password
  TOKEN=\$(curl -s $base/api/auth/login -H 'Content-Type: application/json' \\
          -d '{"username":"demo","password":"PASSWORD"}' | jq -r .session_token)
  SID=\$(curl -s $base/api/chat/sessions -H "Authorization: Bearer \$TOKEN" \\
        -H 'Content-Type: application/json' -d '{"model_id":"synthetic"}' | jq -r .id)
  curl -N $base/api/chat/stream/\$SID -H "Authorization: Bearer \$TOKEN" &
  curl -s $base/api/chat/message -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d "{\"session_id\":\"\$SID\",\"content\":\"hello sluice\"}"
Also: ping $ip_addr, curl $base/healthz, $base/metrics. Ctrl-C stops the demo.
EOF

# Until Ctrl-C, or until one of the programs ends on its own.
while kill -0 "$dp_pid" 2>/dev/null && kill -0 "$ctl_pid" 2>/dev/null; do
  sleep 1
done
echo "tap-demo: a program exited; last lines:" >&2
for f in control dataplane; do echo "---- $f log ----" >&2; tail -n 20 "$tmp/$f.log" >&2; done
exit 1
