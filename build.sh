#!/usr/bin/env bash
# Builds the filter: target/wasm32-wasip1/release/fault_injector.wasm
# Extra arguments go to cargo build.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/setup.sh
. scripts/setup.sh # puts ~/.cargo/bin on PATH if needed
setup_rust
cargo build --release --target wasm32-wasip1 "$@"

wasm="${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/fault_injector.wasm"
if [[ ! -f "$wasm" ]]; then
    echo "build: expected module not found: $wasm" >&2
    exit 1
fi
echo "build: $wasm ($(stat -c %s "$wasm") bytes)"
