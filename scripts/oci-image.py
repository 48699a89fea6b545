#!/usr/bin/env python3
"""Packs the built module as one OCI image that serves both Istio and plain Kubernetes.

One manifest, one gzipped tar layer holding:
- `plugin.wasm`, the module: Istio's WasmPlugin pulls the image as the "compat" variant
  of the Wasm image spec (one `tar+gzip` layer with `plugin.wasm`; the manifest is
  annotated `module.wasm.image/variant: compat`);
- `fault_injector.wasm`, a link to `plugin.wasm`: mounted as an image volume at
  /etc/fault-injector/module, the image puts the module where the sidecar's filter
  configuration (envoy/fault-injector.yaml) reads it;
- `copy-module`, scripts/copy-module.rs built here with rustc, statically linked: an init
  container of this image runs it to copy the module into an emptyDir where a cluster
  has no image volumes. Its image config says linux and this machine's architecture,
  which the copier is built for; the layer's other files are the same on every one.

The image is reproducible (fixed timestamps and owners): the same module and toolchain
always give the same digest, which it prints; Kubernetes and Istio pin that digest.

    scripts/oci-image.py OUT_DIR [--tag 0.1.0] [--module PATH]
    skopeo copy --preserve-digests oci:OUT_DIR:0.1.0 docker://REGISTRY/fault-injector:0.1.0
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "target/wasm32-wasip1/release/fault_injector.wasm"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
COPIER = ROOT / "scripts/copy-module.rs"
# OCI's names for the machine types rustc builds the copier for.
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class BuildError(Exception):
    """The image cannot be built; the message says why and what to do."""


def _rustc() -> str:
    found = shutil.which("rustc") or str(Path.home() / ".cargo/bin/rustc")
    if not os.access(found, os.X_OK):
        raise BuildError("rustc not found on PATH or in ~/.cargo/bin: install Rust (rustup) to build the image's copier")
    return found


def _architecture() -> str:
    """This machine's architecture as OCI names it: the copier's, and so the image's."""
    machine = platform.machine()
    if sys.platform != "linux":
        raise BuildError("the image's copier is a Linux program: build the image on Linux (any machine gives the same module)")
    if machine not in ARCHITECTURES:
        raise BuildError(f"no OCI architecture known for this machine ({machine}); known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[machine]


def build_copier() -> bytes:
    """scripts/copy-module.rs, built for this machine, statically linked and stripped."""
    _architecture()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "copy-module"
        res = subprocess.run(
            [_rustc(), "--edition", "2021", "-C", "opt-level=z", "-C", "panic=abort", "-C", "codegen-units=1",
             "-C", "strip=symbols", "-C", "target-feature=+crt-static", f"--remap-path-prefix={ROOT}=.",
             "-o", str(out), str(COPIER)],
            capture_output=True, text=True, timeout=300,
        )
        if res.returncode != 0:
            raise BuildError(f"rustc could not build {COPIER.name} (a static build needs libc.a, Debian's libc6-dev):\n{res.stderr}")
        return out.read_bytes()


def _blob(out: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = out / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _layer(module: bytes, copier: bytes) -> tuple[bytes, str]:
    """The gzipped tar layer, and the digest of the uncompressed tar (the image's diff id)."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in (("plugin.wasm", module, 0o644), ("copy-module", copier, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("fault_injector.wasm")
        link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "plugin.wasm", 0o777, 0
        tar.addfile(link)
    raw = tar_bytes.getvalue()
    return gzip.compress(raw, mtime=0), f"sha256:{hashlib.sha256(raw).hexdigest()}"


def build(out: Path, module: bytes, tag: str, copier: bytes) -> tuple[dict, str]:
    """Writes the layout to `out`; returns its manifest and the manifest's digest, the
    image's digest."""
    architecture = _architecture()
    if (out / "oci-layout").is_file():
        # A layout holds one image: the blobs of an earlier build would only linger.
        shutil.rmtree(out / "blobs", ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is neither empty nor an OCI image layout: give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    layer, diff_id = _layer(module, copier)
    config = {
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {"Entrypoint": ["/copy-module"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": _blob(out, json.dumps(config, sort_keys=True).encode(), CONFIG_TYPE),
        "layers": [_blob(out, layer, LAYER_TYPE)],
        "annotations": {"module.wasm.image/variant": "compat"},
    }
    entry = _blob(out, json.dumps(manifest, sort_keys=True).encode(), MANIFEST_TYPE)
    entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}, indent=2))
    return manifest, entry["digest"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory for the OCI image layout")
    parser.add_argument("--tag", default="0.1.0")
    parser.add_argument("--module", type=Path, default=MODULE)
    args = parser.parse_args()
    if not args.module.is_file():
        print(f"oci-image: {args.module} missing: run ./build.sh", file=sys.stderr)
        return 1
    try:
        _, digest = build(args.out, args.module.read_bytes(), args.tag, build_copier())
    except BuildError as e:
        print(f"oci-image: {e}", file=sys.stderr)
        return 1
    print(f"oci-image: {args.out}:{args.tag} digest {digest}")
    print(f"push: skopeo copy --preserve-digests oci:{args.out}:{args.tag} docker://REGISTRY/fault-injector:{args.tag}")
    print(f"then: REGISTRY/fault-injector@{digest} (docs/deploy.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
