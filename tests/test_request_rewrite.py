"""The request_rewrite fault (issue 25, point 8) through a real Envoy (2 workers), over
HTTP/1.1 and HTTP/2: the upstream receives the rewritten path, method, headers and query;
the answer says `x-fault-injected: requestRewrite`; it is counted, labelled and logged; and
it is a query policy (`policy=requestRewrite`)."""

from __future__ import annotations

import pytest

from harness import ListenerSpec, file_access_log, request, wait_for

REWRITE = {"path": "/x", "method": "POST", "set_headers": {"x-a": "1"}, "remove_headers": ["authorization"], "query": {"debug": "1"}}


@pytest.fixture
def logged(start_envoy, tmp_path):
    log = tmp_path / "access.txt"
    hcm = {"access_log": [file_access_log(log, "%REQ(:PATH)% %FILTER_STATE(wasm.fault_injector:PLAIN)%\n")]}
    return start_envoy(listeners=[ListenerSpec(plugin_config={"stats_flush": "100ms"}, hcm_options=hcm)]), log


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_the_upstream_receives_the_rewritten_request(logged, upstream, http2):
    envoy, log = logged
    rule = {"name": "rewrite", "match": {"path": {"prefix": "/orig"}}, "fault": {"request_rewrite": REWRITE}}
    shown = envoy.policy(document={"rules": [rule]}, method="GET")
    assert shown["rules"][0]["fault"] == {"request_rewrite": REWRITE}
    headers = {"authorization": "Bearer secret", "x-keep": "yes", "x-a": "0"}
    answer = request(envoy.port, "/orig/1?keep=2&debug=0", headers=headers, http2=http2)
    assert answer.status == 200 and answer.headers["x-fault-injected"] == "requestRewrite", answer
    method, path, received, _ = upstream.requests[-1]
    received = {k.lower(): v for k, v in received.items()}
    assert (method, path) == ("POST", "/x?keep=2&debug=1")
    assert received["x-a"] == "1" and received["x-keep"] == "yes" and "authorization" not in received, received
    # A request no rule matches goes as it came.
    assert request(envoy.port, "/other?q=1", headers=headers, http2=http2).status == 200
    method, path, received, _ = upstream.requests[-1]
    assert (method, path, {k.lower(): v for k, v in received.items()}["authorization"]) == ("GET", "/other?q=1", "Bearer secret")
    wait_for(lambda: envoy.metrics(settle=False).get("requests_seen") == 2, timeout=5)
    m = envoy.metrics()
    assert m["requests_rewritten"] == 1 and m["requests_seen"] == 2 and m["requests_passed"] == 1, m
    assert "fault_injector.rule=.=rewrite;.;kind=.=requestRewrite;.;faults_injected: 1" in envoy.admin("/stats?filter=rewrite").text
    envoy.stop()  # which flushes the access log
    lines = [line for line in log.read_text().splitlines() if not line.startswith("/injector")]
    # The access log's :path is the one sent upstream.
    assert lines == ["/x?keep=2&debug=1 requestRewrite rule=rewrite", "/other?q=1 -"], lines


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_request_rewrite_as_a_query_policy(envoy, upstream, http2):
    shown = envoy.policy("policy=requestRewrite&path=/x&method=PUT&setHeaders=x-a:1,x-b:2&removeHeaders=authorization&query=debug:1&percentage=100")
    assert shown["policy"]["policy"] == "requestRewrite"
    assert {k: shown["policy"][k] for k in ("path", "method", "setHeaders", "removeHeaders", "query")} == {
        "path": "/x", "method": "PUT", "setHeaders": "x-a:1,x-b:2", "removeHeaders": "authorization", "query": "debug:1"}
    answer = request(envoy.port, "/orig?a=1", headers={"authorization": "t"}, http2=http2)
    assert answer.headers["x-fault-injected"] == "requestRewrite"
    method, path, received, _ = upstream.requests[-1]
    received = {k.lower(): v for k, v in received.items()}
    assert (method, path, received["x-a"], received["x-b"], "authorization" in received) == ("PUT", "/x?a=1&debug=1", "1", "2", False)
    # Parts given later replace those parts only; the GET view reads back as a document.
    envoy.policy("method=DELETE")
    request(envoy.port, "/again", http2=http2)
    assert upstream.requests[-1][:2] == ("DELETE", "/x?debug=1")
    document = {"policy": envoy.policy()["policy"]}
    assert envoy.policy(document=document, method="GET")["policy"] == document["policy"]
    assert envoy.metrics()["requests_rewritten"] == 2


def test_bad_rewrites_are_refused_and_change_nothing(envoy):
    for query, needle in [
        ("policy=requestRewrite", "requestRewrite: give at least one of path, method, setHeaders, removeHeaders, query"),
        ("policy=requestRewrite&path=x", "path: 'x' is not accepted; expected a path beginning with '/'"),
        ("policy=requestRewrite&setHeaders=:path:/x", "setHeaders: ':path:/x' is not accepted"),
    ]:
        answer = envoy.control(query)
        assert answer.status == 400 and needle in answer.text, (query, answer.text)
    answer = envoy.control(document={"rules": [{"fault": {"request_rewrite": {"set_headers": {"content-length": "1"}}}}]}, method="GET")
    assert answer.status == 400 and "rules[0].fault.request_rewrite: set_headers.name: \\\"content-length\\\"" in answer.text, answer.text
    assert envoy.policy()["policy"]["policy"] == "none" and envoy.policy()["rules"] == []
