#!/usr/bin/env bash
# Renders a kustomization (default k8s/base) after laying the built module and the Envoy
# files under the kustomizations (scripts/k8s-files.sh, which ./build.sh runs too), with
# the kubectl of .venv (scripts/setup.sh) or, without one, the kubectl on PATH.
#   ./build.sh && scripts/render-k8s.sh [DIR] > manifests.yaml
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kubectl="$root/.venv/bin/kubectl"
if [[ ! -x "$kubectl" ]]; then
    kubectl="$(command -v kubectl)" || {
        echo "render-k8s: no kubectl in $root/.venv/bin or on PATH: run scripts/setup.sh or install kubectl (1.27 or later)" >&2
        exit 1
    }
fi
"$root/scripts/k8s-files.sh"
exec "$kubectl" kustomize "${1:-$root/k8s/base}"
