"""The Kubernetes sidecar, run for real on this machine: the rendered manifests'
ConfigMaps written out the way the kubelet mounts them, and pods as network
namespaces (app + Envoy inside, reached from the host over a veth pair). A rendered
container's command runs here as the kubelet would start it (`container_argv`): its
`$(VAR)` references expanded from its env, the files it mounts from ConfigMaps written
out, and their paths pointed at those copies.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import yaml

from harness import REPO_ROOT, Response, envoy_binary, process_slot, request, wasm_module_path

# Where the manifests mount things in the Envoy container.
MODULE_IN_POD = "/etc/fault-injector/module/fault_injector.wasm"
FILTER_DIR_IN_POD = "/etc/fault-injector/filter"
FILTER_FILE = "fault-injector.yaml"


def render(kdir: str = "k8s/base") -> list[dict]:
    """Every object of a kustomization, rendered by scripts/render-k8s.sh."""
    out = subprocess.run(
        [str(REPO_ROOT / "scripts/render-k8s.sh"), str(REPO_ROOT / kdir)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def configmap(objects: list[dict], name_prefix: str) -> dict:
    """The one ConfigMap whose name starts with `name_prefix` (generated names carry a hash)."""
    found = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{len(found)} ConfigMaps named {name_prefix}*"
    return found[0]


def to_host_paths(text: str, filter_dir: Path, module: Path | None = None) -> str:
    """A pod file with the module and filter paths pointed at this machine's copies (the
    module: `module`, else the built one in the checkout)."""
    return text.replace(MODULE_IN_POD, str(module or wasm_module_path())).replace(FILTER_DIR_IN_POD, str(filter_dir))


def readable_copy(source: Path, directory: Path) -> Path:
    """A copy of `source` in `directory` that any user may read (and run, if `source` is a
    program), in a path any user may enter: what the kubelet mounts and the image holds for
    a container that runs as another user (Envoy as UID 1337). The checkout may be in a
    directory only its owner enters (a home directory, `mktemp -d`)."""
    for folder in reversed([directory, *directory.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o755)
            folder.chmod(0o755)
    target = directory / source.name
    shutil.copyfile(source, target)
    target.chmod(0o755 if os.access(source, os.X_OK) else 0o644)
    return target


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume: the files live in
    a timestamped directory, `..data` links to it, and each key links through `..data`.
    An update writes a new timestamped directory and renames a new link over `..data`,
    one atomic step, which is what Envoy's watched_directory reacts to."""

    _serial = itertools.count()

    def __init__(self, path: Path, files: dict[str, str]):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self.update(files)

    def update(self, files: dict[str, str]) -> None:
        """Swaps in a new set of files atomically, as a kubelet sync does."""
        stamp = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.getpid()}_{next(self._serial)}"
        stamp.mkdir()
        for name, text in files.items():
            (stamp / name).write_text(text)
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.replace(tmp, data)
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old:
            shutil.rmtree(self.path / old)


def filter_files(text: str, plugin_config: str | None = None, filter_dir: Path | None = None,
                 module: Path | None = None) -> dict[str, str]:
    """The files of the `fault-injector-filter` ConfigMap whose one file is `text` (an ECDS
    resource), paths pointed at this machine (the module at `module` if given);
    `plugin_config` replaces the plugin configuration (the JSON inside) if given."""
    if plugin_config is not None:
        doc = yaml.safe_load(text)
        doc["resources"][0]["typed_config"]["config"]["configuration"]["value"] = plugin_config
        text = yaml.safe_dump(doc)
    return {FILTER_FILE: to_host_paths(text, filter_dir or Path(FILTER_DIR_IN_POD), module)}


def deployment(objects: list[dict], name: str) -> dict:
    """The one Deployment named `name`."""
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return found


