#!/usr/bin/env bash
# The test command of the README: builds everything and runs every check.
#   cargo fmt --check, cargo build --all-targets, cargo test (all suites, against real peers),
#   cargo clippy --all-targets -- -D warnings.
# Every step runs even when an earlier one fails (except test after a failed build); the exit code
# is non-zero when any failed. Peers come from scripts/install-peers.sh.
#
# Environment: RUST_TEST_THREADS (default 2: the peers are heavy), RDPROBE_CORPUS (default
# ../shared/corpus when it exists), extra arguments are passed to `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."

export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
if [[ -z "${RDPROBE_CORPUS:-}" && -d ../shared/corpus ]]; then
  RDPROBE_CORPUS="$(realpath ../shared/corpus)"
  export RDPROBE_CORPUS
fi

missing=0
for bin in xrdp freerdp-shadow-cli xfreerdp tshark Xvfb winpr-hash nmap; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then
    echo "test.sh: $bin not found" >&2
    missing=1
  fi
done
# PostgreSQL (the shared scan store's tests): Debian keeps initdb off $PATH.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  echo "test.sh: initdb (postgresql) not found" >&2
  missing=1
fi
if ((missing)); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "test.sh: installing the real peers with scripts/install-peers.sh" >&2
    scripts/install-peers.sh
  else
    echo "test.sh: run scripts/install-peers.sh as root first (Debian packages of the peers)" >&2
    exit 1
  fi
fi

declare -a summary=()
failed=0
step() { # name, command...
  local name=$1 start rc
  shift
  echo
  echo "==> $name: $*"
  start=$(date +%s)
  "$@"
  rc=$?
  summary+=("$(printf '%-8s %-6s %4ss  %s' "$name" "$([[ $rc -eq 0 ]] && echo ok || echo FAILED)" "$(($(date +%s) - start))" "$*")")
  ((rc == 0)) || failed=1
  return "$rc"
}

test_log=$(mktemp -t rdprobe-test-XXXXXX.log)
trap 'rm -f "$test_log"' EXIT
run_tests() {
  # lib, bins, every tests/*.rs suite and the doc tests; --no-fail-fast runs all suites.
  cargo test --no-fail-fast "$@" 2>&1 | tee "$test_log"
  return "${PIPESTATUS[0]}"
}

echo "rdprobe tests: RUST_TEST_THREADS=$RUST_TEST_THREADS RDPROBE_CORPUS=${RDPROBE_CORPUS:-<unset>}"
step fmt cargo fmt --check
if step build cargo build --all-targets; then
  step test run_tests "$@"
else
  summary+=("test     SKIPPED        build failed")
fi
step clippy cargo clippy --all-targets -- -D warnings

echo
echo "==> test suites"
grep -E '^\s+Running |^\s+Doc-tests |^test result:' "$test_log" | sed 's/^ *//' || true
echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "FAILED"
  exit 1
fi
echo "all checks passed"
