"""The rendered k8s/base pod, run as a pod runs: app and Envoy in one network namespace,
reached over a veth pair from the host's namespace, with the exact files of the rendered
ConfigMaps (the Envoy bootstrap, and the filter's configuration laid out as the kubelet
mounts it); only the paths of the module and of that volume point at this machine.

Proves: the Service's targetPort (Envoy's 8080) reaches the app and normal traffic passes;
the seed's curl lines against port 8282 change what clients see on 8080; /injector on
8080 is the app's; the probe port stays 200 while a fault is on; admin is not reachable
from outside the pod.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from harness import request
from pods import FILTER_FILE, ConfigMapVolume, Pod, configmap, filter_files, render, to_host_paths


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
