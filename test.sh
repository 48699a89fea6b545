#!/usr/bin/env bash
# Runs every test: Rust unit tests on the host, then the same compiled to Wasm
# (wasm32-wasip1, the target Envoy runs, under Node's WASI), then the integration tests
# against a real Envoy. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/setup.sh
. scripts/setup.sh # puts ~/.cargo/bin on PATH if needed
main all
# tests/test_bench.py runs the benchmark briefly, with its load generator and upstream.
apt_install wrk nginx
# tests/test_docs.py replays the documents' curl sessions.
apt_install curl
# Node runs the unit tests compiled to Wasm (scripts/wasi-run.mjs).
apt_install nodejs
# tests/test_control_page.py opens the control page in a real browser, headless.
apt_install chromium chromium-driver
echo "== cargo test"
cargo test
echo "== cargo test --target wasm32-wasip1"
CARGO_TARGET_WASM32_WASIP1_RUNNER="node --experimental-wasi-unstable-preview1 $PWD/scripts/wasi-run.mjs" \
    cargo test --target wasm32-wasip1 --lib
echo "== build"
./build.sh
./build.sh --example empty_filter
echo "== pytest"
rc=0
.venv/bin/python -m pytest -q tests/ "$@" || rc=$?
if ((rc == 5)); then
    echo "test: pytest collected no tests" >&2
fi
exit "$rc"
