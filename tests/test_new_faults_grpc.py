"""What the faults of issue 17 look like to a real grpcio client calling a grpcio server
through Envoy (2 workers, HTTP/2). The codes asserted here are the ones documented in
docs/new-faults.md."""

from __future__ import annotations

import time

import grpc
import pytest

from harness import FAULT_FILTER, ListenerSpec
from test_grpc import HTTP2_UPSTREAM, METHOD, SERVICE, envoy, failure, grpc_server, injected, ping, reused_envoy_options  # noqa: F401 (fixtures)

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


def test_a_long_tail_delay_lets_the_call_succeed(envoy, ping):
    rule(envoy, {"delay_shape": {"p50": "50ms", "p99": "200ms"}})
    assert ping(b"hi", timeout=10) == b"pong:hi"


def test_a_throttled_call_succeeds(start_envoy, grpc_server):
    # Envoy's fault filter paces it; a unary answer of a few bytes passes its first slice.
    spec = ListenerSpec({"envoy_fault_filter": True}, http_filters_after=[FAULT_FILTER])
    paced = start_envoy(listeners=[spec], upstream_port=grpc_server, upstream_options=HTTP2_UPSTREAM)
    rule(paced, {"throttle": {"bytes_per_second": 1024}})
    with grpc.insecure_channel(f"127.0.0.1:{paced.port}") as channel:
        answer, call = channel.unary_unary(f"/{SERVICE}/{METHOD}").with_call(b"hi", timeout=10)
    assert answer == b"pong:hi" and dict(call.initial_metadata())["x-fault-injected"] == "throttle"


@pytest.mark.parametrize("change", [{"replace": {"body": "not a grpc frame"}}, {"corrupt": {"percentage": 100}}])
def test_a_changed_body_never_delivers_the_servers_message(envoy, ping, change):
    # grpcio 1.85 mostly reports OK with no message (None). A corrupted length prefix can
    # also end the call with RESOURCE_EXHAUSTED ("Received message larger than max"): seen
    # once in CI, depending on how the frames reach the client. Either way no message.
    rule(envoy, {"body_change": change})
    try:
        answer, call = ping.with_call(b"hi", timeout=5)
    except grpc.RpcError as error:
        answer, call = None, error
    assert answer is None
    assert call.code() in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED), call.code()
    assert dict(call.initial_metadata())["x-fault-injected"] == "bodyChange"
    assert envoy.metrics()["bodies_changed"] == 1
