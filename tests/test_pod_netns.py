"""The rendered k8s/base pod, run as a pod runs: app and Envoy in one network namespace,
reached over a veth pair from the host's namespace, with the exact files of the rendered
ConfigMaps (the Envoy bootstrap, and the filter's configuration laid out as the kubelet
mounts it); only the paths of the module and of that volume point at this machine.

Proves: the Service's targetPort (Envoy's 8080) reaches the app and normal traffic passes;
the seed's curl lines against port 8282 change what clients see on 8080; /injector on
8080 is the app's; the probe port stays 200 while a fault is on; admin is not reachable
from outside the pod.

Then k8s/examples/injected, the default component's transparent capture (below).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from harness import SHIPPED_ENVOY_ENVIRONMENT, request, wait_for
from pods import FILTER_FILE, ConfigMapVolume, Pod, configmap, filter_files, lay_out_injected, render, to_host_paths


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    objects = render("k8s/base")
    tmp = tmp_path_factory.mktemp("pod")
    volume = tmp / "filter"
    ConfigMapVolume(volume, filter_files(configmap(objects, "fault-injector-filter")["data"][FILTER_FILE], filter_dir=volume))
    bootstrap = tmp / "envoy.yaml"
    bootstrap.write_text(to_host_paths(configmap(objects, "fault-injector-envoy")["data"]["envoy.yaml"], volume))
    pod = Pod(0, bootstrap, tmp / "envoy.log")
    try:
        yield pod.start()
    finally:
        pod.stop()


def curl(url: str) -> str:
    """The seed's control call, as written, with curl."""
    res = subprocess.run(["curl", "-sS", "-m", "5", url], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_pod_passes_traffic_and_the_seed_curl_changes_it(pod):
    r = pod.get(8080, "/hello")
    assert (r.status, r.text) == (200, "upstream GET /hello\n"), pod.log()[-2000:]
    assert "x-fault-injected" not in r.headers
    # The data port passes /injector to the app: the control route is on 8282 only.
    r = pod.get(8080, "/injector?status=418")
    assert (r.status, r.text) == (200, "upstream GET /injector?status=418\n")

    assert '"status":404' in curl(f"http://{pod.ip}:8282/injector?status=404")
    try:
        statuses = [pod.get(8080, f"/item/{i}") for i in range(300)]
        faulted = [r for r in statuses if r.status == 404]
        passed = [r for r in statuses if r.status == 200]
        assert len(faulted) + len(passed) == 300
        # The seed's "20% tested traffic": 60 expected; 30..95 is beyond 4 sigma.
        assert 30 <= len(faulted) <= 95, len(faulted)
        assert all(r.headers.get("x-fault-injected") == "statusResponse" for r in faulted)
        assert all("x-fault-injected" not in r.headers for r in passed)
        # Probes are not hit by the fault.
        assert all(pod.get(8090, "/ready").status == 200 for _ in range(20))
        # Anything but /injector on the control port is 404 from Envoy, never the app.
        r = pod.get(8282, "/hello")
        assert r.status == 404 and "upstream" not in r.text
    finally:
        assert '"policy":"none"' in curl(f"http://{pod.ip}:8282/injector?reset")
    assert all(pod.get(8080, "/hello").status == 200 for _ in range(50))


def test_admin_is_not_reachable_from_outside_the_pod(pod):
    with pytest.raises(OSError):
        pod.get(9901, "/ready", timeout=2.0)


def test_policy_document_posted_to_the_control_port(pod):
    doc = {"rules": [{"match": {"path": {"prefix": "/checkout"}, "method": "POST"}, "fault": {"abort": {"status": 503}}}]}
    r = request(8282, "/injector", method="POST", body=json.dumps(doc), source_ip=pod.host_ip, host=pod.ip)
    assert r.status == 200, r.text
    try:
        assert pod.get(8080, "/checkout").status == 200  # a GET: not matched
        r = request(8080, "/checkout", method="POST", body="{}", source_ip=pod.host_ip, host=pod.ip)
        assert r.status == 503 and r.headers["x-fault-injected"] == "abort"
    finally:
        assert request(8282, "/injector", method="DELETE", source_ip=pod.host_ip, host=pod.ip).status == 200
    r = request(8080, "/checkout", method="POST", body="{}", source_ip=pod.host_ip, host=pod.ip)
    assert r.status == 200


# --------------------------------------------------------------------------- transparent capture
#
# k8s/examples/injected as its pod runs: an unmodified app on 0.0.0.0:8080 (and a second
# port, 9090, that the pod's annotation leaves out), the capture init container's own
# script from the rendered ConfigMap, run with the env the kubelet would give it, then
# Envoy with the rendered bootstrap and args (--concurrency from its env).

ANNOTATIONS = {"fault-injector/ports": "8080,9095,9096"}
APP_PORT, OTHER_PORT, GRPC_PORT, WEBSOCKET_PORT = 8080, 9090, 9095, 9096
# A gRPC app (HTTP/2 without TLS) on 0.0.0.0:9095: answers test.Echo/Ping with "pong:" + request.
GRPC_APP = """
import sys, threading
from concurrent import futures
import grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"pong:" + req)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Ping": handler}),))
server.add_insecure_port("0.0.0.0:%s" % sys.argv[1])
server.start()
threading.Event().wait()
"""
# An app that takes WebSocket upgrades on 0.0.0.0:9096 and then echoes what it receives.
WEBSOCKET_APP = """
import socket, sys, threading
def serve(conn):
    with conn:
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            head += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n")
        while data := conn.recv(4096):
            conn.sendall(data)
listener = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""
# Counters of the inbound listener's HTTP connection manager and of its cluster.
INBOUND_RQ, INBOUND_UPSTREAM_RQ = "http.inbound_http.downstream_rq_total", "cluster.inbound.upstream_rq_total"


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captured")
    _, capture_argv, capture_env, envoy_argv, _, envoy_env = lay_out_injected("k8s/examples/injected", "web", ANNOTATIONS, tmp)

    def capture(pod: Pod, *args: str) -> str:
        res = pod.exec(*capture_argv, *args, env=capture_env)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    pod = Pod(1, None, tmp / "envoy.log", apps=(("0.0.0.0", APP_PORT), ("0.0.0.0", OTHER_PORT)),
              envoy_args=envoy_argv, envoy_env=envoy_env, data_port=APP_PORT, init=capture,
              other_apps={GRPC_PORT: [sys.executable, "-c", GRPC_APP, str(GRPC_PORT)],
                          WEBSOCKET_PORT: [sys.executable, "-c", WEBSOCKET_APP, str(WEBSOCKET_PORT)]})
    # The capture container's own command, for the tests that remove and restore the rules.
    pod.capture = lambda *args: capture(pod, *args)
    try:
        yield pod.start()
    finally:
        pod.stop()


def app_count(pod: Pod, port: int) -> int:
    """How many requests the app on `port` has answered, asked from inside the pod."""
    res = pod.exec("curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/__upstream_stats")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["requests"]


def inbound(pod: Pod) -> tuple[int, int]:
    """(requests the inbound listener received, requests it sent to the app)."""
    rq = pod.envoy_stats("http.inbound_http.")
    up = pod.envoy_stats("cluster.inbound.")
    return rq[INBOUND_RQ], up.get(INBOUND_UPSTREAM_RQ, 0)


@pytest.fixture
def fault(captured):
    """Calls the control port as the seed's curl does; resets the policy afterwards."""
    def set_fault(query: str) -> str:
        return curl(f"http://{captured.ip}:8282/injector?{query}")
    yield set_fault
    assert '"policy":"none"' in set_fault("reset")


def test_captured_envoy_runs_the_rendered_worker_count(captured):
    res = captured.exec("curl", "-sS", "-m", "5", "http://127.0.0.1:9901/server_info")
    assert json.loads(res.stdout)["command_line_options"]["concurrency"] == 2


def test_captured_envoy_runs_with_its_containers_environment(captured):
    """Envoy's process has the sidecar container's `env`: libevent's precise clock."""
    envoy = captured.procs[0]
    environ = Path(f"/proc/{envoy.pid}/environ").read_bytes().split(b"\0")
    assert Path(f"/proc/{envoy.pid}/exe").resolve().name == "envoy"
    assert all(f"{k}={v}".encode() in environ for k, v in SHIPPED_ENVOY_ENVIRONMENT.items())


def test_app_port_passes_through_envoy(captured):
    before_app, (before_rq, before_up) = app_count(captured, APP_PORT), inbound(captured)
    for i in range(20):
        r = captured.get(APP_PORT, f"/hello/{i}")
        assert (r.status, r.text) == (200, f"upstream GET /hello/{i}\n"), captured.log()[-2000:]
        # The app's answer as it gave it: no Server header of Envoy's, no x-envoy-* header.
        assert "server" not in r.headers and not [h for h in r.headers if h.startswith("x-envoy")], r.headers
    assert app_count(captured, APP_PORT) == before_app + 20
    rq, up = wait_for(lambda: (v := inbound(captured))[0] >= before_rq + 20 and v)
    assert (rq - before_rq, up - before_up) == (20, 20)


def test_seed_curl_faults_the_app_port(captured, fault):
    assert '"status":404' in fault("status=404")
    before_app = app_count(captured, APP_PORT)
    responses = [captured.get(APP_PORT, f"/item/{i}") for i in range(300)]
    faulted = [r for r in responses if r.status == 404]
    passed = [r for r in responses if r.status == 200]
    assert len(faulted) + len(passed) == 300
    # The start policy's 20%: 60 expected; 10-35% (30..105) is beyond 4 sigma.
    assert 30 <= len(faulted) <= 105, len(faulted)
    assert all(r.headers.get("x-fault-injected") == "statusResponse" for r in faulted)
    assert all("x-fault-injected" not in r.headers for r in passed)
    # Only the requests that passed reached the app.
    assert app_count(captured, APP_PORT) == before_app + len(passed)


def test_kubelet_probes_are_never_faulted(captured, fault):
    """Probes of the app's own port now pass through Envoy: they must never get a fault,
    while other requests on the same port still do."""
    assert '"status":404' in fault("status=404")
    probe = {"User-Agent": "kube-probe/1.35"}
    probes = [captured.get(APP_PORT, "/healthz", headers=probe).status for _ in range(300)]
    others = [captured.get(APP_PORT, "/healthz").status for _ in range(300)]
    assert probes.count(404) == 0 and set(probes) == {200}
    assert 30 <= others.count(404) <= 105, others.count(404)


def test_grpc_app_is_reached_over_http2_through_envoy(captured):
    """The inbound cluster speaks the client's protocol: a gRPC call (HTTP/2) reaches the
    gRPC app on its own port through Envoy."""
    before = inbound(captured)
    with grpc.insecure_channel(f"{captured.ip}:{GRPC_PORT}") as channel:
        assert channel.unary_unary("/test.Echo/Ping")(b"hi", timeout=5) == b"pong:hi"
    assert inbound(captured)[0] > before[0]


def test_websocket_upgrade_passes_through_envoy(captured):
    before = inbound(captured)
    with socket.create_connection((captured.ip, WEBSOCKET_PORT), timeout=5,
                                  source_address=(captured.host_ip, 0)) as conn:
        conn.sendall(b"GET /chat HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        conn.sendall(b"frames after the upgrade")
        echoed = b""
        while len(echoed) < len(b"frames after the upgrade"):
            echoed += conn.recv(4096)
        assert echoed == b"frames after the upgrade"
    assert inbound(captured)[0] > before[0]


def test_port_not_in_the_list_bypasses_envoy(captured, fault):
    assert '"status":404' in fault("status=404&percentage=100")
    before_other, before = app_count(captured, OTHER_PORT), inbound(captured)
    assert [captured.get(OTHER_PORT, f"/x/{i}").status for i in range(20)] == [200] * 20
    assert app_count(captured, OTHER_PORT) == before_other + 20
    assert inbound(captured) == before
    # The listed port at 100% in the same state: the fault is on, and 9090 never saw it.
    assert {captured.get(APP_PORT, "/x").status for _ in range(5)} == {404}


def test_traffic_from_inside_the_pod_is_not_captured(captured, fault):
    assert '"status":404' in fault("status=404&percentage=100")
    before = inbound(captured)
    for target in ("127.0.0.1", captured.ip):
        res = captured.exec("curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{target}:{APP_PORT}/self")
        assert res.stdout == "200", (target, res.stdout, res.stderr)
    assert inbound(captured) == before


def test_connection_to_the_inbound_listener_itself_is_closed(captured):
    """Sent straight to 15006, a connection was not redirected: Envoy would connect to
    itself if it forwarded it. It is closed, and Envoy serves on."""
    with pytest.raises((OSError, http.client.HTTPException)):
        captured.get(15006, "/loop", timeout=2.0)
    assert captured.get(APP_PORT, "/after").status == 200


def test_removing_the_rules_leaves_the_app_reachable(captured, fault):
    assert '"status":404' in fault("status=404&percentage=100")
    assert "rules removed" in captured.capture("clean")
    try:
        assert "FI_" not in captured.exec("iptables-save", "-t", "nat").stdout
        before_app, before = app_count(captured, APP_PORT), inbound(captured)
        assert [captured.get(APP_PORT, f"/direct/{i}").status for i in range(20)] == [200] * 20
        assert app_count(captured, APP_PORT) == before_app + 20
        assert inbound(captured) == before
    finally:
        captured.capture()
    assert captured.get(APP_PORT, "/again").status == 404