def container(deployment: dict, name: str) -> dict:
    """The pod template's container or init container named `name`."""
    spec = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def container_env(container: dict, annotations: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet sets it: literal values, and
    `metadata.annotations['KEY']` field references read from `annotations` (empty when
    the pod has no such annotation, as the downward API gives)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        key = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
        assert key, f"{container['name']}: env {var['name']} from {path}: only annotations are supported here"
        env[var["name"]] = annotations.get(key.group(1), "")
    return env


def container_argv(objects: list[dict], deployment: dict, container: dict, annotations: dict[str, str],
                   workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The container's command and args, and its environment, as the kubelet runs them,
    with every file it mounts from a ConfigMap written under `workdir` (each volume in a
    directory of its own) and the mount paths in the command pointed there."""
    env = container_env(container, annotations)
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
            for a in container.get("command", []) + container.get("args", [])]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == source["name"]]
        local = workdir / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for key, text in cm.get("data", {}).items():
            (local / key).write_text(text)
        argv = [a.replace(mount["mountPath"], str(local)) for a in argv]
    return argv, env


class InjectedPod(NamedTuple):
    """A Deployment of a rendered kustomization laid out as the kubelet would run its injected
    containers: the filter volume, the capture container's command and environment,
    Envoy's command, whose bootstrap points at this machine, the Envoy binary to run it
    with (a copy any user may run, as the image has it), and Envoy's environment."""
    volume: Path
    capture_argv: list[str]
    capture_env: dict[str, str]
    envoy_argv: list[str]
    envoy: Path
    envoy_env: dict[str, str]


def lay_out_injected(kdir: str, name: str, annotations: dict[str, str], workdir: Path) -> InjectedPod:
    """Renders `kdir` and lays out its Deployment `name`'s injected containers under
    `workdir`, with `annotations` as the pod's. The module and the Envoy binary are laid
    out as copies under `workdir` (the module volume, the image), so that Envoy reads them
    whatever its user and wherever the checkout is; `workdir` must be a directory that
    user may enter."""
    objects = render(kdir)
    app = deployment(objects, name)
    volume = workdir / "filter"
    module = readable_copy(wasm_module_path(), workdir / "module")
    envoy = readable_copy(Path(envoy_binary()), workdir / "image")
    ConfigMapVolume(volume, filter_files(configmap(objects, "fault-injector-filter")["data"][FILTER_FILE],
                                         filter_dir=volume, module=module))
    capture_argv, capture_env = container_argv(objects, app, container(app, "fault-injector-capture"), annotations, workdir)
    envoy_argv, envoy_env = container_argv(objects, app, container(app, "fault-injector-envoy"), annotations, workdir)
    bootstrap = Path(envoy_argv[envoy_argv.index("-c") + 1])
    bootstrap.write_text(to_host_paths(bootstrap.read_text(), volume, module))
    return InjectedPod(volume, capture_argv, capture_env, envoy_argv, envoy, envoy_env)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Pod:
    """A pod: a network namespace holding the apps (scripts/upstream.py, by default one on
    127.0.0.1:8000, and `other_apps`, commands by the port they listen on) and Envoy (by
    default `-c bootstrap --concurrency 2`), linked to the host by a veth pair. Requests
    come from the host's end of the pair, as from another pod. `init` runs once the
    network is up and before Envoy and the apps start, as init containers do; Envoy is
    ready (health port) before the apps start, as a native sidecar is. With `user`, Envoy
    runs as that UID and GID (setpriv), as the sidecar's securityContext has it, so that
    rules matching its owner see it; its files, and `envoy` (the binary, by default the
    one in .venv), must then be readable by that user (`lay_out_injected` lays them out).
    `envoy_env` is added to Envoy's environment, as its container's `env`."""

    def __init__(self, index: int, bootstrap: Path | None, log: Path,
                 apps: tuple[tuple[str, int], ...] = (("127.0.0.1", 8000),),
                 envoy_args: list[str] | None = None, data_port: int | None = 8080,
                 init: Callable[["Pod"], None] | None = None, other_apps: dict[int, list[str]] | None = None,
                 user: int | None = None, envoy: Path | None = None, envoy_env: dict[str, str] | None = None):
        # Names and subnet unique to this process (pytest-xdist workers run side by side).
        tag = f"{process_slot()}-{index}"
        self.ns = f"fi-pod-{tag}"
        self.host_if, self.pod_if = f"fih{tag}", f"fip{tag}"
        net = 10 + process_slot()
        self.host_ip, self.ip = f"10.253.{net}.{4 * index + 1}", f"10.253.{net}.{4 * index + 2}"
        self.log_path = log
        self.envoy_args = envoy_args if envoy_args is not None else ["-c", str(bootstrap), "--concurrency", "2"]
        self.apps, self.data_port, self.init, self.other_apps = apps, data_port, init, other_apps or {}
        self.procs: list[subprocess.Popen] = []
        self.as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        self.envoy = str(envoy) if envoy is not None else envoy_binary()
        self.envoy_env = envoy_env or {}

    def start(self) -> "Pod":
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise RuntimeError("a pod needs root and iproute2 (ip netns); .ci/run runs as root")
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.pod_if)
        _ip("link", "set", self.pod_if, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        for args in (["link", "set", "lo", "up"], ["addr", "add", f"{self.ip}/30", "dev", self.pod_if],
                     ["link", "set", self.pod_if, "up"]):
            _ip("netns", "exec", self.ns, "ip", *args)
        if self.init:
            self.init(self)
        inside = ["ip", "netns", "exec", self.ns]
        with open(self.log_path, "ab") as log:
            self.procs.append(subprocess.Popen(
                [*inside, *self.as_user, self.envoy, *self.envoy_args, "--disable-hot-restart"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.envoy_env}))
        self.wait(8090, "/ready")
        commands = {port: [sys.executable, str(REPO_ROOT / "scripts/upstream.py"), "--host", host, "--port", str(port)]
                    for host, port in self.apps}
        commands.update(self.other_apps)
        for command in commands.values():
            self.procs.append(subprocess.Popen([*inside, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in commands:
            self.wait_listening(port)
        if self.data_port:
            self.wait(self.data_port, "/")
        return self

    def wait_listening(self, port: int, deadline: float = 20.0) -> None:
        """Waits until something in the pod listens on TCP `port` (asked of the kernel, so
        a capture rule in front of the port does not answer for it)."""
        end = time.monotonic() + deadline
        while not self.exec("ss", "-Hltn", f"sport = :{port}").stdout.strip():
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on port {port} in {self.ns}")
            time.sleep(0.1)

    def exec(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Runs `cmd` inside the pod's network namespace; never raises on its exit status."""
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    def get(self, port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> Response:
        """GET from the host side of the veth pair."""
        return request(port, path, source_ip=self.host_ip, host=self.ip, timeout=timeout, headers=headers)

    def envoy_stats(self, prefix: str) -> dict[str, int]:
        """Envoy's counters and gauges whose names start with `prefix`, from its admin
        listener, which only the pod itself reaches (127.0.0.1:9901)."""
        res = self.exec("curl", "-sS", "-m", "5", f"http://127.0.0.1:9901/stats?filter=^{re.escape(prefix)}")
        assert res.returncode == 0, res.stderr
        out = {}
        for line in res.stdout.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out

    def wait(self, port: int, path: str, deadline: float = 20.0) -> None:
        end = time.monotonic() + deadline
        while True:
            try:
                if self.get(port, path, timeout=1.0).status < 500:
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{self.ip}:{port}{path} not ready:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        # The pod's iptables rules live in its namespace and go with it.
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
