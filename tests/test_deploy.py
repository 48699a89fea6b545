"""Deployment files: kustomizations, Envoy configs, docker-compose.

* every kustomization under k8s/ renders with ``kubectl kustomize`` (via
  scripts/render-k8s.sh, which copies the built module in first);
* every rendered Kubernetes object is valid, strictly (unknown fields fail),
  against the 1.35 schemas and the newest ones kubernetes-validate ships;
* the Istio WasmPlugin is valid against the CRD's openAPIV3Schema (a copy of the
  workplace's ../shared/schemas/istio-wasmplugin-crd.yaml in tests/schemas/, checked
  to be the same file when ../shared is there);
* every Envoy config in envoy/, and each one inside a rendered ConfigMap, passes
  ``envoy --mode validate`` with the module path pointed at the built module; the
  sidecar bootstrap both as it is (its filter read through ECDS from a directory laid
  out as the kubelet mounts a ConfigMap) and with that filter inlined, so the
  filter's own config is validated too;
* the module ConfigMap stays under the 1 MiB ConfigMap limit;
* ``docker-compose config`` accepts envoy/docker-compose.yaml;
* the WasmPlugin's pluginConfig loads in a real Envoy, and the OCI image that
  scripts/oci-image.py builds for it is read back by skopeo with the module inside.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import shutil
import subprocess
from pathlib import Path

import pytest

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

from harness import envoy_binary, request, wasm_module_path
from pods import FILTER_DIR_IN_POD, FILTER_FILE, MODULE_IN_POD, ConfigMapVolume, configmap, render

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ["k8s/base", "k8s/examples/injected", "k8s/examples/locked", "k8s/istio"]
CONFIGMAP_LIMIT = 1024 * 1024  # bytes
# "Well under" the limit: room for the module to grow before it becomes a problem.
MODULE_CONFIGMAP_BUDGET = CONFIGMAP_LIMIT * 3 // 4
CRD = ROOT / "tests/schemas/istio-wasmplugin-crd.yaml"
SHARED_CRD = ROOT.parent / "shared/schemas/istio-wasmplugin-crd.yaml"
# kubernetes-validate 1.37.0 ships schemas 1.35.0 .. 1.37.0: check the target release
# (1.35) and the newest shipped one.
K8S_VERSIONS = sorted({"1.35.0", kubernetes_validate.utils.latest_version()})


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {k: render(k) for k in KUSTOMIZATIONS}


def _inline_filter(bootstrap_text: str, filter_text: str) -> str:
    """The bootstrap with each filter it reads through ECDS replaced by the resource itself."""
    bootstrap = yaml.safe_load(bootstrap_text)
    resource = yaml.safe_load(filter_text)["resources"][0]
    inlined = 0
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for hcm in chain["filters"]:
                for f in hcm["typed_config"].get("http_filters", []):
                    if "config_discovery" in f:
                        assert f["name"] == resource["name"]
                        del f["config_discovery"]
                        f["typed_config"] = resource["typed_config"]
                        inlined += 1
    assert inlined, "no filter read through ECDS"
    return yaml.safe_dump(bootstrap)


def _validate_sidecar(bootstrap_text: str, filter_text: str, tmp_path: Path, name: str) -> None:
    """Both ways: as deployed (ECDS from a kubelet-style volume), and inlined."""
    volume = tmp_path / f"{name}-filter"
    ConfigMapVolume(volume, {FILTER_FILE: filter_text.replace(MODULE_IN_POD, str(wasm_module_path()))})
    _envoy_validate(bootstrap_text.replace(FILTER_DIR_IN_POD, str(volume)), tmp_path, name)
    _envoy_validate(_inline_filter(bootstrap_text, filter_text), tmp_path, f"{name}-inlined")


def _envoy_validate(config_text: str, tmp_path: Path, name: str) -> None:
    text = config_text.replace(MODULE_IN_POD, str(wasm_module_path()))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    res = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert res.returncode == 0, f"{name}: envoy --mode validate failed:\n{res.stdout}\n{res.stderr}"
    assert "OK" in res.stdout + res.stderr


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS)
def test_kustomization_renders(rendered, kdir):
    assert rendered[kdir], f"{kdir} rendered nothing"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kdir", ["k8s/base", "k8s/examples/injected", "k8s/examples/locked"])
def test_objects_valid_against_kubernetes_schemas(rendered, kdir, version):
    for obj in rendered[kdir]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_wasmplugin_valid_against_istio_crd(rendered):
    if SHARED_CRD.is_file():
        assert SHARED_CRD.read_bytes() == CRD.read_bytes(), f"{CRD} differs from {SHARED_CRD}: copy it again"
    crd = yaml.safe_load(CRD.read_text())
    plugins = [o for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin"]
    assert plugins
    for obj in plugins:
        group, version = obj["apiVersion"].split("/")
        assert group == crd["spec"]["group"]
        vers = {v["name"]: v for v in crd["spec"]["versions"]}
        assert vers[version]["served"]
        schema = vers[version]["schema"]["openAPIV3Schema"]
        # The CRD schema describes spec and status only; apiserver checks the rest.
        jsonschema.validate({"spec": obj["spec"]}, schema)
        assert obj["spec"]["failStrategy"] == "FAIL_OPEN"


def test_every_envoy_config_in_the_repo_is_checked():
    assert sorted(p.name for p in (ROOT / "envoy").glob("*.yaml")) == [
        "demo.yaml", "docker-compose.yaml", "fault-injector.yaml", "sidecar.yaml"]


def test_demo_config_validates(tmp_path):
    _envoy_validate((ROOT / "envoy/demo.yaml").read_text(), tmp_path, "demo")


def test_sidecar_config_validates(tmp_path):
    envoy = ROOT / "envoy"
    _validate_sidecar((envoy / "sidecar.yaml").read_text(), (envoy / FILTER_FILE).read_text(), tmp_path, "sidecar")


@pytest.mark.parametrize("kdir", ["k8s/base", "k8s/examples/injected"])
def test_rendered_envoy_config_validates(rendered, kdir, tmp_path):
    bootstrap = configmap(rendered[kdir], "fault-injector-envoy")["data"]["envoy.yaml"]
    filter_cm = configmap(rendered[kdir], "fault-injector-filter")
    # No name hash: an edit must reach running pods rather than roll them out.
    assert filter_cm["metadata"]["name"] == "fault-injector-filter"
    filter_text = filter_cm["data"][FILTER_FILE]
    assert MODULE_IN_POD in filter_text and FILTER_DIR_IN_POD in bootstrap
    _validate_sidecar(bootstrap, filter_text, tmp_path, kdir.replace("/", "_"))


@pytest.mark.parametrize("kdir", ["k8s/base", "k8s/examples/injected"])
def test_module_configmap_under_limit(rendered, kdir):
    cms = [o for o in rendered[kdir] if o["kind"] == "ConfigMap" and "fault_injector.wasm" in o.get("binaryData", {})]
    assert len(cms) == 1
    module = base64.b64decode(cms[0]["binaryData"]["fault_injector.wasm"])
    assert module == wasm_module_path().read_bytes()
    size = len(yaml.safe_dump(cms[0]).encode())
    assert size < MODULE_CONFIGMAP_BUDGET, f"module ConfigMap is {size} bytes, over 3/4 of the 1 MiB limit"


def test_docker_compose_config():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed (scripts/setup.sh installs it)"
    res = subprocess.run(
        [exe, "-f", str(ROOT / "envoy/docker-compose.yaml"), "config"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["services"]["envoy"]["network_mode"] == "service:app"


def test_wasmplugin_plugin_config_loads_in_envoy(rendered, start_envoy):
    plugin = next(o for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin")
    envoy = start_envoy(json.dumps(plugin["spec"]["pluginConfig"]))
    assert request(envoy.port, "/app").status == 200
    # Its control range (10.0.0.0/8) is in force: loopback is refused.
    assert envoy.control().status == 403


def test_oci_image_holds_the_module(tmp_path):
    layout, copy = tmp_path / "oci", tmp_path / "copy"
    subprocess.run([str(ROOT / "scripts/oci-image.py"), str(layout), "--tag", "t1"], check=True,
                   capture_output=True, timeout=60)
    # skopeo checks every digest as it copies.
    res = subprocess.run(["skopeo", "copy", f"oci:{layout}:t1", f"dir:{copy}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = (copy / layer["digest"].split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert tar.getnames() == ["plugin.wasm"]
        assert tar.extractfile("plugin.wasm").read() == wasm_module_path().read_bytes()


def test_every_wasm_filter_fails_open():
    """SECURITY.md's choice, in every config that loads the module."""
    resource = yaml.safe_load((ROOT / "envoy" / FILTER_FILE).read_text())["resources"][0]
    assert resource["typed_config"]["config"]["failure_policy"] == "FAIL_OPEN"
    demo = yaml.safe_load((ROOT / "envoy/demo.yaml").read_text())
    hcm = demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["config"]["failure_policy"] == "FAIL_OPEN"
    sidecar = yaml.safe_load((ROOT / "envoy/sidecar.yaml").read_text())
    discovered = [f for listener in sidecar["static_resources"]["listeners"]
                  for network in listener["filter_chains"][0]["filters"]
                  for f in network["typed_config"].get("http_filters", [])
                  if "config_discovery" in f]
    assert len(discovered) == 2
    assert all(f["config_discovery"]["default_config"]["@type"].endswith(".rbac.v3.RBAC") for f in discovered)


def test_lock_control_selects_every_sidecar_pod_and_closes_only_the_control_port(rendered):
    (policy,) = [o for o in rendered["k8s/examples/locked"] if o["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for kdir in ("k8s/base", "k8s/examples/injected"):
        for deployment in (o for o in rendered[kdir] if o["kind"] == "Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), deployment["metadata"]["name"]
    open_rule, control_rule = policy["spec"]["ingress"]
    assert "from" not in open_rule and {p["port"] for p in open_rule["ports"]} == {8080, 8090}
    assert [p["port"] for p in control_rule["ports"]] == [8282] and control_rule["from"]
