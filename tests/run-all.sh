#!/usr/bin/env bash
# Installs, builds and runs every sluice test; the README's test command and
# what CI runs (.ci/run). Non-interactive; run as root on Debian 12.
#
#   1. firmware-config/setup-deps.sh (Debian packages)
#   2. build/      gcc, --werror: every meson test (unit, integration, stress)
#   3. build-asan/ clang, ASan+UBSan, -Dfuzz=true: the unit, fuzz (seed
#      replay) and integration suites (the real programs under sanitizers;
#      a sanitizer report fails the script), then each libFuzzer target for
#      FUZZ_SECONDS (default 60) on a copy of its corpus
#
# It keeps going after a failure and counts every meson test and every fuzz
# run (a step that cannot run at all, such as a failed build, counts as one
# failure). The last line is exactly "N passed, N failed"; the exit status is
# non-zero when anything failed or nothing ran.
#
# Environment: FUZZ_SECONDS (default 60), TIMEOUT_MULTIPLIER (default 2),
# SKIP_DEPS=1 (skip step 1), SKIP_ASAN=1 (skip step 3), BUILD_DIR and
# ASAN_DIR (default build and build-asan, for runs beside someone's build).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export CI="${CI:-true}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
TIMEOUT_MULTIPLIER="${TIMEOUT_MULTIPLIER:-2}"
PY=/usr/bin/python3
BUILD_DIR="${BUILD_DIR:-build}"
ASAN_DIR="${ASAN_DIR:-build-asan}"
FUZZ_TARGETS=(fuzz-http fuzz-ws fuzz-ws-deflate fuzz-chan fuzz-net fuzz-upstream)

passed=0
failed=0
failures=()

section() { printf '\n==== %s ====\n' "$*"; }

fail_step() {
	failed=$((failed + 1))
	failures+=("$1")
	echo "FAILED: $1"
}

# Adds one meson run's results (from its testlog.json) to the totals.
count_meson() {
	local dir="$1" log="$1/meson-logs/testlog.json" counts p f
	if [ ! -s "$log" ]; then
		fail_step "meson test in $dir produced no testlog.json"
		return
	fi
	counts="$("$PY" - "$log" <<'EOF'
import json, sys
ok = bad = 0
names = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        res = r.get("result")
        if res in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif res != "SKIP":
            bad += 1
            names.append("%s(%s)" % (r.get("name").replace(" ", ""), res))
print(ok, bad, " ".join(names))
EOF
)" || { fail_step "could not read $log"; return; }
	read -r p f names <<<"$counts"
	passed=$((passed + p))
	failed=$((failed + f))
	for n in ${names:-}; do failures+=("$dir: $n"); done
	echo "meson test in $dir: $p passed, $f failed"
}

# Configures (or reconfigures) a build directory and builds everything in it.
build_dir() {
	local dir="$1"
	shift
	if [ -d "$dir/meson-private" ]; then
		meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi || { fail_step "meson setup $dir"; return 1; }
	ninja -C "$dir" || { fail_step "ninja -C $dir"; return 0; }
}

# Runs meson test in a build directory; counting comes from testlog.json.
run_meson_tests() {
	local dir="$1"
	shift
	rm -f "$dir/meson-logs/testlog.json"
	meson test -C "$dir" --no-rebuild --print-errorlogs \
		--timeout-multiplier "$TIMEOUT_MULTIPLIER" "$@" </dev/null
	count_meson "$dir"
}

# Runs one libFuzzer target for FUZZ_SECONDS on a scratch copy of its corpus,
# so new inputs never land in the source tree.
run_fuzzer() {
	local name="$1" bin corpus work rc
	bin="$(find "$ASAN_DIR/tests/fuzz" -type f -name "$name" -perm -u+x 2>/dev/null | head -n 1)"
	if [ -z "$bin" ]; then
		fail_step "$name: no executable under $ASAN_DIR/tests/fuzz"
		return
	fi
	corpus="tests/fuzz/${name#fuzz-}/corpus"
	work=".fuzz-corpus/$name"
	rm -rf "$work"
	mkdir -p "$work"
	if [ -d "$corpus" ]; then
		cp -r "$corpus/." "$work/"
	else
		echo "note: $name has no seed corpus at $corpus"
	fi
	echo "$name: $(find "$work" -type f | wc -l) seed inputs, ${FUZZ_SECONDS}s"
	timeout --kill-after=30 $((FUZZ_SECONDS + 120)) "$bin" \
		-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix=".fuzz-corpus/$name-" "$work" </dev/null \
		>".fuzz-corpus/$name.log" 2>&1
	rc=$?
	tail -n 15 ".fuzz-corpus/$name.log"
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		echo "$name: ok"
	else
		echo "---- $name log (last 80 lines) ----"
		tail -n 80 ".fuzz-corpus/$name.log"
		fail_step "$name (exit $rc; crash inputs: .fuzz-corpus/$name-*)"
	fi
}

section "dependencies"
if [ "${SKIP_DEPS:-0}" = 1 ]; then
	echo "skipped (SKIP_DEPS=1)"
else
	bash firmware-config/setup-deps.sh </dev/null || fail_step "firmware-config/setup-deps.sh"
fi

section "gcc build ($BUILD_DIR/)"
if CC=gcc build_dir "$BUILD_DIR" --werror -Dtests=true; then
	section "all tests ($BUILD_DIR/)"
	run_meson_tests "$BUILD_DIR"
fi

if [ "${SKIP_ASAN:-0}" = 1 ]; then
	section "asan build skipped (SKIP_ASAN=1)"
else
	section "clang ASan+UBSan build ($ASAN_DIR/)"
	if CC=clang build_dir "$ASAN_DIR" --werror -Dtests=true -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false; then
		section "unit, fuzz-replay and integration tests ($ASAN_DIR/)"
		run_meson_tests "$ASAN_DIR" --suite unit --suite fuzz --suite integration
		mkdir -p .fuzz-corpus
		for t in "${FUZZ_TARGETS[@]}"; do
			section "fuzz: $t"
			run_fuzzer "$t"
		done
	fi
fi

section "summary"
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
	exit 1
fi
exit 0
