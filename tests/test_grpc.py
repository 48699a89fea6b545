"""gRPC callers, for real: a grpcio client calls a grpcio server through Envoy (2 workers)
over HTTP/2, and injected faults reach it the way gRPC servers fail: HTTP 200 with
`grpc-status` (the code given, or the one the gRPC spec maps the HTTP status to).
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

# `envoy`: an Envoy in front of the gRPC server, one per module, reset before each test. It
# has no buffer filter, so policy documents go as `?document=` (GET).
from reuse import envoy  # noqa: F401 (fixture)

SERVICE, METHOD = "test.Echo", "Ping"


@pytest.fixture(scope="module")
def grpc_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"pong:" + req)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


HTTP2_UPSTREAM = {
    "typed_extension_protocol_options": {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
}


@pytest.fixture(scope="module")
def reused_envoy_options(grpc_server) -> dict:
    return {"upstream_port": grpc_server, "upstream_options": HTTP2_UPSTREAM}


@pytest.fixture
def ping(envoy):
    channel = grpc.insecure_channel(f"127.0.0.1:{envoy.port}")
    yield channel.unary_unary(f"/{SERVICE}/{METHOD}")
    channel.close()


def failure(ping) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        ping(b"hi", timeout=5)
    return raised.value


def injected(error: grpc.RpcError) -> str | None:
    metadata = dict(error.initial_metadata() or ()) | dict(error.trailing_metadata() or ())
    return metadata.get("x-fault-injected")


def test_untouched_calls_pass(ping):
    assert ping(b"hi", timeout=5) == b"pong:hi"


def test_abort_with_a_grpc_code(envoy, ping):
    envoy.policy(document={"rules": [{"match": {"path": {"exact": f"/{SERVICE}/{METHOD}"}}, "fault": {"abort": {"grpc_status": 8}}}]}, method="GET")
    error = failure(ping)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert injected(error) == "abort"


@pytest.mark.parametrize("status, code", [(503, grpc.StatusCode.UNAVAILABLE), (404, grpc.StatusCode.UNIMPLEMENTED),
                                          (401, grpc.StatusCode.UNAUTHENTICATED), (500, grpc.StatusCode.UNKNOWN)])
def test_http_status_maps_to_the_grpc_code(envoy, ping, status, code):
    envoy.policy(document={"rules": [{"fault": {"abort": {"status": status}}}]}, method="GET")
    assert failure(ping).code() == code


def test_query_policies_fail_grpc_callers_the_grpc_way(envoy, ping):
    assert envoy.control("status=503&percentage=100").status == 200
    error = failure(ping)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and injected(error) == "statusResponse"
    assert envoy.control("boundedRetries=2&percentage=100").status == 200
    codes = []
    for _ in range(3):
        try:
            codes.append(ping(b"x", timeout=5))
        except grpc.RpcError as e:
            codes.append(e.code())
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, b"pong:x"]


def test_canned_response_with_a_grpc_status(envoy, ping):
    envoy.policy(document={"rules": [{"fault": {"response": {"status": 200, "body": "no such user", "grpc_status": 5}}}]}, method="GET")
    error = failure(ping)
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "no such user"
    assert injected(error) == "response"


def test_delay_then_the_call_succeeds(envoy, ping):
    envoy.policy(document={"rules": [{"fault": {"delay": {"fixed": "300ms"}}}]}, method="GET")
    call = ping.with_call(b"hi", timeout=5)
    assert call[0] == b"pong:hi"
    assert dict(call[1].initial_metadata()).get("x-fault-injected") == "delay"
