#!/usr/bin/env bash
# Lays the files the kustomizations under k8s/ read into their generated/ directories
# (gitignored): the built module and copies of the Envoy configurations in envoy/, and,
# once ./build.sh has built the OCI image (scripts/oci-image.py, in target/oci), its
# digest for k8s/components/module-from-image and k8s/istio.
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

# The image's digest, from the layout's index.json (which scripts/oci-image.py writes, one
# manifest). Without a layout (a module built by cargo alone), only the kustomizations
# that use the image cannot render, and kubectl names their missing generated/.
oci="${FAULT_INJECTOR_OCI:-$target/oci}"
if [[ -f "$oci/index.json" ]]; then
    digest=$(grep -o '"digest": "sha256:[0-9a-f]*"' "$oci/index.json" | cut -d'"' -f4)
    [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || {
        echo "k8s-files: no image digest in $oci/index.json: run ./build.sh" >&2
        exit 1
    }
    dir="$root/k8s/components/module-from-image/generated"
    mkdir -p "$dir"
    cat >"$dir/kustomization.yaml" <<EOF
# Written by scripts/k8s-files.sh: the digest of the image that scripts/oci-image.py built
# from this checkout's module ($oci). List this component after ../image-volume or
# ../init-container to pin it; an \`images:\` entry names the registry.
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
images:
- name: fault-injector-module
  digest: $digest
EOF
    mkdir -p "$root/k8s/istio/generated"
    cat >"$root/k8s/istio/generated/module-image.yaml" <<EOF
# Written by scripts/k8s-files.sh: both WasmPlugins pull the image that
# scripts/oci-image.py built from this checkout's module, by digest, and Istio checks it.
- { op: replace, path: /spec/url, value: "oci://ghcr.io/example/fault-injector@$digest" }
- { op: add, path: /spec/sha256, value: "${digest#sha256:}" }
EOF
fi
