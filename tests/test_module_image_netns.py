"""The module from the OCI image (k8s/components/module-from-image), run as a pod runs it.

scripts/oci-image.py builds the image from the built module; it is unpacked as a
container runtime unpacks it (each blob checked against its digest, the layer's tar
extracted, owned by root and read-only to the pod's UIDs), and the rendered examples'
Deployments run as network namespaces (tests/pods.py), with Envoy as UID 1337:

* k8s/examples/module-from-image: the image volume is the unpacked layer, where the
  Envoy container mounts it (the filter's module path points into it, through the
  image's `fault_injector.wasm` link);
* k8s/examples/module-from-image-init: the init container's own command runs with the
  unpacked layer as its root filesystem (read-only), the emptyDir bind-mounted at its
  mount path, as UID 1337, and Envoy then reads the copy from that emptyDir.

Each pod passes traffic through Envoy and the seed's `curl .../injector?status=404`
faults about 20% of it, as the ConfigMap variant does (tests/test_pod_netns.py). Every
file these pods read lies in a directory of their own that UID 1337 can enter, never in
the checkout (which may be private).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from harness import REPO_ROOT, wasm_module_path
from pods import FILTER_FILE, ConfigMapVolume, Pod, configmap, container, container_argv, container_env, deployment, render

ENVOY_UID = 1337
APP_PORT = 8080
# Where the Deployment mounts the filter's configuration (the bootstrap reads it there).
FILTER_MOUNT = "/etc/fault-injector/filter"
# Pod indexes of tests/pods.py (network namespace and addresses) used by no other test.
VOLUME_POD, INIT_POD = 12, 13


def _blob(layout: Path, descriptor: dict) -> bytes:
    """A blob of the layout, checked against its descriptor's digest and size, as a runtime
    checks what it pulls."""
    algorithm, digest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest and len(data) == descriptor["size"], descriptor
    return data


def unpack_image(layout: Path, rootfs: Path) -> dict:
    """Unpacks the layout's one image into `rootfs` as a runtime does: the manifest, its
    config and its one layer checked against their digests, the uncompressed layer against
    the config's diff id, then extracted with the owners and modes it records. Returns the
    manifest."""
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(_blob(layout, entry))
    config = json.loads(_blob(layout, manifest["config"]))
    (layer,) = manifest["layers"]
    tar = gzip.decompress(_blob(layout, layer))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(tar).hexdigest()}"]
    rootfs.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(rootfs, numeric_owner=True, filter="tar")
    manifest["digest"] = entry["digest"]
    return manifest


def read_only(path: Path) -> None:
    """Takes every write bit off `path` and what is below it (owned by root, so the pod's
    UIDs can read what the image lets them, and write nothing)."""
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode & ~0o222)


@pytest.fixture(scope="module")
def image():
    """The image built from the built module, in a directory UID 1337 can enter (the
    checkout and pytest's own temporary directories may be private)."""
    for tool in ("setpriv", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.fail(f"the pods need {tool} (util-linux, coreutils)")
    tmp = Path(tempfile.mkdtemp(prefix="fi-module-image-"))
    tmp.chmod(0o755)
    try:
        res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/oci-image.py"), str(tmp / "oci"),
                              "--module", str(wasm_module_path())], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def lay_out(kdir: str, workdir: Path) -> tuple[dict, list[str], dict[str, str], list[str], dict[str, str]]:
    """Renders `kdir` and lays out its Deployment `web` under `workdir` as the kubelet
    would: the filter's ConfigMap as a volume and the Envoy and capture containers'
    commands with their ConfigMap files written out. Returns the Deployment, Envoy's
    argv and environment, and the capture container's argv and environment."""
    objects = render(kdir)
    web = deployment(objects, "web")
    filter_text = configmap(objects, "fault-injector-filter")["data"][FILTER_FILE]
    envoy_argv, envoy_env = container_argv(objects, web, container(web, "fault-injector-envoy"), {}, workdir)
    capture = container(web, "fault-injector-capture")
    capture_argv, _ = container_argv(objects, web, capture, {}, workdir)
    bootstrap = Path(envoy_argv[envoy_argv.index("-c") + 1])
    bootstrap.write_text(bootstrap.read_text().replace(FILTER_MOUNT, str(workdir / "filter")))
    ConfigMapVolume(workdir / "filter", {FILTER_FILE: filter_text})
    return web, envoy_argv, envoy_env, capture_argv, container_env(capture, {})


def module_volume(web: dict) -> tuple[dict, str]:
    """The Deployment's module volume and where Envoy's container mounts it."""
    (volume,) = [v for v in web["spec"]["template"]["spec"]["volumes"] if v["name"] == "fault-injector-module"]
    (mount,) = [m for m in container(web, "fault-injector-envoy")["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    return volume, mount["mountPath"]


def point_module_at(workdir: Path, envoy_argv: list[str], mount_path: str, local: Path) -> None:
    """The filter's configuration and Envoy's bootstrap (whose outbound listeners load the
    module too) with the module volume's mount path pointed at `local`."""
    volume = workdir / "filter"
    text = (volume / FILTER_FILE).read_text()
    assert f"{mount_path}/fault_injector.wasm" in text
    ConfigMapVolume(volume, {FILTER_FILE: text.replace(mount_path, str(local))})
    bootstrap = Path(envoy_argv[envoy_argv.index("-c") + 1])
    bootstrap.write_text(bootstrap.read_text().replace(mount_path, str(local)))
    assert str(wasm_module_path()) not in (volume / FILTER_FILE).read_text() + bootstrap.read_text()


def readable_by_the_pod(workdir: Path) -> None:
    for p in [workdir, *workdir.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)


def start_pod(index: int, workdir: Path, web: dict, envoy_argv: list[str], envoy_env: dict[str, str],
              capture_argv: list[str], capture_env: dict[str, str], steps: dict[str, Callable[[Pod], None]] | None = None) -> Pod:
    """Starts the pod: its init containers in the rendered order (the capture container's
    command, and each of `steps` by container name), then Envoy, as a native sidecar,
    then the app."""
    def capture(pod: Pod) -> None:
        res = pod.exec(*capture_argv, env=capture_env)
        assert res.returncode == 0, res.stdout + res.stderr

    steps = {"fault-injector-capture": capture, **(steps or {})}
    names = [c["name"] for c in web["spec"]["template"]["spec"]["initContainers"]]
    # Envoy, the native sidecar, starts once they have all run.
    assert names[-1] == "fault-injector-envoy" and sorted(names[:-1]) == sorted(steps), names

    def init(pod: Pod) -> None:
        for name in names[:-1]:
            steps[name](pod)

    pod = Pod(index, None, workdir / "envoy.log", apps=(("0.0.0.0", APP_PORT),), envoy_args=envoy_argv,
              data_port=APP_PORT, init=init, user=ENVOY_UID, envoy_env=envoy_env)
    try:
        return pod.start()
    except BaseException:
        pod.stop()
        raise


def curl(url: str) -> str:
    """The seed's control call, as written, with curl."""
    res = subprocess.run(["curl", "-sS", "-m", "5", url], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def assert_serves_and_faults(pod: Pod) -> None:
    r = pod.get(APP_PORT, "/hello")
    assert (r.status, r.text) == (200, "upstream GET /hello\n"), pod.log()[-2000:]
    assert '"status":404' in curl(f"http://{pod.ip}:8282/injector?status=404")
    responses = [pod.get(APP_PORT, f"/item/{i}") for i in range(300)]
    faulted = [r for r in responses if r.status == 404]
    passed = [r for r in responses if r.status == 200]
    assert len(faulted) + len(passed) == 300
    # The start policy's 20%: 60 expected; 30..105 is beyond 4 sigma.
    assert 30 <= len(faulted) <= 105, len(faulted)
    assert all(r.headers.get("x-fault-injected") == "statusResponse" for r in faulted)
    assert '"policy":"none"' in curl(f"http://{pod.ip}:8282/injector?reset")


def test_image_volume_pod_serves_and_faults(image):
    workdir = image / "volume-pod"
    workdir.mkdir()
    web, envoy_argv, envoy_env, capture_argv, capture_env = lay_out("k8s/examples/module-from-image", workdir)
    volume, mount_path = module_volume(web)
    manifest = json.loads((image / "oci/index.json").read_text())["manifests"][0]
    # The pod pulls the image built from this module, by digest.
    assert volume["image"]["reference"].endswith(f"@{manifest['digest']}")
    # The image volume: the layer unpacked, read-only, where the volume is mounted.
    rootfs = workdir / "image-volume"
    unpack_image(image / "oci", rootfs)
    read_only(rootfs)
    point_module_at(workdir, envoy_argv, mount_path, rootfs)
    readable_by_the_pod(workdir / "filter")
    readable_by_the_pod(workdir / "fault-injector-envoy")
    workdir.chmod(0o755)
    pod = start_pod(VOLUME_POD, workdir, web, envoy_argv, envoy_env, capture_argv, capture_env)
    try:
        assert_serves_and_faults(pod)
    finally:
        pod.stop()


def test_init_container_pod_copies_the_module_then_serves_and_faults(image):
    workdir = image / "init-pod"
    workdir.mkdir()
    web, envoy_argv, envoy_env, capture_argv, capture_env = lay_out("k8s/examples/module-from-image-init", workdir)
    volume, mount_path = module_volume(web)
    assert "emptyDir" in volume
    copier = container(web, "fault-injector-module")
    manifest = json.loads((image / "oci/index.json").read_text())["manifests"][0]
    assert copier["image"].endswith(f"@{manifest['digest']}")
    (copy_mount,) = copier["volumeMounts"]
    assert copy_mount["name"] == volume["name"] and copy_mount["mountPath"] == mount_path
    # The copier's root filesystem: the image, with the mount point the runtime makes.
    rootfs = workdir / "copier-root"
    unpack_image(image / "oci", rootfs)
    (rootfs / mount_path.lstrip("/")).mkdir(parents=True)
    read_only(rootfs)
    empty_dir = workdir / "module-empty-dir"
    empty_dir.mkdir()
    empty_dir.chmod(0o777)  # as the kubelet makes an emptyDir
    sc = copier["securityContext"]
    assert (sc["runAsUser"], sc["readOnlyRootFilesystem"]) == (ENVOY_UID, True)

    def copy_step(pod: Pod) -> None:
        # The container: its own mount namespace, the emptyDir bind-mounted at its mount
        # path, the root read-only, its command run as its UID.
        script = ('mount --bind "$2" "$2" && mount --bind "$1" "$2$3" && mount -o remount,bind,ro "$2" && '
                  'exec chroot --userspec="$4:$4" "$2" "${@:5}"')
        res = pod.exec("unshare", "--mount", "--propagation", "private", "bash", "-c", script, "copy",
                       str(empty_dir), str(rootfs), mount_path, str(sc["runAsUser"]),
                       *copier["command"], *copier.get("args", []))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"-> {mount_path}/fault_injector.wasm" in res.stdout

    point_module_at(workdir, envoy_argv, mount_path, empty_dir)
    readable_by_the_pod(workdir / "filter")
    readable_by_the_pod(workdir / "fault-injector-envoy")
    workdir.chmod(0o755)
    pod = start_pod(INIT_POD, workdir, web, envoy_argv, envoy_env, capture_argv, capture_env,
                    steps={"fault-injector-module": copy_step})
    try:
        copied = empty_dir / "fault_injector.wasm"
        assert copied.read_bytes() == wasm_module_path().read_bytes()
        assert copied.stat().st_uid == ENVOY_UID
        assert [p.name for p in empty_dir.iterdir()] == ["fault_injector.wasm"]
        assert_serves_and_faults(pod)
    finally:
        pod.stop()


def test_copier_refuses_what_is_not_a_module(image):
    rootfs = image / "refusal-root"
    unpack_image(image / "oci", rootfs)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(rootfs), "/copy-module", *args], capture_output=True, text=True, timeout=30)

    res = run("/copy-module", "/out.wasm")
    assert (res.returncode, res.stderr) == (1, "copy-module: /copy-module is not a Wasm module (it does not start with \\0asm)\n")
    res = run("/missing.wasm", "/out.wasm")
    assert res.returncode == 1 and res.stderr.startswith("copy-module: cannot read /missing.wasm: ")
    res = run("/plugin.wasm")
    assert res.returncode == 2 and "expected SOURCE DESTINATION" in res.stderr
    assert not (rootfs / "out.wasm").exists() and not (rootfs / "out.partial").exists()
