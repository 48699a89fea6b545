"""Holds handed to Envoy's fault filter: on a listener with Envoy's fault filter after
fault-injector, configured as shipped, and `"envoy_fault_filter": true` in fault-injector's
configuration, fault-injector decides and counts a slow failure or a reset `after` a delay
(with `"envoy_fault_filter_delays": true`, a plain delay too), and Envoy's fault filter holds
the request on its own timer (its `delays_injected` and `aborts_injected` counters say it
did); an abort that comes before its time waits for it in fault-injector
(test_faults.py::test_held_requests_are_never_released_early). A real Envoy with 2 workers,
one module-wide Envoy reset before each test."""

import http.client
import threading
import time

import grpc
import pytest

from harness import FAULT_FILTER, ListenerSpec, request, wait_for
from reuse import envoy, upstream  # noqa: F401 (fixtures: the module's one Envoy)
from test_grpc import HTTP2_UPSTREAM, METHOD, SERVICE, grpc_server  # noqa: F401 (fixture)

HANDING = {"envoy_fault_filter": True, "envoy_fault_filter_delays": True}
# The second as shipped: Envoy's fault filter after fault-injector paces throttles and holds
# slow failures and resets, and fault-injector holds plain delays itself.
REUSED_LISTENERS = [ListenerSpec(HANDING, http_filters_after=[FAULT_FILTER]),
                    ListenerSpec({"envoy_fault_filter": True}, http_filters_after=[FAULT_FILTER])]
# What a client could send to drive Envoy's fault filter itself.
CLIENT_FAULTS = {
    "x-fault-injector-envoy-fault": "1",
    "x-envoy-fault-delay-request": "2000",
    "x-envoy-fault-abort-request": "500",
}


def envoys_faults(envoy) -> tuple[int, int]:
    """(delays, aborts) Envoy's fault filters injected since the counters were reset."""
    s = envoy.stats("fault")
    return (sum(v for k, v in s.items() if k.endswith(".fault.delays_injected")),
            sum(v for k, v in s.items() if k.endswith(".fault.aborts_injected")))


