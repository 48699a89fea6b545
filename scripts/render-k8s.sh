#!/usr/bin/env bash
# Renders a kustomization (default k8s/base) after copying the built wasm module
# to k8s/base/generated/ (gitignored), where the configMapGenerator reads it.
#   ./build.sh && scripts/render-k8s.sh [DIR] > manifests.yaml
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wasm="$root/target/wasm32-wasip1/release/fault_injector.wasm"
[[ -f "$wasm" ]] || { echo "render-k8s: $wasm missing: run ./build.sh" >&2; exit 1; }
mkdir -p "$root/k8s/base/generated"
cp "$wasm" "$root/k8s/base/generated/fault_injector.wasm"
# Paths outside the kustomization root (../../envoy/sidecar.yaml) need this flag.
exec "$root/.venv/bin/kubectl" kustomize --load-restrictor LoadRestrictionsNone "${1:-$root/k8s/base}"
