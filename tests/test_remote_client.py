"""A client that is not on loopback, for real: it sits in its own network namespace and
reaches Envoy over a veth pair, as a client from another pod would."""

import os
import shutil
import subprocess
import uuid

import pytest

from harness import ListenerSpec, process_slot

# A subnet of this process's own (pytest-xdist workers run side by side).
NS_ADDR, HOST_ADDR = f"10.201.{process_slot()}.2", f"10.201.{process_slot()}.1"


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def remote_namespace():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("this test needs root and iproute2 (ip netns) to build a client namespace")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"fi-client-{tag}", f"fih{tag}", f"fin{tag}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{NS_ADDR}/30", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def curl_from(ns, url):
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True, text=True, check=False,
    )
    return out.stdout


def test_non_loopback_client_is_refused_control_but_served_data(start_envoy, upstream, remote_namespace):
    envoy = start_envoy(listeners=[ListenerSpec("{}", address=HOST_ADDR)])
    base = f"http://{HOST_ADDR}:{envoy.port}"
    assert curl_from(remote_namespace, f"{base}/injector?status=500&percentage=100") == "403"
    assert curl_from(remote_namespace, f"{base}/app") == "200"
    metrics = envoy.metrics()
    assert metrics["control_refused"] == 1
    assert metrics["policy_changes"] == 0
    assert "control call refused (403)" in envoy.log_text()


def test_allowed_range_lets_the_remote_client_in(start_envoy, upstream, remote_namespace):
    config = {"control": {"allowed_cidrs": [f"10.201.{process_slot()}.0/30"]}}
    envoy = start_envoy(listeners=[ListenerSpec(config, address=HOST_ADDR)])
    base = f"http://{HOST_ADDR}:{envoy.port}"
    assert curl_from(remote_namespace, f"{base}/injector?status=418&percentage=100") == "200"
    assert curl_from(remote_namespace, f"{base}/app") == "418"
