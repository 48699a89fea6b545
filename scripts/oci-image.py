#!/usr/bin/env python3
"""Packs the built module as an OCI image layout that Istio's WasmPlugin can pull: the
"compat" variant of the Wasm image spec, one gzipped tar layer holding `plugin.wasm`,
the manifest annotated `module.wasm.image/variant: compat`. The image is reproducible
(fixed timestamps and owners), so the same module always gives the same digest.

    scripts/oci-image.py OUT_DIR [--tag 0.1.0] [--module PATH]
    skopeo copy oci:OUT_DIR:0.1.0 docker://REGISTRY/fault-injector:0.1.0
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "target/wasm32-wasip1/release/fault_injector.wasm"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _blob(out: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = out / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _layer(module: bytes) -> tuple[bytes, str]:
    """The gzipped tar layer, and the digest of the uncompressed tar (the image's diff id)."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o644, 0
        tar.addfile(info, io.BytesIO(module))
    raw = tar_bytes.getvalue()
    return gzip.compress(raw, mtime=0), f"sha256:{hashlib.sha256(raw).hexdigest()}"


def build(out: Path, module: bytes, tag: str) -> dict:
    """Writes the layout to `out` and returns its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    layer, diff_id = _layer(module)
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
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
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory for the OCI image layout")
    parser.add_argument("--tag", default="0.1.0")
    parser.add_argument("--module", type=Path, default=MODULE)
    args = parser.parse_args()
    if not args.module.is_file():
        print(f"oci-image: {args.module} missing: run ./build.sh", file=sys.stderr)
        return 1
    manifest = build(args.out, args.module.read_bytes(), args.tag)
    print(f"oci-image: {args.out}:{args.tag} layer {manifest['layers'][0]['digest']}")
    print(f"push: skopeo copy oci:{args.out}:{args.tag} docker://REGISTRY/fault-injector:{args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
