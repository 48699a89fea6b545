"""The policy document and what it adds over the query parameters, in a real Envoy with
2 workers, over HTTP/1.1 (Python's http.client) and HTTP/2 (curl, prior knowledge):
rules with request matching and every fault kind, sampling by header, header-triggered
faults. gRPC has its own file (test_grpc.py).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from harness import BUFFER_FILTER, ListenerSpec, request, wait_for
from reuse import envoy, upstream  # noqa: F401 (fixtures: the module's one Envoy)

PROTOCOLS = ["http1", "h2"]


def send(proto: str, port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
         source_ip: str = "127.0.0.1"):
    """One request over HTTP/1.1 or HTTP/2 (cleartext, prior knowledge)."""
    return request(port, path, method=method, headers=headers, source_ip=source_ip, http2=proto == "h2")


# An Envoy that takes policy documents by POST: Envoy's buffer filter right after ours lets
# the bodies reach it. One per module, reset before each test (conftest's reused_envoy):
# every test here starts from DELETE's state.
REUSED_LISTENERS = [ListenerSpec({"control": {"post_documents": True}}, http_filters_after=[BUFFER_FILTER])]


# ------------------------------------------------------------------ the document


def test_document_round_trip_and_the_query_edits_the_same_state(envoy, upstream):
    doc = {
        "rules": [{"match": {"path": {"prefix": "/checkout"}, "method": "POST"},
                   "fault": {"abort": {"status": 503}}, "percentage": 100}],
        "policy": {"policy": "none", "percentage": 20},
        "clients": [{"ip": "127.0.0.3", "status": 500, "percentage": 100}],
    }
    r = envoy.control(document=doc)
    assert r.status == 200, r.text
    first = envoy.policy()
    # What is read can be sent back, and reads the same.
    first.pop("configuration")
    assert envoy.control(document=first).status == 200
    again = envoy.policy()
    again.pop("configuration")
    assert again == first
    # The query parameters edit the same state: the default and per-client views.
    assert envoy.control("status=418&percentage=100").status == 200
    state = envoy.policy()
    assert state["policy"]["status"] == 418 and state["rules"] == first["rules"]
    assert state["clients"][0]["ip"] == "127.0.0.3/32"
    assert upstream.count == 0


def test_bad_document_names_the_json_path_and_changes_nothing(envoy):
    assert envoy.control(document={"rules": [{"fault": {"abort": {"status": 503}}}]}).status == 200
    before = envoy.policy()
    for doc, path in [
        ({"rules": [{"fault": {"delay": {"fixed": "soon"}}}]}, "rules[0].fault.delay.fixed"),
        ({"rules": [{"match": {"path": {"regex": "("}}, "fault": {"abort": {"status": 500}}}]}, "rules[0].match.path.regex"),
        ({"rules": [{"fault": {"abort": {"status": 500}}}, {"fault": {"nap": {}}}]}, "rules[1].fault"),
        ({"clients": [{"ip": "nope"}]}, "clients[0]"),
        ({"polcy": {}}, "polcy"),
        ("not json", "$"),
    ]:
        r = envoy.control(document=doc)
        assert r.status == 400, r.text
        assert json.loads(r.body)["error"].startswith(f"{path}:"), r.text
    assert envoy.policy() == before


def test_without_a_buffer_filter_post_is_refused_and_get_takes_the_document(start_envoy, upstream):
    envoy = start_envoy()
    doc = json.dumps({"rules": [{"fault": {"abort": {"status": 418}}}]})
    r = envoy.control(document=doc)
    assert r.status == 400 and "control.post_documents" in json.loads(r.body)["error"]
    assert envoy.policy()["rules"] == [] and upstream.count == 0
    r = envoy.control(document=doc, method="GET")
    assert r.status == 200 and json.loads(r.body)["rules"][0]["fault"] == {"abort": {"status": 418}}
    assert request(envoy.port, "/x").status == 418


def test_delete_resets_and_other_methods_are_refused(envoy):
    assert envoy.control(document={"rules": [{"fault": {"abort": {"status": 503}}}]}).status == 200
    assert request(envoy.port, "/x").status == 503
    assert envoy.control(method="DELETE").status == 200
    assert envoy.policy()["rules"] == [] and request(envoy.port, "/x").status == 200
    r = envoy.control(method="PATCH")
    assert r.status == 405 and r.headers["allow"] == "GET, POST, DELETE"


def test_rule_ttl_ends_it(envoy):
    assert envoy.control(document={"rules": [{"fault": {"abort": {"status": 503}}, "ttl": "1s"}]}).status == 200
    ttl = envoy.policy()["rules"][0]["ttl"]
    assert ttl == "1s" or (ttl.endswith("ms") and 0 < int(ttl[:-2]) < 1000), ttl
    assert request(envoy.port, "/x").status == 503
    wait_for(lambda: request(envoy.port, "/x").status == 200, timeout=5, interval=0.1)
    assert envoy.policy()["rules"] == []


# ------------------------------------------------------------------ matching and faults


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_fault_only_post_checkout_for_one_user(envoy, upstream, proto):
    rule = {"match": {"path": {"prefix": "/checkout"}, "method": "POST",
                      "headers": [{"name": "x-user", "exact": "alice"}], "clients": ["127.0.0.0/8"]},
            "fault": {"abort": {"status": 503}}}
    assert envoy.control(document={"rules": [rule]}).status == 200
    hit = send(proto, envoy.port, "/checkout/1", "POST", {"x-user": "alice"})
    assert (hit.status, hit.headers.get("x-fault-injected")) == (503, "abort")
    assert hit.version == ("2" if proto == "h2" else "1.1")
    for method, path, user in [("GET", "/checkout/1", "alice"), ("POST", "/cart", "alice"), ("POST", "/checkout/1", "bob")]:
        r = send(proto, envoy.port, path, method, {"x-user": user})
        assert r.status == 200 and "x-fault-injected" not in r.headers, (method, path, user)
    assert upstream.count == 3


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_regex_header_presence_and_client_matches(envoy, proto):
    rules = [
        {"match": {"path": {"regex": "/items/[0-9]+"}}, "fault": {"abort": {"status": 404}}},
        {"match": {"headers": [{"name": "x-canary", "present": True}]}, "fault": {"abort": {"status": 409}}},
        {"match": {"clients": ["127.0.0.2"]}, "fault": {"abort": {"status": 429}}},
    ]
    assert envoy.control(document={"rules": rules}).status == 200
    assert send(proto, envoy.port, "/items/42").status == 404
    assert send(proto, envoy.port, "/items/42/reviews").status == 200
    assert send(proto, envoy.port, "/a", headers={"x-canary": "1"}).status == 409
    assert send(proto, envoy.port, "/a", source_ip="127.0.0.2").status == 429
    assert send(proto, envoy.port, "/a").status == 200


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_delay_with_jitter(envoy, proto):
    assert envoy.control(document={"rules": [{"fault": {"delay": {"fixed": "200ms", "jitter": "200ms"}}}]}).status == 200
    times = [send(proto, envoy.port, f"/d{i}") for i in range(6)]
    assert all(r.status == 200 and r.headers.get("x-fault-injected") == "delay" for r in times)
    assert all(0.19 <= r.elapsed < 0.9 for r in times), [r.elapsed for r in times]


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_canned_response_and_bounded_retries(envoy, upstream, proto):
    rules = [
        {"match": {"path": {"exact": "/canned"}},
         "fault": {"response": {"status": 202, "headers": {"x-canned": "yes"}, "body": "canned\n"}}},
        {"match": {"path": {"prefix": "/retry"}}, "fault": {"bounded_retries": {"retries": 2, "status": 502}}},
    ]
    assert envoy.control(document={"rules": rules}).status == 200
    r = send(proto, envoy.port, "/canned")
    assert (r.status, r.headers.get("x-canned"), r.text, r.headers.get("x-fault-injected")) == (202, "yes", "canned\n", "response")
    path = f"/retry/{proto}"
    assert [send(proto, envoy.port, path).status for _ in range(4)] == [502, 502, 200, 502]
    assert upstream.count == 1


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_response_delay_holds_the_upstream_answer(envoy, upstream, proto):
    assert envoy.control(document={"rules": [{"fault": {"response_delay": {"fixed": "700ms"}}}]}).status == 200
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", send(proto, envoy.port, "/slow-answer")))
    t.start()
    # The upstream has answered while the client still waits.
    wait_for(lambda: upstream.count == 1, timeout=2)
    time.sleep(0.2)
    assert "r" not in result
    t.join(5)
    r = result["r"]
    assert r.status == 200 and r.text.startswith("upstream GET /slow-answer")
    assert r.headers.get("x-fault-injected") == "responseDelay" and r.elapsed >= 0.69


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_response_rewrite(envoy, proto):
    rewrite = {"status": 500, "add_headers": {"x-rewritten": "1"}, "remove_headers": ["x-upstream-body-bytes"]}
    assert envoy.control(document={"rules": [{"fault": {"response_rewrite": rewrite}}]}).status == 200
    r = send(proto, envoy.port, "/r")
    assert r.status == 500 and r.text.startswith("upstream GET /r")
    assert r.headers.get("x-rewritten") == "1" and "x-upstream-body-bytes" not in r.headers
    assert r.headers.get("x-fault-injected") == "responseRewrite"
    assert envoy.metrics()["responses_rewritten"] == 1


def test_first_matching_rule_decides_even_when_it_samples_out(envoy):
    rules = [{"match": {"path": {"prefix": "/a"}}, "fault": {"abort": {"status": 500}}, "percentage": 0},
             {"fault": {"abort": {"status": 503}}}]
    assert envoy.control(document={"rules": rules}).status == 200
    assert [request(envoy.port, "/a/1").status for _ in range(5)] == [200] * 5
    assert request(envoy.port, "/b").status == 503


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_sampling_by_header_keeps_a_user_in_or_out(envoy, proto):
    rule = {"fault": {"abort": {"status": 503}}, "percentage": 50, "sample_by": "x-user-id"}
    assert envoy.control(document={"rules": [rule]}).status == 200
    faulted_users = 0
    for user in range(60):
        statuses = {send(proto, envoy.port, "/x", headers={"x-user-id": f"user-{user}"}).status for _ in range(3)}
        assert len(statuses) == 1, (user, statuses)  # the same user: always in or always out
        faulted_users += statuses == {503}
    # 30 expected; 12..48 is beyond 4.5 sigma.
    assert 12 <= faulted_users <= 48, faulted_users


def test_configured_sample_by_applies_to_query_policies(start_envoy):
    envoy = start_envoy({"sample_by": "x-user-id"})
    assert envoy.control("status=503&percentage=50").status == 200
    outcomes = [{request(envoy.port, "/x", headers={"x-user-id": f"u{user}"}).status for _ in range(3)}
                for user in range(40)]
    assert all(len(o) == 1 for o in outcomes)
    assert 6 <= sum(o == {503} for o in outcomes) <= 34


# ------------------------------------------------------------------ header-triggered faults


def test_header_faults_are_off_unless_configured(start_envoy):
    envoy = start_envoy()
    r = request(envoy.port, "/x", headers={"x-fault-abort-status": "503"})
    assert r.status == 200 and "x-fault-injected" not in r.headers


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_header_faults_when_configured(start_envoy, upstream, proto):
    envoy = start_envoy({"header_faults": {"enabled": True, "max_delay": "2s"}})
    r = send(proto, envoy.port, "/x", headers={"x-fault-abort-status": "418"})
    assert (r.status, r.headers.get("x-fault-injected")) == (418, "abort")
    r = send(proto, envoy.port, "/x", headers={"x-fault-delay-ms": "300"})
    assert r.status == 200 and r.elapsed >= 0.29 and r.headers.get("x-fault-injected") == "delay"
    r = send(proto, envoy.port, "/x", headers={"x-fault-abort-status": "503", "x-fault-percentage": "0"})
    assert r.status == 200
    r = send(proto, envoy.port, "/x", headers={"x-fault-delay-ms": "5000"})
    assert r.status == 400 and "x-fault-delay-ms: '5000' is not accepted" in r.text
    assert upstream.count == 2
