#!/usr/bin/env bash
# dev.sh - the project's set-up, build, serve and test entry point.
#
#   ./dev.sh serve   install what is missing, build, start annalsd
#                    (--data ./annals-data --listen 127.0.0.1:7400)
#   ./dev.sh test    install what is missing, build three times (plain,
#                    ASan+UBSan, TSan), run every test in the first two
#                    and all but test_cli under TSan, fuzz briefly
#   ./dev.sh tsan    install what is missing, build build-tsan (everything
#                    under ThreadSanitizer), run every test there; any
#                    report fails the run (extra args go to meson test)
#   ./dev.sh setup   only install the Debian packages the project needs
#   ./dev.sh build   only build (build/)
#
# Works on a fresh Debian 12 machine as root (apt-get); every package the
# project uses is named in PKGS below.
set -euo pipefail
cd "$(dirname "$0")"

PKGS=(
  meson ninja-build pkg-config gcc
  liblmdb-dev lmdb-utils
  libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler python3-protobuf
  libgrpc-dev libjansson-dev
  libssl-dev libmicrohttpd-dev
  libcriterion-dev
  openssl chromium
  clang libclang-rt-14-dev
)

say() { printf 'dev.sh: %s\n' "$*" >&2; }

setup() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# build DIR [meson options...]
build() {
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

# Builds the libFuzzer targets (clang, every library with fuzzer coverage)
# and runs each for FUZZ_SECONDS (default 6) on a fresh corpus seeded with
# tests/fuzz/corpus/TARGET (its seeds run first, so a crash once found and
# added there is a regression test): hostile input must not crash a
# decoder. A crash fails the run and leaves its input in build-fuzz/
# (crash-*).
FUZZ_TARGETS=(fuzz_event_peek fuzz_append_request fuzz_proj_def fuzz_auth_file fuzz_group_def
              fuzz_rpc_request fuzz_proj_fold fuzz_config fuzz_authorize
              fuzz_http_request fuzz_group_records fuzz_proj_catalog)
fuzz_smoke() {
  local dir=build-fuzz t corpus seeds quiet
  if [ ! -f "$dir/build.ninja" ]; then
    CC=clang meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
      -Dc_args=-fsanitize=fuzzer-no-link >/dev/null
  fi
  ninja -C "$dir" "${FUZZ_TARGETS[@]/#/tests/}" >/dev/null || { STATUS=1; return; }
  for t in "${FUZZ_TARGETS[@]}"; do
    corpus=$(mktemp -d)
    seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("$PWD/tests/fuzz/corpus/$t")
    # fuzz_config's refusals go to stderr, a line per input: keep only
    # libFuzzer's own output (and any crash report)
    quiet=()
    [ "$t" = fuzz_config ] && quiet=(-close_fd_mask=2)
    if (cd "$dir" && "./tests/$t" "$corpus" "${seeds[@]}" -max_total_time="${FUZZ_SECONDS:-6}" \
          -print_final_stats=1 "${quiet[@]}" 2>"$t.log"); then
      say "fuzz: $t: $(grep -o 'number_of_executed_units: [0-9]*' "$dir/$t.log" | cut -d' ' -f2) runs, no crash"
    else
      say "fuzz: $t FAILED: see $dir/$t.log and $dir/crash-*"
      STATUS=1
    fi
    rm -rf "$corpus"
  done
}

# Sums Criterion's "Synthesis" lines of one test run.
tally() {
  sed 's/\x1b\[[0-9;]*m//g' "$1/meson-logs/testlog.txt" |
    awk '/Synthesis: Tested:/ {
           for (i = 1; i <= NF; i++) {
             if ($i == "Passing:") p += $(i + 1)
             if ($i == "Failing:") f += $(i + 1)
             if ($i == "Crashing:") f += $(i + 1)
           }
         } END { printf "%d %d\n", p, f }'
}

# ThreadSanitizer (issue 12): everything, annalsd, libannals and the
# tests, built with -fsanitize=thread in build-tsan, and the tests run with
# every report fatal: reports go to build-tsan/tsan/report.PID, which must
# stay empty, and a process that reported exits 66 (so annalsd's exit
# status fails the tests that stop it). Not halt_on_error=1: a test whose
# Criterion worker dies that way hangs until meson's timeout (12 min for
# test_backup). tests/tsan.supp says
# what is suppressed (interceptors called by uninstrumented libraries) and
# why. die_after_fork=0: test_proj_kinds forks a child of its threaded
# test process that starts projection threads before it is killed -9.
# The slow-readers test runs 20 s instead of 8 to write enough events at
# TSan's pace. Extra args go to meson test (names of tests, --suite ...).
tsan_tests() {
  local logs=$PWD/build-tsan/tsan
  build build-tsan -Db_sanitize=thread -Db_lundef=false
  rm -rf "$logs"
  mkdir -p "$logs"
  TSAN_OPTIONS="second_deadlock_stack=1:die_after_fork=0:log_path=$logs/report:suppressions=$PWD/tests/tsan.supp" \
  ANNALS_LONG_READER_SECONDS=${ANNALS_LONG_READER_SECONDS:-20} \
    run_tests build-tsan --timeout-multiplier 4 "$@"
  if compgen -G "$logs/report.*" >/dev/null; then
    say "tsan: $(cat "$logs"/report.* | grep -c 'WARNING: ThreadSanitizer') report(s) in $logs; the first:"
    head -60 "$(ls "$logs"/report.* | head -1)" >&2
    FAILED=$((FAILED + 1))
    STATUS=1
  else
    say "tsan: no reports"
  fi
}

# What ./dev.sh test runs under TSan: every test but test_cli (about 90 s
# of the ~6 min a full TSan run takes here, spent starting the CLI under
# TSan), so that CI stays well under 15 minutes. ./dev.sh tsan runs it all.
tsan_ci_tests() {
  meson test -C build-tsan --list 2>/dev/null | sed -n 's|.* / ||p' | grep -vx test_cli
}

run_tests() {
  local dir=$1; shift
  local rc=0
  meson test -C "$dir" --print-errorlogs "$@" || rc=$?
  read -r p f < <(tally "$dir")
  say "$dir: $p passed, $f failed (meson exit $rc)"
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  [ "$rc" -eq 0 ] || STATUS=1
}

cmd=${1:-}
case "$cmd" in
  setup)
    setup
    ;;
  build)
    setup
    build build
    ;;
  serve)
    setup
    build build
    mkdir -p ./annals-data
    exec build/server/annalsd --data ./annals-data --listen 127.0.0.1:7400
    ;;
  test)
    setup
    PASSED=0; FAILED=0; STATUS=0
    build build
    run_tests build
    build build-san -Db_sanitize=address,undefined -Db_lundef=false \
      -Dc_args=-fno-sanitize-recover=all
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      run_tests build-san --timeout-multiplier 4
    build build-tsan -Db_sanitize=thread -Db_lundef=false
    mapfile -t tsan_names < <(tsan_ci_tests)
    tsan_tests "${tsan_names[@]}"
    fuzz_smoke
    echo "tests: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] || STATUS=1
    exit "$STATUS"
    ;;
  tsan)
    shift
    setup
    PASSED=0; FAILED=0; STATUS=0
    tsan_tests "$@"
    echo "tests: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] || STATUS=1
    exit "$STATUS"
    ;;
  *)
    echo "usage: ./dev.sh serve|test|tsan|setup|build" >&2
    exit 2
    ;;
esac
