#!/usr/bin/env bash
# Lays the files the kustomizations under k8s/ read into their generated/ directories
# (gitignored): the built module and copies of the Envoy configurations in envoy/.
# kubectl kustomize reads only files in or below a kustomization's own directory, so
# with these in place a plain `kubectl kustomize k8s/examples/injected` (or
# `kubectl apply -k`) works with no --load-restrictor flag. ./build.sh runs this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The module the tests use too (tests/harness.py, wasm_module_path).
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" = /* ]] || target="$root/$target"
wasm="${FAULT_INJECTOR_WASM:-$target/wasm32-wasip1/release/fault_injector.wasm}"
[[ -f "$wasm" ]] || { echo "k8s-files: $wasm missing: run ./build.sh" >&2; exit 1; }

# lay DIR FILE...: copies each FILE into DIR/generated/. A file already there and the
# same is left alone; a changed one is replaced in one rename, so that a kustomize run
# reading it at the same time (the tests render in parallel) never sees half of it.
lay() {
    local dir="$root/$1/generated" file target
    shift
    mkdir -p "$dir"
    for file in "$@"; do
        target="$dir/${file##*/}"
        cmp -s "$file" "$target" && continue
        cp "$file" "$target.$$.tmp"
        mv -f "$target.$$.tmp" "$target"
    done
}
envoy="$root/envoy"
lay k8s/base "$wasm" "$envoy/sidecar.yaml" "$envoy/fault-injector.yaml"
lay k8s/components/sidecar-injection "$wasm" "$envoy/sidecar-capture.yaml" "$envoy/sidecar.yaml" \
    "$envoy/fault-injector.yaml"