def timed_get(envoy, path: str, headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        start = time.monotonic()
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        body = answer.read()
        return answer, body, time.monotonic() - start
    finally:
        conn.close()


def test_a_delay_is_held_by_envoys_fault_filter_and_counted_once(envoy, upstream):
    envoy.policy("policy=delayResponse&timeout=400ms&percentage=100")
    got = {}
    # The client's own x-envoy-fault-* headers neither add an abort nor change the delay.
    held = threading.Thread(target=lambda: got.update(answer=timed_get(envoy, "/held", CLIENT_FAULTS)))
    held.start()
    wait_for(lambda: envoy.metrics(settle=False)["active_delays"] == 1, timeout=2)
    held.join()
    answer, _, elapsed = got["answer"]
    assert answer.status == 200 and answer.getheader("x-fault-injected") == "delay"
    assert 0.39 <= elapsed < 1.5, elapsed
    assert upstream.count == 1
    _, path, headers, _ = upstream.requests[0]
    assert path == "/held"
    assert headers.get("x-envoy-fault-delay-request") == "400" and "x-envoy-fault-abort-request" not in headers
    assert envoys_faults(envoy) == (1, 0)
    wait_for(lambda: envoy.metrics(settle=False)["active_delays"] == 0, timeout=2)
    m = envoy.metrics()
    assert (m["requests_seen"], m["delays_injected"]) == (1, 1)


def test_a_client_cannot_drive_envoys_fault_filter(envoy, upstream):
    # No fault in force: the mark and the fault headers a client sends do nothing.
    answer = request(envoy.port, "/free", headers=CLIENT_FAULTS)
    assert answer.status == 200 and answer.elapsed < 1.0, answer
    assert upstream.count == 1 and "x-fault-injector-envoy-fault" not in upstream.requests[0][2]
    assert envoys_faults(envoy) == (0, 0)
    assert envoy.metrics()["requests_passed"] == 1


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_a_slow_failure_is_envoys_delay_then_this_filters_answer(envoy, upstream, http2):
    envoy.policy("policy=slowFailure&timeout=300ms&status=503&percentage=100")
    answer = request(envoy.port, "/slow", headers=CLIENT_FAULTS, http2=http2)
    assert answer.status == 503 and answer.headers["x-fault-injected"] == "slowFailure"
    # Fault-injector's own answer, as when it holds the request itself.
    assert answer.body == b"fault filter abort\n" and answer.headers["content-length"] == str(len(answer.body))
    assert answer.elapsed >= 0.29
    assert upstream.count == 0
    assert envoys_faults(envoy) == (1, 1)
    m = envoy.metrics()
    assert (m["requests_seen"], m["slow_failures_injected"]) == (1, 1)


def test_a_reset_after_a_delay_never_reaches_the_upstream(envoy, upstream):
    envoy.policy("policy=resetStream&after=300ms&percentage=100")
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    start = time.monotonic()
    conn.request("GET", "/reset")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    elapsed = time.monotonic() - start
    conn.close()
    assert 0.29 <= elapsed < 1.5, elapsed
    assert upstream.count == 0
    # Envoy's fault filter held it and aborted it; its answer never left.
    assert envoys_faults(envoy) == (1, 1)
    m = envoy.metrics()
    assert (m["requests_seen"], m["resets_injected"]) == (1, 1)


def test_a_grpc_callers_slow_failure_gets_its_grpc_status(start_envoy, grpc_server):  # noqa: F811
    envoy = start_envoy(listeners=[ListenerSpec(HANDING, http_filters_after=[FAULT_FILTER])], upstream_port=grpc_server,
                        upstream_options=HTTP2_UPSTREAM)
    envoy.policy(document={"rules": [{"fault": {"delay": {"fixed": "300ms"}, "abort": {"grpc_status": 8}}}]}, method="GET")
    with grpc.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/{SERVICE}/{METHOD}")(b"hi", timeout=5)
        elapsed = time.monotonic() - start
    error = raised.value
    metadata = dict(error.initial_metadata() or ()) | dict(error.trailing_metadata() or ())
    assert (error.code(), error.details(), metadata.get("x-fault-injected")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "fault filter abort", "slowFailure")
    assert elapsed >= 0.29
    assert envoys_faults(envoy) == (1, 1)
    assert envoy.metrics()["slow_failures_injected"] == 1


def test_as_shipped_fault_injector_holds_plain_delays_itself(envoy, upstream):
    envoy.policy("policy=delayResponse&timeout=300ms&percentage=100")
    answer = request(envoy.ports[1], "/held")
    assert answer.status == 200 and answer.headers["x-fault-injected"] == "delay" and answer.elapsed >= 0.3
    assert upstream.count == 1 and "x-envoy-fault-delay-request" not in upstream.requests[0][2]
    assert envoys_faults(envoy) == (0, 0)
    envoy.policy("policy=slowFailure&timeout=300ms&status=503&percentage=100")
    answer = request(envoy.ports[1], "/slow")
    assert answer.status == 503 and answer.headers["x-fault-injected"] == "slowFailure" and answer.elapsed >= 0.3
    assert upstream.count == 1
    assert envoys_faults(envoy) == (1, 1)


def test_a_fault_filter_that_cannot_abort_is_named_in_the_log(start_envoy, upstream):
    # Configured as before delays were handed over: it paces, and neither delays nor aborts.
    pacer = {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": FAULT_FILTER["typed_config"]["@type"],
        "response_rate_limit": FAULT_FILTER["typed_config"]["response_rate_limit"]}}
    envoy = start_envoy(listeners=[ListenerSpec({"envoy_fault_filter": True}, http_filters_after=[pacer])])
    envoy.policy("policy=slowFailure&timeout=300ms&status=503&percentage=100")
    answer = request(envoy.port, "/slow")
    assert answer.status == 200 and "x-fault-injected" not in answer.headers
    wait_for(lambda: "Envoy's fault filter did not abort a request handed to it (via_upstream)" in envoy.log_text(), timeout=5)
