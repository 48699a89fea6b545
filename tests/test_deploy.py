"""Deployment files: kustomizations, Envoy configs, docker-compose.

* every kustomization under k8s/ renders with a plain ``kubectl kustomize`` and no
  load-restrictor flag (via scripts/render-k8s.sh, which lays the built module and the
  Envoy files under the kustomizations first, and uses the kubectl on PATH when .venv
  has none), and the rendered ConfigMaps hold exactly the files of envoy/ and the
  capture script;
* the injected Deployments: Envoy a native sidecar (an init container with
  ``restartPolicy: Always``) with its worker count set, non-root, read-only root
  filesystem; the capture init container with no capability but NET_ADMIN/NET_RAW;
  the app's own containers unchanged; the ``inject`` Service selecting the pods;
* every rendered Kubernetes object is valid, strictly (unknown fields fail),
  against the 1.35 schemas and the newest ones kubernetes-validate ships;
* the Istio WasmPlugin is valid against the CRD's openAPIV3Schema (a copy of the
  workplace's ../shared/schemas/istio-wasmplugin-crd.yaml in tests/schemas/, checked
  to be the same file when ../shared is there), and the ProxyConfig beside it against
  Istio's own CRD (tests/schemas/istio-proxyconfig-crd.yaml, from istio/api);
* every shipped Envoy (each sidecar container, the compose file, ./demo.sh, and
  through the ProxyConfig Istio's proxies of the same pods) runs with libevent's
  precise clock (harness.SHIPPED_ENVOY_ENVIRONMENT);
* every Envoy config in envoy/, and each one inside a rendered ConfigMap, passes
  ``envoy --mode validate`` with the module path pointed at the built module; the
  sidecar bootstrap both as it is (its filter read through ECDS from a directory laid
  out as the kubelet mounts a ConfigMap) and with that filter inlined, so the
  filter's own config is validated too;
* the module ConfigMap stays under the 1 MiB ConfigMap limit;
* ``docker-compose config`` accepts envoy/docker-compose.yaml, which publishes its ports
  on loopback only; every Envoy image (k8s/, the compose file) is the exact version the
  tests run;
* the WasmPlugin's pluginConfig loads in a real Envoy, and the OCI image that
  scripts/oci-image.py builds for it is read back by skopeo with the module inside;
* k8s/components/module-from-image: the examples, both variants, have no module
  ConfigMap and pull that image by the digest of this module (as Istio's WasmPlugins
  do), and an ``images:`` entry names the registry; tests/test_module_image_netns.py
  runs them.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import tarfile
import shutil
import subprocess
from pathlib import Path

import pytest

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

from harness import SHIPPED_ENVOY_ENVIRONMENT, envoy_binary, request, wasm_module_path
from pods import FILTER_DIR_IN_POD, FILTER_FILE, MODULE_IN_POD, ConfigMapVolume, configmap, render

ROOT = Path(__file__).resolve().parent.parent
# The module from the OCI image: as an image volume, and copied by an init container.
IMAGE_VOLUME, IMAGE_INIT = "k8s/examples/module-from-image", "k8s/examples/module-from-image-init"
KUSTOMIZATIONS = ["k8s/base", "k8s/examples/injected", "k8s/examples/injected-no-capture", "k8s/examples/locked",
                  "k8s/istio", IMAGE_VOLUME, IMAGE_INIT]
# The kustomizations with the Envoy sidecar, and the Envoy files their ConfigMaps hold.
SIDECARS = {
    "k8s/base": {"envoy.yaml": "sidecar.yaml"},
    "k8s/examples/injected": {"sidecar-capture.yaml": "sidecar-capture.yaml", "sidecar.yaml": "sidecar.yaml"},
    "k8s/examples/injected-no-capture": {"sidecar-capture.yaml": "sidecar-capture.yaml", "sidecar.yaml": "sidecar.yaml"},
    IMAGE_VOLUME: {"sidecar-capture.yaml": "sidecar-capture.yaml", "sidecar.yaml": "sidecar.yaml"},
    IMAGE_INIT: {"sidecar-capture.yaml": "sidecar-capture.yaml", "sidecar.yaml": "sidecar.yaml"},
}
INJECTED = ["k8s/examples/injected", "k8s/examples/injected-no-capture"]
CAPTURE_SCRIPT = ROOT / "k8s/components/sidecar-injection/capture.sh"
CONFIGMAP_LIMIT = 1024 * 1024  # bytes
# The module's own limit (the design's 640 KiB after wasm-opt): its ConfigMap, base64 and all,
# stays under Kubernetes' 1 MiB.
MODULE_LIMIT = 640 * 1024
CRD = ROOT / "tests/schemas/istio-wasmplugin-crd.yaml"
SHARED_CRD = ROOT.parent / "shared/schemas/istio-wasmplugin-crd.yaml"
PROXYCONFIG_CRD = ROOT / "tests/schemas/istio-proxyconfig-crd.yaml"
# kubernetes-validate 1.37.0 ships schemas 1.35.0 .. 1.37.0: check the target release
# (1.35) and the newest shipped one.
K8S_VERSIONS = sorted({"1.35.0", kubernetes_validate.utils.latest_version()})


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {k: render(k) for k in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def oci_layout(tmp_path_factory) -> tuple[Path, str]:
    """The OCI image scripts/oci-image.py builds from the built module (tag t1), and its digest."""
    layout = tmp_path_factory.mktemp("oci") / "layout"
    res = subprocess.run([str(ROOT / "scripts/oci-image.py"), str(layout), "--tag", "t1",
                          "--module", str(wasm_module_path())], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert f"digest {entry['digest']}" in res.stdout
    return layout, entry["digest"]


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
@pytest.mark.parametrize("kdir", [k for k in KUSTOMIZATIONS if k != "k8s/istio"])
def test_objects_valid_against_kubernetes_schemas(rendered, kdir, version):
    for obj in rendered[kdir]:
        kubernetes_validate.validate(obj, version, strict=True)


def _valid_against_crd(objects: list[dict], crd_file: Path) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    kind = crd["spec"]["names"]["kind"]
    assert objects, f"no {kind}"
    for obj in objects:
        group, version = obj["apiVersion"].split("/")
        assert (obj["kind"], group) == (kind, crd["spec"]["group"])
        vers = {v["name"]: v for v in crd["spec"]["versions"]}
        assert vers[version]["served"]
        schema = vers[version]["schema"]["openAPIV3Schema"]
        # The CRD schema describes spec and status only; apiserver checks the rest.
        jsonschema.validate({"spec": obj["spec"]}, schema)


def test_wasmplugin_valid_against_istio_crd(rendered):
    if SHARED_CRD.is_file():
        assert SHARED_CRD.read_bytes() == CRD.read_bytes(), f"{CRD} differs from {SHARED_CRD}: copy it again"
    plugins = [o for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin"]
    _valid_against_crd(plugins, CRD)
    assert all(p["spec"]["failStrategy"] == "FAIL_OPEN" for p in plugins)


def test_istio_proxyconfig_puts_the_precise_clock_in_the_plugins_proxies(rendered):
    configs = [o for o in rendered["k8s/istio"] if o["kind"] == "ProxyConfig"]
    _valid_against_crd(configs, PROXYCONFIG_CRD)
    (config,) = configs
    assert config["spec"]["environmentVariables"] == SHIPPED_ENVOY_ENVIRONMENT
    selectors = {json.dumps(o["spec"]["selector"], sort_keys=True) for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin"}
    assert selectors == {json.dumps(config["spec"]["selector"], sort_keys=True)}, "the same pods as the plugins"


def test_compose_and_demo_give_envoy_the_shipped_environment():
    compose = yaml.safe_load((ROOT / "envoy/docker-compose.yaml").read_text())
    assert compose["services"]["envoy"]["environment"] == SHIPPED_ENVOY_ENVIRONMENT
    (launch,) = [line for line in (ROOT / "demo.sh").read_text().splitlines() if "-c envoy/demo.yaml --concurrency" in line]
    assert launch.startswith(" ".join(f"{k}={v}" for k, v in SHIPPED_ENVOY_ENVIRONMENT.items()) + ' "$envoy" '), launch


def test_every_envoy_config_in_the_repo_is_checked():
    assert sorted(p.name for p in (ROOT / "envoy").glob("*.yaml")) == [
        "demo.yaml", "docker-compose.yaml", "fault-injector.yaml", "sidecar-capture.yaml", "sidecar.yaml"]


def test_demo_config_validates(tmp_path):
    _envoy_validate((ROOT / "envoy/demo.yaml").read_text(), tmp_path, "demo")


@pytest.mark.parametrize("name", ["sidecar.yaml", "sidecar-capture.yaml"])
def test_sidecar_config_validates(tmp_path, name):
    envoy = ROOT / "envoy"
    _validate_sidecar((envoy / name).read_text(), (envoy / FILTER_FILE).read_text(), tmp_path, name[:-5])


@pytest.mark.parametrize("kdir", ["k8s/base", "k8s/examples/injected"])
def test_rendered_envoy_config_validates(rendered, kdir, tmp_path):
    filter_cm = configmap(rendered[kdir], "fault-injector-filter")
    # No name hash: an edit must reach running pods rather than roll them out.
    assert filter_cm["metadata"]["name"] == "fault-injector-filter"
    filter_text = filter_cm["data"][FILTER_FILE]
    for key, bootstrap in configmap(rendered[kdir], "fault-injector-envoy")["data"].items():
        assert MODULE_IN_POD in filter_text and FILTER_DIR_IN_POD in bootstrap
        _validate_sidecar(bootstrap, filter_text, tmp_path, f"{kdir.replace('/', '_')}-{key[:-5]}")


@pytest.mark.parametrize("kdir", SIDECARS)
def test_rendered_configmaps_hold_the_repo_files(rendered, kdir):
    """The copies that ./build.sh lays under the kustomizations are the files of envoy/."""
    envoy = configmap(rendered[kdir], "fault-injector-envoy")["data"]
    assert {key: (ROOT / "envoy" / name).read_text() for key, name in SIDECARS[kdir].items()} == envoy
    filter_cm = configmap(rendered[kdir], "fault-injector-filter")["data"]
    assert filter_cm == {FILTER_FILE: (ROOT / "envoy" / FILTER_FILE).read_text()}


def test_injected_configmap_holds_the_capture_script(rendered):
    assert configmap(rendered["k8s/examples/injected"], "fault-injector-capture")["data"] == {
        "capture.sh": CAPTURE_SCRIPT.read_text()}
    # The mode without capture has neither the script nor its init container.
    assert not [o for o in rendered["k8s/examples/injected-no-capture"]
                if o["metadata"]["name"].startswith("fault-injector-capture")]


@pytest.mark.parametrize("kdir", ["k8s/base", *INJECTED])
def test_module_configmap_under_limit(rendered, kdir):
    cms = [o for o in rendered[kdir] if o["kind"] == "ConfigMap" and "fault_injector.wasm" in o.get("binaryData", {})]
    assert len(cms) == 1
    module = base64.b64decode(cms[0]["binaryData"]["fault_injector.wasm"])
    assert module == wasm_module_path().read_bytes()
    assert len(module) <= MODULE_LIMIT, f"module is {len(module)} bytes, over 640 KiB"
    size = len(yaml.safe_dump(cms[0]).encode())
    # The same ConfigMap holding a module at the limit, written the same way: kustomize breaks
    # the base64 into lines, which adds to it in proportion.
    text = cms[0]["binaryData"]["fault_injector.wasm"]
    width = len(text.split("\n", 1)[0])
    full = base64.b64encode(bytes(MODULE_LIMIT)).decode()
    folded = "\n".join(full[i : i + width] for i in range(0, len(full), width))
    at_limit_cm = {**cms[0], "binaryData": {**cms[0]["binaryData"], "fault_injector.wasm": folded}}
    at_limit = len(yaml.safe_dump(at_limit_cm).encode())
    assert size <= at_limit < CONFIGMAP_LIMIT, f"module ConfigMap is {size} bytes; at 640 KiB it would be {at_limit}"


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
    # The open control port (and the app) on this machine's loopback only.
    assert cfg["services"]["app"]["ports"] == ["127.0.0.1:8080:8080/tcp", "127.0.0.1:8282:8282/tcp"]


def test_every_envoy_image_is_the_version_the_tests_run(rendered):
    res = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30)
    (version,) = re.findall(r"/(\d+\.\d+\.\d+)/", res.stdout)
    images = [c["image"] for objects in rendered.values() for o in objects if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]
              if c["image"].startswith("envoyproxy/")]
    compose = yaml.safe_load((ROOT / "envoy/docker-compose.yaml").read_text())
    images.append(compose["services"]["envoy"]["image"])
    assert len(images) == 1 + len([k for k in KUSTOMIZATIONS if k not in ("k8s/istio", "k8s/examples/locked")]) + 1
    assert set(images) == {f"envoyproxy/envoy:v{version}"}


def test_wasmplugin_plugin_config_loads_in_envoy(rendered, start_envoy):
    plugin = next(o for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin")
    envoy = start_envoy(json.dumps(plugin["spec"]["pluginConfig"]))
    assert request(envoy.port, "/app").status == 200
    # Its control range (10.0.0.0/8) is in force: loopback is refused.
    assert envoy.control().status == 403


def test_istio_outbound_plugin_is_the_client_side_of_the_same_module(rendered, start_envoy):
    plugins = {o["metadata"]["name"]: o["spec"] for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin"}
    server, client = plugins["fault-injector"], plugins["fault-injector-outbound"]
    assert server["match"] == [{"mode": "SERVER"}] and client["match"] == [{"mode": "CLIENT"}]
    assert (client["url"], client["selector"]) == (server["url"], server["selector"])
    assert client["pluginConfig"] == {"direction": "outbound"}
    # It loads, passes calls while no outbound rule is set, and has no control route.
    envoy = start_envoy(json.dumps(client["pluginConfig"]))
    assert request(envoy.port, "/app").status == 200
    r = request(envoy.port, "/injector?status=500")
    assert (r.status, r.text) == (200, "upstream GET /injector?status=500\n")


def test_oci_image_holds_the_module(oci_layout, tmp_path):
    layout, digest = oci_layout
    copy = tmp_path / "copy"
    # skopeo checks every digest as it copies.
    res = subprocess.run(["skopeo", "copy", f"oci:{layout}:t1", f"dir:{copy}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    # Istio's compat variant: one tar+gzip layer with plugin.wasm in it.
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = (copy / layer["digest"].split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert tar.getnames() == ["plugin.wasm", "copy-module", "fault_injector.wasm"]
        assert tar.extractfile("plugin.wasm").read() == wasm_module_path().read_bytes()
        # Where the image volume puts it, the name the filter's configuration reads.
        link = tar.getmember("fault_injector.wasm")
        assert link.issym() and link.linkname == "plugin.wasm"
        assert tar.getmember("copy-module").mode == 0o755
    # A runnable image, so that an init container can run its copier.
    config = json.loads((copy / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["os"] == "linux" and config["config"]["Entrypoint"] == ["/copy-module"]
    # The same module and toolchain give the same image: the digest the manifests pin.
    again = tmp_path / "again"
    subprocess.run([str(ROOT / "scripts/oci-image.py"), str(again), "--module", str(wasm_module_path())],
                   check=True, capture_output=True, timeout=300)
    assert json.loads((again / "index.json").read_text())["manifests"][0]["digest"] == digest


def _module_volume(objects: list[dict]) -> dict:
    (volume,) = [v for v in _pod_spec(objects)["volumes"] if v["name"] == "fault-injector-module"]
    return volume


@pytest.mark.parametrize("kdir", [IMAGE_VOLUME, IMAGE_INIT])
def test_module_from_image_has_no_module_configmap(rendered, kdir):
    assert not [o for o in rendered[kdir] if o["kind"] == "ConfigMap"
                and (o.get("binaryData") or o["metadata"]["name"].startswith("fault-injector-module"))]
    # Envoy mounts the module where the ConfigMap was, read-only, as before.
    envoy = _init(_pod_spec(rendered[kdir]), "fault-injector-envoy")
    assert {"name": "fault-injector-module", "mountPath": "/etc/fault-injector/module", "readOnly": True} in envoy["volumeMounts"]


def test_image_volume_pulls_the_image_of_this_module_by_digest(rendered, oci_layout):
    _, digest = oci_layout
    assert _module_volume(rendered[IMAGE_VOLUME]) == {"name": "fault-injector-module", "image": {
        "reference": f"ghcr.io/example/fault-injector@{digest}", "pullPolicy": "IfNotPresent"}}


def test_init_container_copies_the_module_from_the_same_image_before_envoy(rendered, oci_layout):
    _, digest = oci_layout
    spec = _pod_spec(rendered[IMAGE_INIT])
    assert _module_volume(rendered[IMAGE_INIT]) == {"name": "fault-injector-module", "emptyDir": {"sizeLimit": "8Mi"}}
    names = [c["name"] for c in spec["initContainers"]]
    # A plain init container (it runs to completion) that runs before Envoy starts.
    assert names.index("fault-injector-module") < names.index("fault-injector-envoy")
    copier = _init(spec, "fault-injector-module")
    assert "restartPolicy" not in copier
    assert copier["image"] == f"ghcr.io/example/fault-injector@{digest}"
    assert copier["command"] == ["/copy-module", "/plugin.wasm", "/etc/fault-injector/module/fault_injector.wasm"]
    assert copier["volumeMounts"] == [{"name": "fault-injector-module", "mountPath": "/etc/fault-injector/module"}]
    sc = copier["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1337 and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    # Everything else is the image-volume variant's pod.
    others = {k: v for k, v in spec.items() if k not in ("initContainers", "volumes")}
    image_spec = _pod_spec(rendered[IMAGE_VOLUME])
    assert others == {k: v for k, v in image_spec.items() if k not in ("initContainers", "volumes")}
    assert [c for c in spec["initContainers"] if c is not copier] == image_spec["initContainers"]


def test_istio_plugins_pull_the_same_image_by_digest(rendered, oci_layout):
    _, digest = oci_layout
    for plugin in (o for o in rendered["k8s/istio"] if o["kind"] == "WasmPlugin"):
        assert plugin["spec"]["url"] == f"oci://ghcr.io/example/fault-injector@{digest}"
        assert plugin["spec"]["sha256"] == digest.removeprefix("sha256:")


@pytest.mark.parametrize("component", ["image-volume", "init-container"])
def test_an_images_entry_sets_the_registry_and_digest(tmp_path, component):
    """What docs/deploy.md shows: the components with an `images:` entry of the user's."""
    digest = "sha256:" + "ab" * 32
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT / "k8s/examples/injected", tmp_path)],
        "components": [os.path.relpath(ROOT / "k8s/components/module-from-image" / component, tmp_path)],
        "images": [{"name": "fault-injector-module", "newName": "registry.example.com/team/fault-injector",
                    "digest": digest}],
    }))
    objects = render(str(tmp_path))
    spec = _pod_spec(objects)
    references = [_module_volume(objects).get("image", {}).get("reference")]
    references += [c["image"] for c in spec["initContainers"] if c["name"] == "fault-injector-module"]
    assert [r for r in references if r] == [f"registry.example.com/team/fault-injector@{digest}"]


