#!/usr/bin/env bash
# Builds the filter: target/wasm32-wasip1/release/fault_injector.wasm, shrunk by wasm-opt.
# `./build.sh --example empty_filter` builds the benchmark's empty filter the same way
# (target/wasm32-wasip1/release/examples/empty_filter.wasm). Extra arguments go to cargo build.
set -euo pipefail
cd "$(dirname "$0")"

# shellcheck source=scripts/setup.sh
. scripts/setup.sh # puts ~/.cargo/bin on PATH if needed
setup_rust
# wasm-opt (Debian's binaryen) shrinks the module. Root installs it; another user without
# it gets the module as cargo built it, which Envoy runs as well (the demo), but which is
# too large for a Kubernetes ConfigMap (docs/deploy.md).
if ! command -v wasm-opt >/dev/null 2>&1 && ((EUID == 0)); then
    needs_debian "wasm-opt shrinks the module" binaryen
fi
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
# code (see BENCHMARKS.md), and V8 compiles every byte of it when Envoy starts. A function
# of over 100 bytes with one caller stays a function of its own (-Oz alone merges any such
# function into its caller): merged, they made functions of up to 31 KB, which V8 took 3%
# longer to compile than the same code split (BENCHMARKS.md, "Start-up: functions with one
# caller kept apart").
before=$(stat -c %s "$wasm")
if command -v wasm-opt >/dev/null 2>&1; then
    wasm-opt -Oz --one-caller-inline-max-function-size 100 --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
    echo "build: $wasm ($(stat -c %s "$wasm") bytes; $before before wasm-opt)"
else
    echo "build: $wasm ($before bytes, not shrunk: no wasm-opt; as root: apt-get install binaryen)"
fi
if [[ "$wasm" == "$dir/fault_injector.wasm" ]]; then
    # The OCI image (Istio's WasmPlugin, k8s/components/module-from-image), whose digest
    # the kustomizations pin; they read the module and the Envoy files from generated/.
    # Without it the module still serves the demo and every other kustomization.
    oci="${CARGO_TARGET_DIR:-target}/oci"
    if ! scripts/oci-image.py --module "$wasm" "$oci"; then
        rm -rf "$oci"
        echo "build: no OCI image (above): k8s/components/module-from-image and k8s/istio cannot render" >&2
    fi
    FAULT_INJECTOR_WASM="$(realpath "$wasm")" scripts/k8s-files.sh
fi
