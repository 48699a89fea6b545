"""Load from several client addresses while another client changes the policy 20 times a
second: nothing but upstream answers and injected faults, no VM failure, memory back near
where it started, and counters that add up. FAULT_INJECTOR_CHURN_SECONDS sets the length
(20 by default: some 400 changes, the list below about 30 times over; a longer soak for a
leak that grows slowly: FAULT_INJECTOR_CHURN_SECONDS=600)."""

import itertools
import json
import os
import time
from urllib.parse import quote

from harness import in_parallel, request

SECONDS = float(os.environ.get("FAULT_INJECTOR_CHURN_SECONDS", "20"))
SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
CHANGES = [
    "status=503&percentage=30",
    "timeout=0.05&percentage=20",
    "policy=simpleResponse&percentage=10",
    "boundedRetries=2&percentage=50",
    "ip=127.0.0.3&status=500&percentage=100",
    "ip=127.0.0.4&timeout=20ms&percentage=100&ttl=0.3",
    "ip=127.0.0.0/30&policy=none",
    "ip=127.0.0.3&reset",
    "status=429&percentage=100&ttl=0.2",
    "policy=none",
    "document=" + quote(json.dumps({"rules": [
        {"match": {"path": {"prefix": "/load/127.0.0.2"}}, "fault": {"abort": {"status": 502}}, "percentage": 50},
        {"match": {"clients": ["127.0.0.3"]}, "fault": {"response_rewrite": {"status": 500, "add_headers": {"x-r": "1"}}}},
        {"fault": {"delay": {"fixed": "10ms", "jitter": "20ms"}}, "percentage": 20, "ttl": "0.3"},
    ]})),
    "document=" + quote(json.dumps({"rules": [
        {"match": {"path": {"regex": "/load/.*/[0-9]"}}, "fault": {"response_delay": {"fixed": "20ms"}}},
        {"match": {"method": "GET"}, "fault": {"response": {"status": 202, "body": "canned"}}, "percentage": 10},
    ], "policy": {"status": 503, "percentage": 10}})),
    "reset",
]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_load_while_the_policy_churns(envoy, upstream):
    results, errors = [], []
    stop = time.monotonic() + SECONDS

    def load(source):
        with envoy.client(source_ip=source) as client:
            for i in itertools.count():
                if time.monotonic() >= stop:
                    return
                try:
                    r = client.get(f"/load/{source}/{i % 50}")
                    results.append((r.status, r.headers.get("x-fault-injected"), r.body))
                except Exception as e:  # noqa: BLE001 - every failure is what we count
                    errors.append(repr(e))

    changes = []

    def churn():
        start = time.monotonic()
        for k, query in enumerate(itertools.cycle(CHANGES)):
            if time.monotonic() >= stop:
                return
            changes.append(envoy.control(query).status)
            time.sleep(max(0.0, start + (k + 1) / 20 - time.monotonic()))  # 20 a second

    for i in range(200):  # warm up, then take the baseline
        request(envoy.port, f"/warm{i}")
    rss_before = rss_kib(envoy.proc.pid)
    in_parallel(*(lambda s=s: load(s) for s in SOURCES), churn)
    envoy.control("reset")
    time.sleep(1)
    rss_after = rss_kib(envoy.proc.pid)

    assert errors == []
    # 20 a second asked; at least half of it on a busy machine (parallel test workers).
    assert set(changes) == {200} and len(changes) >= SECONDS * 10
    untouched = [r for r in results if r[1] is None]
    injected = [r for r in results if r[1] is not None]
    assert all(status == 200 and body.startswith(b"upstream GET /load/") for status, _, body in untouched)
    kinds = {"statusResponse", "delay", "simpleResponse", "boundedRetries", "abort", "response", "responseDelay", "responseRewrite"}
    assert {kind for _, kind, _ in injected} <= kinds
    # The policy documents took effect too, not only the query parameters.
    assert {"abort", "responseRewrite", "responseDelay"} <= {kind for _, kind, _ in injected}
    forwarded = ("delay", "responseDelay", "responseRewrite")
    assert all(body.startswith(b"upstream GET /load/") for _, kind, body in injected if kind in forwarded)
    assert len(injected) > 0 and len(untouched) > 0
    m = envoy.metrics()
    seen = m["requests_seen"]
    assert seen == len(results) + 200
    outcomes = ("requests_passed", "aborts_injected", "responses_injected", "retries_injected", "delays_injected",
                "responses_rewritten")
    assert seen == sum(m[k] for k in outcomes)
    # Delays (of requests or of responses) and rewrites are forwarded too.
    forwarded_count = sum(m[k] for k in ("requests_passed", "delays_injected", "responses_rewritten"))
    assert upstream.count == forwarded_count
    assert m["active_delays"] == 0
    assert "wasm" not in "".join(line for line in envoy.log_text().splitlines() if "[critical]" in line)
    assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)
    print(f"churn: {len(results)} requests, {len(changes)} changes, RSS {rss_before} -> {rss_after} KiB")