def test_every_wasm_filter_fails_open():
    """SECURITY.md's choice, in every config that loads the module."""
    resource = yaml.safe_load((ROOT / "envoy" / FILTER_FILE).read_text())["resources"][0]
    assert resource["typed_config"]["config"]["failure_policy"] == "FAIL_OPEN"
    demo = yaml.safe_load((ROOT / "envoy/demo.yaml").read_text())
    hcm = demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["config"]["failure_policy"] == "FAIL_OPEN"
    for name in ("sidecar.yaml", "sidecar-capture.yaml"):
        sidecar = yaml.safe_load((ROOT / "envoy" / name).read_text())
        discovered = [f for listener in sidecar["static_resources"]["listeners"]
                      for chain in listener["filter_chains"]
                      for network in chain["filters"]
                      for f in network["typed_config"].get("http_filters", [])
                      if "config_discovery" in f]
        assert len(discovered) == 2, name
        assert all(f["config_discovery"]["default_config"]["@type"].endswith(".rbac.v3.RBAC") for f in discovered)
        # The outbound listeners' filters are inline.
        inline = [f for listener in sidecar["static_resources"]["listeners"]
                  for chain in listener["filter_chains"]
                  for network in chain["filters"]
                  for f in network["typed_config"].get("http_filters", [])
                  if f.get("typed_config", {}).get("@type", "").endswith("wasm.v3.Wasm")]
        assert all(f["typed_config"]["config"]["failure_policy"] == "FAIL_OPEN" for f in inline), name


