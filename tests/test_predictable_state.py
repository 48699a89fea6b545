"""State whose rules a user can predict (issue 25, point 4), through a real Envoy: a TTL
only ever removes faults, a reset starts bounded retries over, an abort never says OK,
rule names never read as another label."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import FAULT_FILTER, ListenerSpec, file_access_log, request, wait_for


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


class _Answers(BaseHTTPRequestHandler):
    """`/<fault>/status/N`: status N without a body; `/<fault>/empty`: 200 with an empty
    body; anything else: 200 with 2000 bytes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        parts = self.path.split("/")
        status = int(parts[3]) if len(parts) > 3 and parts[2] == "status" else 200
        body = b"" if status != 200 or self.path.endswith("/empty") else b"x" * 2000
        self.send_response(status)
        if status not in (204, 304):
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def answers():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


BODY_FAULTS = {
    "t": ({"truncate": {"after_bytes": 10}}, "truncations_injected", "truncate"),
    "b": ({"body_change": {"replace": {"body": "changed"}}}, "bodies_changed", "bodyChange"),
    "r": ({"throttle": {"bytes_per_second": 102400}}, "throttles_injected", "throttle"),
}


def test_a_body_fault_is_told_only_when_the_answer_has_a_body(start_envoy, answers, tmp_path):
    log = tmp_path / "access.txt"
    hcm = {"access_log": [file_access_log(log, "%REQ(:METHOD)% %REQ(:PATH)% %FILTER_STATE(wasm.fault_injector:PLAIN)%\n")]}
    # The throttle as shipped: Envoy's fault filter after this one paces what it chooses.
    spec = ListenerSpec(plugin_config={"stats_flush": "100ms", "envoy_fault_filter": True}, hcm_options=hcm, http_filters_after=[FAULT_FILTER])
    envoy = start_envoy(listeners=[spec], upstream_port=answers.server_address[1])
    rules = [{"name": name, "match": {"path": {"prefix": f"/{name}/"}}, "fault": fault} for name, (fault, _, _) in BODY_FAULTS.items()]
    envoy.policy(document={"rules": rules}, method="GET")
    sent = 0
    for name in BODY_FAULTS:
        for method, path in [("HEAD", "/x"), ("GET", "/status/204"), ("GET", "/status/205"), ("GET", "/status/304"), ("GET", "/empty")]:
            answer = request(envoy.port, f"/{name}{path}", method=method)
            assert "x-fault-injected" not in answer.headers, (name, method, path, answer.headers)
            sent += 1
    m = wait_for(lambda: (lambda m: m if m.get("requests_seen") == sent else None)(envoy.metrics(settle=False)), timeout=5)
    m = envoy.metrics()
    assert m["requests_passed"] == sent, m
    assert all(m[counter] == 0 for _, counter, _ in BODY_FAULTS.values()), m
    assert "faults_injected" not in envoy.admin("/stats").text
    counts = {c["rule"]: (c["matched"], c["injected"]) for c in envoy.policy()["counts"]}
    assert counts == {name: (5, 0) for name in BODY_FAULTS}, counts
    # One answer with a body each: told in every way.
    for name, (_, counter, kind) in BODY_FAULTS.items():
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=5)
        conn.request("GET", f"/{name}/body")
        answer = conn.getresponse()
        assert answer.getheader("x-fault-injected") == kind
        try:
            answer.read()
        except http.client.IncompleteRead:
            assert name == "t", "only the truncated body is cut"
        conn.close()
    m = wait_for(lambda: (lambda m: m if all(m[c] == 1 for _, c, _ in BODY_FAULTS.values()) else None)(envoy.metrics(settle=False)), timeout=5)
    stats = envoy.admin("/stats").text
    assert all(f"rule=.={name};.;kind=.={kind};.;faults_injected: 1" in stats for name, (_, _, kind) in BODY_FAULTS.items()), stats
    counts = {c["rule"]: (c["matched"], c["injected"]) for c in envoy.policy()["counts"]}
    assert counts == {name: (6, 1) for name in BODY_FAULTS}, counts
    envoy.stop()  # which flushes the access log
    lines = [line for line in log.read_text().splitlines() if "/injector" not in line]
    assert len(lines) == sent + 3, lines
    told = sorted(line for line in lines if not line.endswith(" -"))
    assert told == sorted(f"GET /{name}/body {kind} rule={name}" for name, (_, _, kind) in BODY_FAULTS.items()), lines


def test_a_new_rule_gets_its_labelled_series_after_2000_renames(start_envoy):
    envoy = start_envoy({"stats_flush": "100ms"})
    # One keep-alive connection: every request on one worker, whose series are counted. A
    # third of the 2016 names fire, 672 series: past the 512 a worker once kept for life.
    client = envoy.client()
    for batch in range(32):
        rules = [{"name": f"n{batch}-{i}", "match": {"path": {"exact": f"/{i}"}}, "fault": {"abort": {"status": 503}}} for i in range(63)]
        envoy.policy(document={"rules": rules}, method="GET")
        assert all(client.get(f"/{i}").status == 503 for i in range(0, 63, 3))
    envoy.policy(document={"rules": [{"name": "fresh", "fault": {"abort": {"status": 503}}}]}, method="GET")
    assert client.get("/x").status == 503
    client.close()
    found = wait_for(lambda: "rule=.=fresh;.;kind=.=abort;.;status=.=503;.;faults_injected: 1" in envoy.admin("/stats?filter=fresh").text, timeout=5)
    assert found, envoy.admin("/stats?filter=fresh").text
    # Every name ever used is still an Envoy counter (they cannot be deleted), with its count.
    assert len(envoy.stats("faults_injected")) == 32 * 21 + 1
