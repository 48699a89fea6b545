"""Kubelet probes (`User-Agent: kube-probe/...`) pass untouched whatever the policy, so a
fault does not get the pod restarted; `probes.pass: false` turns that off. A real Envoy with
2 workers, every request aborted with 503."""

import json

from harness import custom_metrics, request

ABORT_ALL = {"status": 503, "percentage": 100}
PROBE = {"user-agent": "kube-probe/1.35"}


def test_probes_pass_while_other_requests_are_aborted(start_envoy, upstream):
    envoy = start_envoy({"policy": ABORT_ALL})
    # Separate connections, so that both workers serve some of each.
    plain = [request(envoy.port, f"/work/{i}") for i in range(20)]
    probes = [request(envoy.port, f"/healthz/{i}", headers=PROBE) for i in range(20)]
    assert {r.status for r in plain} == {503}
    assert all(r.headers["x-fault-injected"] == "statusResponse" for r in plain)
    assert {r.status for r in probes} == {200}
    assert all("x-fault-injected" not in r.headers for r in probes)
    assert all(r.body.startswith(b"upstream GET /healthz/") for r in probes)
    assert upstream.count == 20
    m = custom_metrics(envoy)
    assert m["fault_injector.probes_passed"] == 20
    assert m["fault_injector.aborts_injected"] == 20
    assert m["fault_injector.requests_passed"] == 0
    assert m["fault_injector.requests_seen"] == 40


def test_a_probe_where_no_fault_applies_is_a_passing_request(envoy, upstream):
    assert request(envoy.port, "/healthz", headers=PROBE).status == 200
    m = custom_metrics(envoy)
    assert (m["fault_injector.requests_passed"], m["fault_injector.probes_passed"]) == (1, 0)


def test_with_the_switch_off_probes_get_the_fault(start_envoy, upstream):
    envoy = start_envoy({"policy": ABORT_ALL, "probes": {"pass": False}})
    probes = [request(envoy.port, f"/healthz/{i}", headers=PROBE) for i in range(10)]
    assert {r.status for r in probes} == {503}
    assert upstream.count == 0
    m = custom_metrics(envoy)
    assert m["fault_injector.probes_passed"] == 0
    assert m["fault_injector.aborts_injected"] == 10
    # The switch is configuration, not policy: the control route shows no trace of it.
    assert "probes" not in json.loads(request(envoy.port, "/injector").body)
