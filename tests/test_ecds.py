"""One change, every replica: the filter's configuration read through ECDS from a
directory laid out as the kubelet mounts a ConfigMap, swapped the way the kubelet swaps
it, in a real Envoy with 2 workers; then three pods (network namespaces, one Envoy each)
mounting one such directory.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from harness import REPO_ROOT, ListenerSpec, Response, request, wait_for
from pods import FILTER_FILE, ConfigMapVolume, Pod, configmap, filter_files, render, to_host_paths

FILTER_TEXT = (REPO_ROOT / "envoy" / FILTER_FILE).read_text()
# Log lines that mean the module or a VM failed; a refused configuration is tested apart.
VM_FAILURES = ("Wasm VM failed", "failed to load", "panicked at", "wasm trap")


def _ecds(volume: Path) -> dict:
    return {
        "name": "fault_injector",
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": str(volume / FILTER_FILE),
                    "watched_directory": {"path": str(volume)},
                }
            },
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    }


@pytest.fixture
def ecds_envoy(start_envoy, tmp_path):
    """Factory: an Envoy whose filter comes through ECDS from a kubelet-style volume holding
    `plugin_config`; returns (envoy, swap), where swap(plugin_config) updates the volume."""

    def start(plugin_config: str):
        volume = tmp_path / "filter"
        cm = ConfigMapVolume(volume, filter_files(FILTER_TEXT, plugin_config, volume))

        envoy = start_envoy(listeners=[ListenerSpec(http_filters=[_ecds(volume)])],
                            node={"id": "test", "cluster": "fault-injector"})
        return envoy, lambda config: cm.update(filter_files(FILTER_TEXT, config, volume))

    return start


def vm_failures(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(m in line for m in VM_FAILURES)]


def answered_on_every_worker(send: Callable[[], Response], status: int, times: int = 20) -> bool:
    """Whether `times` requests in a row, each `send()` on a new connection (which the kernel
    spreads over the workers), answer `status`. A new configuration reaches each worker
    moments after GET /injector shows it (docs/configuration.md), so tests poll this."""
    return all(send().status == status for _ in range(times))


def worker_connections(envoy) -> list[int]:
    found = envoy.stats(r"worker_\d+\.downstream_cx_total")
    return [v for k, v in sorted(found.items()) if k.startswith("listener.127.0.0.1_")]


def test_swap_applies_once_on_both_workers_without_dropping_a_request(ecds_envoy):
    # v1: no fault, but client 127.0.0.9 is held 2 s, so requests are in flight at the swap.
    envoy, swap = ecds_envoy('{"version": "v1", "clients": [{"ip": "127.0.0.9", "timeout": "2s", "percentage": 100}]}')
    assert envoy.policy()["configuration"]["version"] == "v1"

    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []
    errors: list[str] = []

    def steady(i: int) -> None:
        while not stop.is_set():
            try:
                r = request(envoy.port, f"/steady/{i}", source_ip=f"127.0.1.{i + 1}")
                seen.append((r.status, r.headers.get("x-fault-injected")))
            except OSError as e:
                errors.append(repr(e))

    held: list = []

    def held_request(i: int) -> None:
        try:
            held.append(request(envoy.port, f"/held/{i}", source_ip="127.0.0.9", timeout=15))
        except OSError as e:
            errors.append(f"held: {e!r}")

    threads = [threading.Thread(target=steady, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=held_request, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: envoy.metrics(settle=False).get("active_delays") == 10, timeout=5)
        before = worker_connections(envoy)
        swapped = time.monotonic()
        swap('{"version": "v2", "policy": {"status": 418, "percentage": 100}}')

        wait_for(lambda: answered_on_every_worker(lambda: request(envoy.port, "/probe"), 418), timeout=5, interval=0.05)
        in_force = time.monotonic() - swapped
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    after = worker_connections(envoy)
    assert len(before) == 2 and all(a > b for a, b in zip(after, before)), (before, after)
    assert in_force < 5, in_force

    assert errors == []
    statuses = {(s, h) for s, h in seen}
    assert statuses <= {(200, None), (418, "statusResponse")}, statuses
    assert (200, None) in statuses and (418, "statusResponse") in statuses
    # The held requests, started under v1, finish as v1 said: after 2 s, from the upstream.
    assert len(held) == 10
    assert all(r.status == 200 and r.headers.get("x-fault-injected") == "delay" and r.elapsed > 1.9 for r in held)

    body = envoy.policy()
    assert body["configuration"]["version"] == "v2" and body["clients"] == []
    log = envoy.log_text()
    assert vm_failures(log) == []
    installed = [line for line in log.splitlines() if "start policy of configuration" in line and '"v2"' in line]
    assert len(installed) == 1, installed


def test_refused_configuration_leaves_the_one_in_force(ecds_envoy):
    envoy, swap = ecds_envoy('{"version": "good", "policy": {"status": 503, "percentage": 100}}')
    swap('{"version": "bad", "polcy": {}}')
    rejected = "extension_config_discovery.http_filter.fault_injector.update_rejected"
    wait_for(lambda: envoy.stats(rejected).get(rejected) == 1, timeout=5)
    assert envoy.policy()["configuration"]["version"] == "good"
    assert request(envoy.port, "/x").status == 503
    assert re.search(r"invalid plugin configuration: unknown field `polcy`", envoy.log_text())


def test_control_calls_last_until_the_next_configuration_and_retry_counts_carry_on(ecds_envoy):
    retries = '{"version": "%s", "policy": {"boundedRetries": 3, "percentage": 100}}'
    envoy, swap = ecds_envoy(retries % "v1")
    assert [request(envoy.port, "/r").status for _ in range(2)] == [503, 503]
    assert envoy.control("ip=127.0.0.5&status=500&percentage=100").status == 200
    assert request(envoy.port, "/x", source_ip="127.0.0.5").status == 500
    swap(retries % "v2")
    wait_for(lambda: envoy.policy()["configuration"]["version"] == "v2", timeout=5)
    # The new configuration's start replaced the binding made by the control call...
    assert envoy.policy()["clients"] == []
    # ...on every worker; each probe is a first attempt (a new path) under v2's retries.
    probes = (f"/x{i}" for i in itertools.count())
    probe = lambda: request(envoy.port, next(probes), source_ip="127.0.0.5")  # noqa: E731
    wait_for(lambda: answered_on_every_worker(probe, 503), timeout=5, interval=0.05)
    # ...but the bounded-retry table is not policy: /r's count went on from 2.
    assert [request(envoy.port, "/r").status for _ in range(2)] == [503, 200]


@pytest.fixture
def three_pods(tmp_path):
    """Three pods of the rendered k8s/base, mounting one filter ConfigMap volume."""
    objects = render("k8s/base")
    volume = tmp_path / "filter"
    filter_text = configmap(objects, "fault-injector-filter")["data"][FILTER_FILE]
    cm = ConfigMapVolume(volume, filter_files(filter_text, filter_dir=volume))
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(to_host_paths(configmap(objects, "fault-injector-envoy")["data"]["envoy.yaml"], volume))
    pods = [Pod(i, bootstrap, tmp_path / f"envoy-{i}.log") for i in range(3)]
    try:
        for pod in pods:
            pod.start()
        yield pods, lambda config: cm.update(filter_files(filter_text, config, volume))
    finally:
        for pod in pods:
            pod.stop()


def test_one_configmap_change_switches_every_pod_and_a_curl_only_one(three_pods):
    pods, swap = three_pods
    assert all(p.get(8080, "/x").status == 200 for p in pods)
    swap(json.dumps({"version": "2", "policy": {"status": 503, "percentage": 100},
                     "control": {"port": 8282, "allowed_cidrs": ["0.0.0.0/0", "::/0"]}}))

    def switched(pod: Pod) -> bool:
        return (json.loads(pod.get(8282, "/injector").body)["configuration"]["version"] == "2"
                and answered_on_every_worker(lambda: pod.get(8080, "/x"), 503, times=10))

    for pod in pods:
        try:
            wait_for(lambda: switched(pod), timeout=5, interval=0.1)
        except TimeoutError:
            pytest.fail(f"{pod.ns} did not switch to version 2 on every worker:\n{pod.log()[-2000:]}")
    # A control call reaches one pod and changes only that one.
    assert pods[0].get(8282, "/injector?policy=none").status == 200
    assert all(pods[0].get(8080, "/x").status == 200 for _ in range(10))
    for pod in pods[1:]:
        assert all(pod.get(8080, "/x").status == 503 for _ in range(10))
    for pod in pods:
        assert vm_failures(pod.log()) == []
