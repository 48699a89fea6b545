"""What the faults of issue 17 look like to a real grpcio client calling a grpcio server
through Envoy (2 workers, HTTP/2). The codes asserted here are the ones documented in
docs/new-faults.md."""

from __future__ import annotations

import time

import grpc
import pytest

from test_grpc import METHOD, SERVICE, envoy, failure, grpc_server, injected, ping, reused_envoy_options  # noqa: F401 (fixtures)

def rule(envoy, fault: dict) -> None:
    envoy.policy(document={"rules": [{"fault": fault}]}, method="GET")


@pytest.mark.parametrize("fault, code", [
    ({"reset": {}}, grpc.StatusCode.INTERNAL),
    ({"reset": {"after": "300ms"}}, grpc.StatusCode.INTERNAL),
    ({"truncate": {"after_bytes": 3}}, grpc.StatusCode.INTERNAL),
    ({"delay": {"fixed": "300ms"}, "abort": {"status": 503}}, grpc.StatusCode.UNAVAILABLE),
], ids=["reset", "reset-after", "truncate", "slow-failure"])
def test_failing_faults_give_their_status(envoy, ping, fault, code):
    rule(envoy, fault)
    start = time.monotonic()
    error = failure(ping)
    assert error.code() == code, (error.code(), error.details())
    if "after" in fault.get("reset", {}) or "delay" in fault:
        assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("fault", [
    {"throttle": {"bytes_per_second": 10}},
    {"delay_shape": {"p50": "50ms", "p99": "200ms"}},
], ids=["throttle", "delay-shape"])
def test_pacing_faults_let_the_call_succeed(envoy, ping, fault):
    # A unary answer is one piece, which a throttle lets through at once (one piece ahead).
    rule(envoy, fault)
    assert ping(b"hi", timeout=10) == b"pong:hi"


@pytest.mark.parametrize("change", [{"replace": {"body": "not a grpc frame"}}, {"corrupt": {"percentage": 100}}])
def test_a_changed_body_never_delivers_the_servers_message(envoy, ping, change):
    # grpcio 1.85 reports OK with no message (None) for both, as measured.
    rule(envoy, {"body_change": change})
    answer, call = ping.with_call(b"hi", timeout=5)
    assert answer is None and call.code() == grpc.StatusCode.OK
    assert dict(call.initial_metadata())["x-fault-injected"] == "bodyChange"
    assert envoy.metrics()["bodies_changed"] == 1
