"""Ways to reach or dodge the control route: each behaves as docs/control-api.md documents, and
none half-applies a change."""

import socket

import pytest


def raw_get(port, target):
    """Sends the request target exactly as given (http.client would reject some)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("target", ["//injector?status=500", "/injector/?status=500", "/Injector?status=500", "/%69njector?status=500"])
def test_near_misses_are_ordinary_requests(reused_envoy, target):
    envoy = reused_envoy
    status, body = raw_get(envoy.port, target)
    assert status == 200 and body == f"upstream GET {target}\n".encode()
    assert envoy.policy()["policy"]["policy"] == "none"


@pytest.mark.parametrize("target", ["/injector#x", "/injector?status=500&percentage=100#x"])
def test_fragments_are_rejected_by_envoy_before_the_filter(reused_envoy, reused_upstream, target):
    envoy, upstream = reused_envoy, reused_upstream
    assert raw_get(envoy.port, target)[0] == 400
    assert envoy.policy()["policy"]["policy"] == "none"
    assert upstream.count == 0


def test_a_huge_query_is_refused_whole(reused_envoy):
    envoy = reused_envoy
    assert raw_get(envoy.port, "/injector?status=500&percentage=100&" + "a" * 70_000)[0] == 431
    status, body = raw_get(envoy.port, "/injector?status=500&percentage=100&" + "x" * 5000)
    assert status == 400 and len(body) < 400
    assert envoy.policy()["policy"]["policy"] == "none"
    assert envoy.metrics()["policy_changes"] == 0
