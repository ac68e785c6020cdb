#!/usr/bin/env bash
# sluice quick start: install dependencies, build, start sluice-control and
# sluice-dataplane with firmware-config/sluice.conf, wait until the appliance is
# ready and show how to talk to it.
#
#   firmware-config/quickstart.sh            run in the foreground until Ctrl-C / SIGTERM
#   firmware-config/quickstart.sh --demo     also create a session, stream one answer, exit
#
# Options (mostly for tests and repeated runs):
#   --conf FILE     use another configuration file
#   --skip-deps     do not run firmware-config/setup-deps.sh
#   --skip-build    use the programs already in the build directory
#   --build-dir D   build directory (default: build, next to firmware-config/)
# Exit status: 0 on a clean stop (or a complete --demo answer), 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF="$ROOT/firmware-config/sluice.conf"
BUILD="$ROOT/build"
DEMO=0
SKIP_DEPS=0
SKIP_BUILD=0
READY_TIMEOUT_S=30
DEMO_TIMEOUT_S=60

usage() { sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1 ;;
    --skip-deps) SKIP_DEPS=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --conf) [ $# -ge 2 ] || { echo "quickstart: --conf needs a file" >&2; exit 1; }
            CONF="$(realpath "$2")"; shift ;;
    --build-dir) [ $# -ge 2 ] || { echo "quickstart: --build-dir needs a directory" >&2; exit 1; }
                 BUILD="$(realpath -m "$2")"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "quickstart: unknown option '$1' (try --help)" >&2; exit 1 ;;
  esac
  shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

[ -r "$CONF" ] || die "cannot read $CONF"

# The URL comes from the [dataplane] listen key, so an edited config still works.
LISTEN="$(awk '
  /^[ \t]*\[/ { sec = $0; gsub(/[ \t\[\]]/, "", sec); next }
  sec == "dataplane" && /^[ \t]*listen[ \t]*=/ {
    v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+[#;].*$/, "", v); sub(/[ \t\r]+$/, "", v)
    print v; exit
  }' "$CONF")"
LISTEN="${LISTEN:-127.0.0.1:8080}"
BASE="http://$LISTEN"

RUN_DIR=""
CONTROL_PID=""
DATAPLANE_PID=""
STREAM_PID=""

# Stops whatever this script started: SIGTERM first, SIGKILL after 5 s.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$STREAM_PID" ]; then kill "$STREAM_PID" 2>/dev/null || true; fi
  local pids=()
  for p in "$DATAPLANE_PID" "$CONTROL_PID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      pids+=("$p")
    fi
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping sluice (pids ${pids[*]})"
    local waited=0
    for p in "${pids[@]}"; do
      while kill -0 "$p" 2>/dev/null && [ "$waited" -lt 50 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
      if kill -0 "$p" 2>/dev/null; then
        echo "quickstart: pid $p did not stop after SIGTERM; sending SIGKILL" >&2
        kill -KILL "$p" 2>/dev/null || true
      fi
      wait "$p" 2>/dev/null || true
    done
  fi
  if [ -n "$RUN_DIR" ]; then
    if [ "$rc" -ne 0 ]; then
      echo "quickstart: logs kept in $RUN_DIR" >&2
    else
      rm -rf "$RUN_DIR"
    fi
  fi
  exit "$rc"
}
# Ctrl-C / SIGTERM is the normal way to stop a foreground run, so it exits 0;
# during --demo it means the demo did not finish.
on_signal() {
  if [ "$DEMO" -eq 1 ]; then exit "$1"; fi
  exit 0
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

show_log() {
  echo "---- last lines of $1 ----" >&2
  tail -n 20 "$1" >&2 || true
}

if [ "$SKIP_DEPS" -eq 0 ]; then
  say "installing dependencies (firmware-config/setup-deps.sh)"
  "$ROOT/firmware-config/setup-deps.sh"
fi

if [ "$SKIP_BUILD" -eq 0 ]; then
  if [ ! -f "$BUILD/build.ninja" ]; then
    say "configuring $BUILD"
    (cd "$ROOT" && meson setup "$BUILD")
  fi
  say "building"
  ninja -C "$BUILD"
fi

for prog in sluice-control sluice-dataplane; do
  [ -x "$BUILD/$prog" ] || die "$BUILD/$prog is missing; build first"
done

if curl -fsS -m 2 -o /dev/null "$BASE/healthz" 2>/dev/null; then
  die "something already answers on $BASE; stop it or change listen in $CONF"
fi

say "checking $CONF"
"$BUILD/sluice-control" --check -c "$CONF" || die "sluice-control rejects $CONF"
"$BUILD/sluice-dataplane" --check -c "$CONF" || die "sluice-dataplane rejects $CONF"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-quickstart.XXXXXX")"
say "starting sluice-control and sluice-dataplane (logs in $RUN_DIR)"
"$BUILD/sluice-control" -c "$CONF" >"$RUN_DIR/control.log" 2>&1 &
CONTROL_PID=$!
"$BUILD/sluice-dataplane" -c "$CONF" >"$RUN_DIR/dataplane.log" 2>&1 &
DATAPLANE_PID=$!

# Both must stay alive; a program that exits early shows its log.
check_alive() {
  if ! kill -0 "$CONTROL_PID" 2>/dev/null; then
    show_log "$RUN_DIR/control.log"
    die "sluice-control exited"
  fi
  if ! kill -0 "$DATAPLANE_PID" 2>/dev/null; then
    show_log "$RUN_DIR/dataplane.log"
    die "sluice-dataplane exited"
  fi
}

say "waiting for $BASE/readyz"
deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -fsS -m 2 -o /dev/null "$BASE/readyz" 2>/dev/null; do
  check_alive
  if [ "$SECONDS" -ge "$deadline" ]; then
    show_log "$RUN_DIR/control.log"
    show_log "$RUN_DIR/dataplane.log"
    die "not ready after ${READY_TIMEOUT_S}s"
  fi
  sleep 0.2
done
say "sluice is ready at $BASE"

MODEL="$(awk '
  /^[ \t]*\[/ { sec = $0; gsub(/[ \t\[\]]/, "", sec); next }
  sec ~ /^backend\./ && /^[ \t]*models[ \t]*=/ {
    v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]*,.*$/, "", v); sub(/[ \t]+[#;].*$/, "", v)
    sub(/[ \t\r]+$/, "", v); print v; exit
  }' "$CONF")"
MODEL="${MODEL:-synthetic}"

# Pulls "KEY":"VALUE" out of a JSON object whose ids are plain ASCII (api.md).
json_str() { sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$2"; }

# Every conversation belongs to a user: make (or reset) the demo user with a
# fresh random password through sluicectl (password on stdin, never argv), and
# log in once so the commands below can use the token.
DEMO_USER="${SLUICE_DEMO_USER:-demo}"
DEMO_PASS="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
[ -x "$BUILD/sluicectl" ] || die "$BUILD/sluicectl is missing; build first"
if ! printf '%s\n' "$DEMO_PASS" | "$BUILD/sluicectl" -c "$CONF" users add "$DEMO_USER" --role user >/dev/null 2>&1; then
  printf '%s\n' "$DEMO_PASS" | "$BUILD/sluicectl" -c "$CONF" users passwd "$DEMO_USER" >/dev/null \
    || die "cannot create or reset user $DEMO_USER with sluicectl"
fi
login="$(curl -sS -m 30 -X POST "$BASE/api/auth/login" -H 'Content-Type: application/json' \
         -d "{\"username\":\"$DEMO_USER\",\"password\":\"$DEMO_PASS\"}")" || die "login failed"
TOKEN="$(json_str session_token "$login")"
[ -n "$TOKEN" ] || die "login as $DEMO_USER failed: $login"

cat <<EOF

User "$DEMO_USER" has the password $DEMO_PASS (a new one at every start).
Try it from another terminal:

  # 0. log in (this token is valid now)
  TOKEN=$TOKEN
  #    curl -sS -X POST $BASE/api/auth/login -d '{"username":"$DEMO_USER","password":"$DEMO_PASS"}'

  # 1. create a session
  curl -sS -X POST $BASE/api/chat/sessions -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"model_id":"$MODEL"}'
  #    -> {"id":"s_...",...}; put the id in SID:
  SID=s_...

  # 2. open the token stream (Server-Sent Events; leave it running)
  curl -sN -H "Authorization: Bearer \$TOKEN" $BASE/api/chat/stream/\$SID

  # 3. in a third terminal, post a message and watch the answer arrive in the stream
  curl -sS -X POST $BASE/api/chat/message -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"session_id":"'\$SID'","content":"Hello, sluice!"}'

EOF

demo() {
  say "demo: creating a session"
  local resp sid mid
  resp="$(curl -sS -m 10 -X POST "$BASE/api/chat/sessions" -H "Authorization: Bearer $TOKEN" \
          -H 'Content-Type: application/json' \
          -d "{\"model_id\":\"$MODEL\"}")" || die "POST /api/chat/sessions failed"
  echo "$resp"
  sid="$(json_str id "$resp")"
  [[ "$sid" =~ ^s_[0-9a-f]{16}$ ]] || die "no session id in the reply"

  say "demo: opening the stream $BASE/api/chat/stream/$sid"
  local fifo="$RUN_DIR/stream.fifo" headers="$RUN_DIR/stream.headers" fd
  mkfifo "$fifo"
  # Opened read-write so the open does not block and the fd outlives curl.
  exec {fd}<>"$fifo"
  curl -sS -N -m "$DEMO_TIMEOUT_S" -D "$headers" -H "Authorization: Bearer $TOKEN" \
    "$BASE/api/chat/stream/$sid" >"$fifo" &
  STREAM_PID=$!
  local deadline=$((SECONDS + 10))
  until grep -qE '^HTTP/1\.[01] 200' "$headers" 2>/dev/null; do
    kill -0 "$STREAM_PID" 2>/dev/null || die "the stream request failed: $(head -n 1 "$headers" 2>/dev/null)"
    [ "$SECONDS" -lt "$deadline" ] || die "no stream response after 10s"
    sleep 0.05
  done

  say "demo: posting a message"
  resp="$(curl -sS -m 10 -X POST "$BASE/api/chat/message" -H "Authorization: Bearer $TOKEN" \
          -H 'Content-Type: application/json' \
          -d "{\"session_id\":\"$sid\",\"content\":\"Hello, sluice! Tell me something.\"}")" \
    || die "POST /api/chat/message failed"
  echo "$resp"
  mid="$(json_str message_id "$resp")"
  [[ "$mid" =~ ^m_[0-9a-f]{16}$ ]] || die "no message id in the reply"

  say "demo: the stream"
  local line partial="" event="" status="" events="$RUN_DIR/stream.events"
  : >"$events"
  deadline=$((SECONDS + DEMO_TIMEOUT_S))
  while :; do
    # A timed-out read keeps the bytes it got in line; they start the next line.
    if ! IFS= read -r -t 1 -u "$fd" line; then
      partial+="$line"
      kill -0 "$STREAM_PID" 2>/dev/null || die "the stream ended before done"
      [ "$SECONDS" -lt "$deadline" ] || die "no done event after ${DEMO_TIMEOUT_S}s"
      continue
    fi
    line="$partial$line"
    partial=""
    line="${line%$'\r'}"
    printf '  %s\n' "$line"
    case "$line" in
      "event: "*) event="${line#event: }" ;;
      "data: "*)
        printf '%s\t%s\n' "$event" "${line#data: }" >>"$events"
        if [ "$event" = "done" ]; then
          status="$(json_str status "$line")"
          break
        fi ;;
    esac
  done
  kill "$STREAM_PID" 2>/dev/null || true
  wait "$STREAM_PID" 2>/dev/null || true
  STREAM_PID=""
  exec {fd}<&-

  # The token texts are JSON strings; python's json module undoes their escapes.
  local py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  say "demo: the answer"
  "$py" - "$events" <<'PYEOF' || true
import json, sys
text, n = [], 0
for row in open(sys.argv[1], encoding="utf-8"):
    event, _, data = row.rstrip("\n").partition("\t")
    obj = json.loads(data)
    if event == "token":
        text.append(obj["text"])
        n += obj["n"]
    elif event == "usage":
        print("usage: %d prompt + %d completion tokens" % (obj["prompt_tokens"], obj["completion_tokens"]))
print("".join(text))
print("(%d tokens in %d token events)" % (n, len(text)))
PYEOF
  [ "$status" = complete ] || die "the answer ended with status '$status'"
  say "demo: done"
}

if [ "$DEMO" -eq 1 ]; then
  demo
  exit 0
fi

say "running; press Ctrl-C to stop"
while :; do
  check_alive
  # sleep in the background so a signal interrupts the wait at once.
  sleep 1 &
  wait $! || true
done
