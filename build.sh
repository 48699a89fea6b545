#!/usr/bin/env bash
# Builds the filter: target/wasm32-wasip1/release/fault_injector.wasm, shrunk by wasm-opt.
# `./build.sh --example empty_filter` builds the benchmark's empty filter the same way
# (target/wasm32-wasip1/release/examples/empty_filter.wasm). Extra arguments go to cargo build.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/setup.sh
. scripts/setup.sh # puts ~/.cargo/bin on PATH if needed
setup_rust
apt_install binaryen # wasm-opt
cargo build --release --target wasm32-wasip1 "$@"

dir="${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release"
wasm="$dir/fault_injector.wasm"
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    if [[ "${args[i]}" == --example ]]; then
        wasm="$dir/examples/${args[i + 1]}.wasm"
    fi
done
if [[ ! -f "$wasm" ]]; then
    echo "build: expected module not found: $wasm" >&2
    exit 1
fi
# Optimized for size: a request's time goes to Envoy's host calls, not to the module's own
# code (see BENCHMARKS.md), and a smaller module loads faster on every worker.
before=$(stat -c %s "$wasm")
wasm-opt -Oz --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"
echo "build: $wasm ($(stat -c %s "$wasm") bytes; $before before wasm-opt)"
if [[ "$wasm" == "$dir/fault_injector.wasm" ]]; then
    # The kustomizations under k8s/ read the module and the Envoy files from generated/.
    FAULT_INJECTOR_WASM="$(realpath "$wasm")" scripts/k8s-files.sh
fi
