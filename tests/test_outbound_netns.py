"""Outbound faults, run for real: k8s/examples/injected's pod as tests/test_pod_netns.py
runs it (capture init container, then Envoy from the rendered bootstrap), with the pod
annotation `fault-injector/outbound-ports: "80,8080"` and Envoy running as UID 1337, as
its securityContext has it, so the capture's `--uid-owner 1337` exception is exercised.

Two dependency pods, `payments` and `catalog`, each a network namespace of its own with a
plain HTTP server (scripts/upstream.py) on 0.0.0.0:8080, linked to the app pod by a veth
pair each; the app pod resolves their names through /etc/netns/<pod>/hosts, which
`ip netns exec` mounts over /etc/hosts for every process it starts there (curl, Envoy).
The app is curl run inside the app pod: it calls a dependency on demand and reports the
status, the headers and the time the call took.

Proves: an outbound fault set for `payments` only through /injector on 8282 fails the
app's calls to payments (503, x-fault-injected) and never reaches payments, while calls to
catalog pass; Envoy's own connections are not captured (each dependency counts exactly
the calls that passed, and the app's inbound traffic still reaches it); a delay on catalog
shows in the app's measured call time; inbound faults apply independently in the same pod;
an app using Envoy as its HTTP proxy (http_proxy) gets the same outbound faults.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import REPO_ROOT, process_slot, wait_for
from pods import Pod, lay_out_injected

ANNOTATIONS = {"fault-injector/ports": "8080", "fault-injector/outbound-ports": "80,8080"}
APP_PORT = DEP_PORT = 8080
ENVOY_UID = 1337
PROXY = "http://127.0.0.1:15002"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Dependency:
    """A dependency pod: its own network namespace, linked to `app_ns` by a veth pair
    (`app_ip` on the app's end, `ip` on its own), with scripts/upstream.py on 0.0.0.0:8080."""

    def __init__(self, name: str, index: int, app_ns: str):
        tag = f"{process_slot()}-{index}"
        self.name, self.ns, self.app_ns = name, f"fi-{name}-{tag}", app_ns
        self.app_if, self.dep_if = f"fia{tag}", f"fid{tag}"
        net = 10 + process_slot()
        self.app_ip, self.ip = f"10.252.{net}.{4 * index + 1}", f"10.252.{net}.{4 * index + 2}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        _run("ip", "netns", "add", self.ns)
        _run("ip", "link", "add", self.app_if, "netns", self.app_ns, "type", "veth", "peer", "name", self.dep_if,
             "netns", self.ns)
        for ns, ifname, ip in ((self.app_ns, self.app_if, self.app_ip), (self.ns, self.dep_if, self.ip)):
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/30", "dev", ifname)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ifname, "up")
        _run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, str(REPO_ROOT / "scripts/upstream.py"),
             "--host", "0.0.0.0", "--port", str(DEP_PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.requests() is not None, timeout=20)

    def requests(self) -> int | None:
        """How many requests the server counted, asked inside its own namespace."""
        res = subprocess.run(["ip", "netns", "exec", self.ns, "curl", "-sS", "-m", "2",
                              f"http://127.0.0.1:{DEP_PORT}/__upstream_stats"], capture_output=True, text=True, timeout=10)
        return json.loads(res.stdout)["requests"] if res.returncode == 0 else None

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # Deleting the namespace deletes the veth pair, both ends.
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def shop():
    """The app pod with outbound capture, and its dependencies by name."""
    if shutil.which("setpriv") is None:
        pytest.fail("Envoy runs as UID 1337 through setpriv (util-linux)")
    # Envoy runs as UID 1337 and must read its files: a directory of our own, not pytest's
    # (which only root may enter).
    tmp = Path(tempfile.mkdtemp(prefix="fi-outbound-"))
    tmp.chmod(0o755)
    _, capture_argv, capture_env, envoy_argv, envoy, envoy_env = lay_out_injected("k8s/examples/injected", "web", ANNOTATIONS, tmp)
    for path in tmp.rglob("*"):
        if path != envoy:
            path.chmod(0o755 if path.is_dir() else 0o644)

    deps: dict[str, Dependency] = {}
    etc = None

    def init(pod: Pod) -> None:
        nonlocal etc
        for index, name in enumerate(("payments", "catalog")):
            deps[name] = Dependency(name, index, pod.ns)
            deps[name].start()
        # Name resolution for what runs in the pod (curl, Envoy's HTTP proxy).
        etc = Path("/etc/netns") / pod.ns
        etc.mkdir(parents=True, exist_ok=True)
        hosts = "".join(f"{d.ip} {name}\n" for name, d in deps.items())
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{hosts}")
        res = pod.exec(*capture_argv, env=capture_env)
        assert res.returncode == 0, res.stdout + res.stderr

    pod = Pod(2, None, tmp / "envoy.log", apps=(("0.0.0.0", APP_PORT),), envoy_args=envoy_argv,
              data_port=APP_PORT, init=init, user=ENVOY_UID, envoy=envoy, envoy_env=envoy_env)
    pod.deps = deps
    try:
        yield pod.start()
    finally:
        pod.stop()
        for dep in deps.values():
            dep.stop()
        if etc is not None:
            shutil.rmtree(etc, ignore_errors=True)
            try:
                etc.parent.rmdir()  # /etc/netns, if nothing else is in it
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


class Call:
    """What the app saw of one call: status, headers (lowercase names), seconds."""

    def __init__(self, status: int, headers: dict[str, str], seconds: float):
        self.status, self.headers, self.seconds = status, headers, seconds

    def __repr__(self) -> str:
        return f"Call({self.status}, {self.headers}, {self.seconds:.3f}s)"


def call(pod: Pod, dep: str, path: str = "/", proxy: bool = False) -> Call:
    """The app calls `dep` by name, with curl inside the app pod (as root, so the capture
    applies; through Envoy's HTTP proxy on loopback if `proxy`)."""
    env = {"http_proxy": PROXY} if proxy else {"http_proxy": "", "no_proxy": "*"}
    res = pod.exec("curl", "-sS", "-m", "10", "-D", "-", "-o", "/dev/null", "-w", "\\n%{http_code} %{time_total}",
                   f"http://{dep}:{DEP_PORT}{path}", env=env)
    assert res.returncode == 0, res.stderr
    head, _, tail = res.stdout.rpartition("\n")
    status, seconds = tail.split()
    headers = {}
    for line in head.splitlines()[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return Call(int(status), headers, float(seconds))


def control(pod: Pod, query: str) -> dict:
    """/injector on the control port, from outside the pod, as the seed's curl does."""
    res = subprocess.run(["curl", "-sS", "-m", "5", f"http://{pod.ip}:8282/injector?{query}"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def reset(shop):
    yield
    assert control(shop, "reset")["rules"] == []


def metrics(pod: Pod) -> dict[str, int]:
    """fault-injector's metrics by their names after `fault_injector.` (the outbound
    listener's counters are `outbound.<name>`)."""
    prefix = "wasmcustom.fault_injector."
    return {k[len(prefix):]: v for k, v in pod.envoy_stats(prefix).items()}


def test_only_calls_to_payments_fail_and_payments_receives_nothing(shop, reset):
    payments, catalog = shop.deps["payments"], shop.deps["catalog"]
    assert call(shop, "payments", "/warmup").status == 200, shop.log()[-3000:]
    shown = control(shop, "host=payments&status=503&percentage=100")
    assert shown["rules"] == [{"direction": "outbound", "match": {"host": {"exact": "payments"}},
                               "fault": {"abort": {"status": 503}}, "percentage": 100.0}], shown
    # The inbound policy is untouched by an outbound binding.
    assert shown["policy"]["policy"] == "none"
    before_p, before_c = payments.requests(), catalog.requests()
    to_payments = [call(shop, "payments", f"/charge/{i}") for i in range(10)]
    to_catalog = [call(shop, "catalog", f"/items/{i}") for i in range(10)]
    assert all(c.status == 503 for c in to_payments), to_payments
    assert all(c.headers.get("x-fault-injected") == "abort" for c in to_payments), to_payments
    assert all(c.headers.get("x-fault-direction") == "outbound" for c in to_payments), to_payments
    assert all(c.status == 200 and "x-fault-injected" not in c.headers for c in to_catalog), to_catalog
    # Payments received nothing while faulted; catalog exactly the app's 10 calls: Envoy's
    # own connections were not captured again (no loop, no extra request).
    assert payments.requests() == before_p
    assert catalog.requests() == before_c + 10
    stats = wait_for(lambda: (s := metrics(shop)).get("outbound.aborts_injected", 0) >= 10 and s)
    # Counted as outbound; the inbound counters of existing scrapes did not move.
    assert stats["outbound.aborts_injected"] == 10, stats
    assert stats.get("aborts_injected", 0) == 0, stats
    # Reset the binding: payments is reached again, once per call.
    assert control(shop, "host=payments&reset")["rules"] == []
    assert call(shop, "payments", "/charge/again").status == 200
    assert payments.requests() == before_p + 1


def test_envoys_own_connections_are_not_captured(shop):
    """The OUTPUT rules capture port 8080, which is also the app's own port: Envoy's inbound
    connection to the app (UID 1337) and its outbound connections to the dependencies
    would come back to Envoy without the owner exception."""
    rules = shop.exec("iptables-save", "-t", "nat").stdout
    assert f"-A FI_OUTBOUND -m owner --uid-owner {ENVOY_UID} -j RETURN" in rules, rules
    # ip netns exec and setpriv exec into Envoy: the pid is Envoy's.
    status = Path(f"/proc/{shop.procs[0].pid}/status").read_text()
    uids = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert uids == [[str(ENVOY_UID)] * 4], uids
    before = shop.envoy_stats("cluster.outbound.").get("cluster.outbound.upstream_rq_total", 0)
    catalog = shop.deps["catalog"]
    start = catalog.requests()
    assert [call(shop, "catalog", f"/n/{i}").status for i in range(5)] == [200] * 5
    assert catalog.requests() == start + 5
    rq = wait_for(lambda: (v := shop.envoy_stats("cluster.outbound.").get("cluster.outbound.upstream_rq_total", 0)) >= before + 5 and v)
    assert rq == before + 5
    # Inbound through the same Envoy still reaches the app on the captured port.
    assert shop.get(APP_PORT, "/in").status == 200


def test_a_delay_on_catalog_shows_in_the_apps_call_time(shop, reset):
    fast = [call(shop, "catalog", "/fast").seconds for _ in range(3)]
    assert max(fast) < 0.3, fast
    control(shop, "host=catalog&timeout=600ms&percentage=100")
    slow = [call(shop, "catalog", "/slow") for _ in range(3)]
    assert all(c.status == 200 and 0.55 <= c.seconds < 3.0 for c in slow), slow
    assert all(c.headers.get("x-fault-injected") == "delay" for c in slow), slow
    # Payments is not delayed.
    assert call(shop, "payments", "/quick").seconds < 0.3


def test_inbound_faults_apply_independently_in_the_same_pod(shop, reset):
    control(shop, "host=payments&status=503&percentage=100")
    control(shop, "status=404&percentage=100")
    # Inbound: every request to the app gets the inbound fault, without a direction header.
    inbound = [shop.get(APP_PORT, f"/web/{i}") for i in range(5)]
    assert all(r.status == 404 and r.headers.get("x-fault-injected") == "statusResponse" for r in inbound)
    assert all("x-fault-direction" not in r.headers for r in inbound)
    # Outbound: the default (inbound) policy does not touch the app's calls.
    assert call(shop, "catalog", "/c").status == 200
    assert call(shop, "payments", "/p").status == 503
    control(shop, "policy=none")
    assert shop.get(APP_PORT, "/web").status == 200
    assert call(shop, "payments", "/p").status == 503


def test_http_proxy_mode_faults_the_same_dependency(shop, reset):
    payments, catalog = shop.deps["payments"], shop.deps["catalog"]
    before_p, before_c = payments.requests(), catalog.requests()
    before_proxy = shop.envoy_stats("http.http_proxy.").get("http.http_proxy.downstream_rq_total", 0)
    control(shop, "host=payments&status=503&percentage=100")
    faulted = call(shop, "payments", "/via-proxy", proxy=True)
    assert faulted.status == 503 and faulted.headers.get("x-fault-injected") == "abort", faulted
    passed = call(shop, "catalog", "/via-proxy", proxy=True)
    assert passed.status == 200 and "x-fault-injected" not in passed.headers, passed
    assert (payments.requests(), catalog.requests()) == (before_p, before_c + 1)
    # Both went through the proxy listener, not the capture.
    rq = wait_for(lambda: (v := shop.envoy_stats("http.http_proxy.").get("http.http_proxy.downstream_rq_total", 0)) >= before_proxy + 2 and v)
    assert rq == before_proxy + 2


def test_a_call_to_an_uncaptured_port_bypasses_envoy(shop, reset):
    """Only the annotated ports are captured: a call to another port (here the control
    port of the pod itself, 8282, on its own address) is not faulted by outbound rules."""
    control(shop, "dest=0.0.0.0/0&status=503&percentage=100")
    res = shop.exec("curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", f"http://{shop.ip}:8282/injector")
    assert res.stdout == "200", res
    assert call(shop, "catalog", "/any").status == 503
