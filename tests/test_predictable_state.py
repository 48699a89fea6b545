"""State whose rules a user can predict (issue 25, point 4), through a real Envoy: a TTL
only ever removes faults, a reset starts bounded retries over, an abort never says OK,
rule names never read as another label."""

from __future__ import annotations

import time

from harness import request


def test_a_ttl_never_brings_back_an_earlier_fault(envoy):
    envoy.policy("status=500")
    assert envoy.policy("status=503&percentage=100&ttl=3s")["policy"]["ttl"] in ("3s", "2999ms", "2998ms")
    shown = envoy.policy("policy=none")
    # The write replaced the fault and its TTL: nothing is left to end.
    assert "ttl" not in shown["policy"] and shown["policy"]["policy"] == "none", shown
    time.sleep(3.5)
    shown = envoy.policy()
    assert shown["policy"]["policy"] == "none" and "ttl" not in shown["policy"], shown
    assert {request(envoy.port, f"/p{i}").status for i in range(30)} == {200}


def test_a_write_without_ttl_keeps_its_fault_past_the_earlier_ttl(envoy):
    envoy.policy("status=503&percentage=100&ttl=1")
    assert "ttl" not in envoy.policy("status=500")["policy"]
    time.sleep(1.3)
    assert {request(envoy.port, f"/k{i}").status for i in range(10)} == {500}


def test_a_reset_starts_bounded_retries_over(envoy):
    envoy.policy("boundedRetries=2&percentage=100")
    assert [request(envoy.port, "/order").status for _ in range(2)] == [503, 503]
    envoy.policy("reset")
    envoy.policy("boundedRetries=2&percentage=100")
    # The identity failed twice before the reset; it starts over, as the docs say.
    assert [request(envoy.port, "/order").status for _ in range(3)] == [503, 503, 200]
    assert envoy.control(method="DELETE").status == 200
    envoy.policy("boundedRetries=1&percentage=100")
    assert [request(envoy.port, "/order").status for _ in range(2)] == [503, 200]
    rule = {"fault": {"bounded_retries": {"retries": 1}}}
    envoy.policy(document={"rules": [rule]}, method="GET")
    assert request(envoy.port, "/order").status == 503
    envoy.policy(document={"rules": [rule]}, method="GET")
    assert request(envoy.port, "/order").status == 503, "a new document counts afresh"
    # The table's gauge follows what the resets forgot.
    assert envoy.metrics()["retry_entries"] == 1


def test_an_abort_that_says_ok_is_refused(envoy):
    for fault in [
        {"abort": {"grpc_status": 0}},
        {"abort": {"status": 503, "grpc_status": 0}},
        {"delay": {"fixed": "1s"}, "abort": {"status": 503, "grpc_status": 0}},
    ]:
        answer = envoy.control(document={"rules": [{"fault": fault}]}, method="GET")
        assert answer.status == 400, fault
        assert "rules[0].fault.abort: grpc_status: 0 (OK) is not a failure" in answer.text, answer.text
    assert envoy.policy()["rules"] == []


def test_rule_names_that_read_as_another_label_are_refused(envoy):
    for name in ["4", "header", "policy", "..", "x" * 65]:
        answer = envoy.control(document={"rules": [{"name": name, "fault": {"abort": {"status": 503}}}]}, method="GET")
        assert answer.status == 400, answer.text
        assert "rules[0].name:" in answer.text and "not all digits" in answer.text, answer.text
    assert envoy.policy()["rules"] == []