def test_lock_control_selects_every_sidecar_pod_and_closes_only_the_control_port(rendered):
    (policy,) = [o for o in rendered["k8s/examples/locked"] if o["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for kdir in ("k8s/base", *INJECTED):
        for deployment in (o for o in rendered[kdir] if o["kind"] == "Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), deployment["metadata"]["name"]
    open_rule, control_rule = policy["spec"]["ingress"]
    # Open to all: every TCP port but 8282, so the app's own ports stay reachable in
    # either sidecar mode.
    assert "from" not in open_rule and all(p["protocol"] == "TCP" for p in open_rule["ports"])
    open_ports = {n for p in open_rule["ports"] for n in range(p["port"], p.get("endPort", p["port"]) + 1)}
    assert open_ports == set(range(1, 65536)) - {8282}
    assert [p["port"] for p in control_rule["ports"]] == [8282] and control_rule["from"]


def _pod_spec(objects: list[dict], name: str = "web") -> dict:
    (web,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return web["spec"]["template"]["spec"]


def _init(spec: dict, name: str) -> dict:
    (found,) = [c for c in spec.get("initContainers", []) if c["name"] == name]
    return found


# Each Deployment with the sidecar: (kustomization, Deployment, Envoy's container).
ENVOYS = [("k8s/base", "echo", "envoy"),
          *((k, "web", "fault-injector-envoy") for k in [*INJECTED, IMAGE_VOLUME, IMAGE_INIT])]


@pytest.mark.parametrize("kdir, name, envoy_name", ENVOYS)
def test_envoy_is_a_native_sidecar_with_its_worker_count_set(rendered, kdir, name, envoy_name):
    spec = _pod_spec(rendered[kdir], name)
    assert envoy_name not in [c["name"] for c in spec["containers"]]
    envoy = _init(spec, envoy_name)
    assert envoy["restartPolicy"] == "Always"
    # Ready before the app starts: the kubelet starts the app once the startup probe passes.
    assert envoy["startupProbe"]["httpGet"]["path"] == "/ready"
    assert envoy["startupProbe"]["httpGet"]["port"] in (8090, "health")
    args = envoy["args"]
    workers = args[args.index("--concurrency") + 1]
    env = {e["name"]: e["value"] for e in envoy["env"]}
    assert workers == "$(FAULT_INJECTOR_CONCURRENCY)" and env["FAULT_INJECTOR_CONCURRENCY"] == "2"
    assert SHIPPED_ENVOY_ENVIRONMENT.items() <= env.items()


@pytest.mark.parametrize("kdir, name, envoy_name", ENVOYS)
def test_envoy_sidecar_is_non_root_with_a_read_only_root_filesystem(rendered, kdir, name, envoy_name):
    spec = _pod_spec(rendered[kdir], name)
    # The pod's settings, then the container's own, as the kubelet applies them.
    sc = {**spec.get("securityContext", {}), **_init(spec, envoy_name)["securityContext"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    if kdir in INJECTED:
        # A fixed UID, as Istio's 1337, that rules can tell Envoy's own traffic by.
        assert (sc["runAsUser"], sc["runAsGroup"]) == (1337, 1337)


@pytest.mark.parametrize("kdir", ["k8s/base", *INJECTED])
def test_service_target_ports_are_numbers(rendered, kdir):
    """A Service finds a native sidecar's named ports only from Kubernetes 1.32 on."""
    for svc in (o for o in rendered[kdir] if o["kind"] == "Service" and o["metadata"]["name"] != "web"):
        assert all(isinstance(p["targetPort"], int) for p in svc["spec"]["ports"]), svc["metadata"]["name"]


def test_capture_init_container_has_no_capability_beyond_net_admin_and_net_raw(rendered):
    spec = _pod_spec(rendered["k8s/examples/injected"])
    names = [c["name"] for c in spec["initContainers"]]
    # It runs, and exits, before Envoy starts; both before the app.
    assert names.index("fault-injector-capture") < names.index("fault-injector-envoy")
    capture = _init(spec, "fault-injector-capture")
    assert "restartPolicy" not in capture
    sc = capture["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= {"NET_ADMIN", "NET_RAW"}
    assert not sc.get("privileged", False) and sc["allowPrivilegeEscalation"] is False
    # Root for this one step only: no other container of the pod runs as root.
    assert sc["runAsUser"] == 0
    others = [c for c in spec["initContainers"] + spec["containers"] if c is not capture]
    assert all(c.get("securityContext", {}).get("runAsUser", None) != 0 for c in others)
    assert capture["command"] == ["/bin/sh", "/etc/fault-injector/capture/capture.sh"]
    (ports,) = [e for e in capture["env"] if e["name"] == "FI_INBOUND_PORTS"]
    assert ports["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['fault-injector/ports']"


def test_capture_script_excludes_every_port_of_the_capture_bootstrap():
    bootstrap = yaml.safe_load((ROOT / "envoy/sidecar-capture.yaml").read_text())
    listeners = {li["name"]: li["address"]["socket_address"]["port_value"]
                 for li in bootstrap["static_resources"]["listeners"]}
    admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    script = CAPTURE_SCRIPT.read_text()
    (inbound,) = re.findall(r"FI_INBOUND_LISTENER:-(\d+)", script)
    (outbound,) = re.findall(r"FI_OUTBOUND_LISTENER:-(\d+)", script)
    (excluded,) = re.findall(r"FI_ENVOY_PORTS:-([\d,]+)", script)
    assert int(inbound) == listeners["inbound"]
    assert int(outbound) == listeners["outbound"]
    # Listeners on loopback (outbound, http_proxy) are out of reach from outside the pod,
    # so inbound capture need not skip them.
    reachable = [li["address"]["socket_address"]["port_value"] for li in bootstrap["static_resources"]["listeners"]
                 if li["address"]["socket_address"]["address"] != "127.0.0.1"]
    assert sorted(map(int, excluded.split(","))) == sorted([*reachable, admin])


def test_capture_bootstrap_shares_the_control_and_health_listeners():
    def listeners(name: str) -> dict:
        doc = yaml.safe_load((ROOT / "envoy" / name).read_text())
        return {li["name"]: li for li in doc["static_resources"]["listeners"]}
    plain, capture = listeners("sidecar.yaml"), listeners("sidecar-capture.yaml")
    assert sorted(capture) == ["control", "health", "http_proxy", "inbound", "outbound"]
    assert capture["control"] == plain["control"] and capture["health"] == plain["health"]


@pytest.mark.parametrize("kdir", INJECTED)
def test_app_containers_unchanged_and_inject_service_selects_the_pods(rendered, kdir):
    source = [d for d in yaml.safe_load_all((ROOT / kdir / "app.yaml").read_text()) if d["kind"] == "Deployment"]
    assert _pod_spec(rendered[kdir])["containers"] == source[0]["spec"]["template"]["spec"]["containers"]
    (web,) = [o for o in rendered[kdir] if o["kind"] == "Deployment"]
    (inject,) = [o for o in rendered[kdir] if o["kind"] == "Service" and o["metadata"]["name"] == "inject"]
    assert inject["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    assert inject["spec"]["ports"] == [{"name": "inject", "port": 8282, "targetPort": 8282}]


def test_capture_leaves_the_app_service_alone_and_no_capture_points_it_at_envoy(rendered):
    def target_port(kdir: str) -> object:
        (svc,) = [o for o in rendered[kdir] if o["kind"] == "Service" and o["metadata"]["name"] == "web"]
        return svc["spec"]["ports"][0]["targetPort"]
    assert target_port("k8s/examples/injected") == "http"
    assert target_port("k8s/examples/injected-no-capture") == 8080


def test_worker_count_is_changed_with_a_patch(tmp_path):
    """What docs/deploy.md shows: a patch of FAULT_INJECTOR_CONCURRENCY in the user's kustomization."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        # kustomize takes relative paths only.
        "resources": [os.path.relpath(ROOT / "k8s/examples/injected", tmp_path)],
        "patches": [{"target": {"kind": "Deployment", "name": "web"}, "patch": yaml.safe_dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"initContainers": [{
                "name": "fault-injector-envoy", "env": [{"name": "FAULT_INJECTOR_CONCURRENCY", "value": "4"}]}]}}}})}],
    }))
    envoy = _init(_pod_spec(render(str(tmp_path))), "fault-injector-envoy")
    # Merged by name: the patched count, and the rest of the environment as it was.
    assert {e["name"]: e["value"] for e in envoy["env"]} == {"FAULT_INJECTOR_CONCURRENCY": "4", **SHIPPED_ENVOY_ENVIRONMENT}


def test_render_uses_the_kubectl_on_path_without_a_venv(rendered, tmp_path):
    """scripts/render-k8s.sh in a checkout without .venv: the kubectl found on PATH
    renders the example, with no load-restrictor flag, the same as the tests' render."""
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("generated")
    for d in ("scripts", "k8s", "envoy"):
        shutil.copytree(ROOT / d, checkout / d, ignore=ignore)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(ROOT / ".venv/bin/kubectl")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAULT_INJECTOR_WASM": str(wasm_module_path()), "HOME": str(tmp_path)}
    res = subprocess.run([str(checkout / "scripts/render-k8s.sh"), str(checkout / "k8s/examples/injected")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert [d for d in yaml.safe_load_all(res.stdout) if d] == rendered["k8s/examples/injected"]
    # No kubectl anywhere: the tools the scripts need, and nothing else, on PATH.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "dirname", "mkdir", "cp", "cmp", "mv"):
        (tools / tool).symlink_to(shutil.which(tool))
    res = subprocess.run([str(checkout / "scripts/render-k8s.sh")], capture_output=True, text=True, timeout=60,
                         env={**env, "PATH": str(tools)})
    assert res.returncode == 1, res.stderr
    assert "no kubectl in" in res.stderr and "or on PATH" in res.stderr
