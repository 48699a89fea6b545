"""The faults of issue 17 against a real Envoy (2 workers), over HTTP/1.1 and HTTP/2: a reset
before any answer, a response cut mid-body, a throttled body, a slow failure (a delay,
then an abort), delays with a long tail, and a changed body. Each is a rule fault and a
query policy; each is counted, and the counters still add up to `requests_seen`.

The upstream here serves bodies of any size (`/bytes/N`: N bytes of a known pattern).
HTTP/2 requests go through curl (`--http2-prior-knowledge`), so the client's own view
(its exit code, the bytes it got) is what is checked.
"""

from __future__ import annotations

import functools
import http.client
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import FAULT_FILTER, ListenerSpec, file_access_log

# Every way a request is counted; their sum is requests_seen (docs/counters.md).
OUTCOMES = (
    "requests_passed", "probes_passed", "aborts_injected", "responses_injected", "retries_injected",
    "delays_injected", "responses_rewritten", "header_faults_refused", "resets_injected",
    "slow_failures_injected", "truncations_injected", "throttles_injected", "bodies_changed", "requests_rewritten",
)
H1_RESET_EXITS = (52, 56)  # curl: empty reply / failure receiving data
H2_RESET_EXITS = (92, 16)  # curl: HTTP/2 stream not closed cleanly / HTTP/2 framing error


@functools.lru_cache(maxsize=8)
def pattern(n: int) -> bytes:
    # Cached: made in Python, a MiB takes the upstream ~0.1 s, which 50 clients at once
    # would wait for in turn.
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class _BodyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        with self.server.lock:
            self.server.count += 1
        size = int(self.path.split("/")[2]) if self.path.startswith("/bytes/") else 3
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(size))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(pattern(size) if self.path.startswith("/bytes/") else b"ok\n")

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class BodyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BodyHandler)
        self.count = 0
        self.lock = threading.Lock()
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def bodies():
    server = BodyServer()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def envoy(start_envoy, bodies):
    """Envoy's fault filter after fault-injector, as the shipped configurations have it:
    it paces the bodies fault-injector throttles."""
    spec = ListenerSpec({"envoy_fault_filter": True}, http_filters_after=[FAULT_FILTER])
    return start_envoy(listeners=[spec], upstream_port=bodies.port)


def rules(envoy, *faults: dict) -> None:
    """Puts the rules in force (a document sent as `?document=`)."""
    envoy.policy(document={"rules": list(faults)}, method="GET")


def on(path: str, fault: dict, **extra) -> dict:
    return {"match": {"path": {"prefix": path}}, "fault": fault, **extra}


def curl(envoy, path: str, http2: bool = False, *extra: str, timeout: float = 15) -> tuple[int, int, int, float, bytes]:
    """(exit code, status, bytes received, seconds, body) as curl saw them."""
    args = ["curl", "-sS", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code} %{size_download} %{time_total}"]
    args += ["--http2-prior-knowledge"] if http2 else []
    out = subprocess.run([*args, *extra, f"http://127.0.0.1:{envoy.port}{path}"], capture_output=True, timeout=timeout + 5)
    body, _, tail = out.stdout.rpartition(b"\n")
    status, size, elapsed = tail.decode().split()
    return out.returncode, int(status), int(size), float(elapsed), body


def get(envoy, path: str, timeout: float = 15) -> tuple[int, dict, bytes, float]:
    """One HTTP/1.1 request with Python's client: (status, headers, body, seconds)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=timeout)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body, time.monotonic() - start
    finally:
        conn.close()


def timed(conn: http.client.HTTPConnection, path: str) -> float:
    """Seconds for one request on a kept-alive connection."""
    start = time.monotonic()
    conn.request("GET", path)
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 200
    return time.monotonic() - start


def counted(envoy) -> dict[str, int]:
    """The counters, once they add up: each request counted once, as one outcome."""
    m = envoy.metrics()
    assert sum(m[k] for k in OUTCOMES) == m["requests_seen"], m
    return m


def no_wasm_failure(envoy) -> None:
    failures = [line for line in envoy.log_text().splitlines()
                if ("[error][wasm]" in line or "[critical]" in line or "panicked" in line)]
    assert not failures, failures[:5]


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_reset_closes_without_an_answer_and_never_asks_the_upstream(envoy, bodies, http2):
    rules(envoy, on("/now", {"reset": {}}), on("/later", {"reset": {"after": "400ms"}}))
    exits = H2_RESET_EXITS if http2 else H1_RESET_EXITS
    code, status, size, _, _ = curl(envoy, "/now", http2)
    assert (code, status, size) in [(c, 0, 0) for c in exits]
    code, status, size, elapsed, _ = curl(envoy, "/later", http2)
    # No earlier than `after`, give or take the millisecond the filter's clock rounds off.
    assert code in exits and status == 0 and elapsed >= 0.39
    if not http2:
        with pytest.raises(http.client.RemoteDisconnected):
            get(envoy, "/now")
    # The query policy does the same.
    envoy.policy("policy=resetStream&after=300ms&percentage=100")
    code, status, _, elapsed, _ = curl(envoy, "/x", http2)
    assert code in exits and status == 0 and elapsed >= 0.29
    assert bodies.count == 0
    m = counted(envoy)
    assert m["resets_injected"] == m["requests_seen"] == (4 if not http2 else 3)
    no_wasm_failure(envoy)


def test_reset_samples_its_share(envoy, bodies):
    envoy.policy("policy=resetStream&percentage=20")

    def one(_: int) -> str:
        try:
            return "ok" if get(envoy, "/x")[0] == 200 else "other"
        except http.client.RemoteDisconnected:
            return "reset"

    # A reset HTTP/1.1 connection closes after Envoy's delayed_close_timeout (1 s).
    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(one, range(500)))
    resets = outcomes.count("reset")
    assert 50 <= resets <= 150 and outcomes.count("ok") == 500 - resets, resets
    assert bodies.count == 500 - resets
    m = counted(envoy)
    assert (m["resets_injected"], m["requests_passed"]) == (resets, 500 - resets)
    no_wasm_failure(envoy)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_truncate_sends_the_head_and_part_of_the_body_then_resets(envoy, http2):
    rules(envoy, on("/bytes/102400", {"truncate": {"after_bytes": 1000}}), on("/bytes/500", {"truncate": {"after_bytes": 1000}}))
    code, status, size, _, body = curl(envoy, "/bytes/102400", http2)
    assert code == (92 if http2 else 18) and status == 200, code
    assert 1000 <= size < 102400 and body == pattern(size)
    # A body shorter than after_bytes is cut one byte short of its end.
    code, status, size, _, _ = curl(envoy, "/bytes/500", http2)
    assert (code, status, size) == ((92 if http2 else 18), 200, 499)
    if not http2:
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        conn.request("GET", "/bytes/102400")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.getheader("content-length") == "102400"
        assert answer.getheader("x-fault-injected") == "truncate"
        with pytest.raises(http.client.IncompleteRead) as cut:
            answer.read()
        assert 1000 <= len(cut.value.partial) < 102400
        conn.close()
    rules(envoy)
    envoy.policy("policy=truncateResponse&afterBytes=2000&percentage=100")
    code, status, size, _, _ = curl(envoy, "/bytes/102400", http2)
    assert code == (92 if http2 else 18) and status == 200 and 2000 <= size < 102400
    m = counted(envoy)
    assert m["truncations_injected"] == m["requests_seen"]
    no_wasm_failure(envoy)


MIB = 1 << 20


def test_throttle_holds_its_rate_on_a_large_body_and_no_client_drives_it(envoy, bodies):
    # 5 MiB at 2 MiB/s: 2.5 s. Before Envoy's fault filter paced it, the filter held the
    # body and released it whole, and such a body was cut short (HTTP/1.1) or passed
    # unthrottled (HTTP/2).
    rules(envoy,
          {"match": {"headers": [{"name": "x-sampled-out", "present": True}]}, "fault": {"throttle": {"bytes_per_second": 1024}}, "percentage": 0},
          on(f"/bytes/{5 * MIB}", {"throttle": {"bytes_per_second": 2 * MIB}}))
    size = 5 * MIB
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(curl, envoy, f"/bytes/{size}", False),
                # Nor does a client escape it by asking Envoy's fault filter for a share of 0%.
                pool.submit(curl, envoy, f"/bytes/{size}", True, "-H", "x-envoy-fault-throughput-response-percentage: 0")]
        # A client asking Envoy's fault filter for 1 KiB/s itself is not heard: the filter
        # removes its header and sets its own.
        asked = pool.submit(curl, envoy, f"/bytes/{size}", False, "-H", "x-envoy-fault-throughput-response: 1")
        # Sampled out by the first rule: no throttle, and its own header is removed too.
        out = pool.submit(curl, envoy, "/bytes/512000", False, "-H", "x-sampled-out: 1", "-H", "x-envoy-fault-throughput-response: 1")
        results = [r.result() for r in [*runs, asked]]
        out = out.result()
    for code, status, got, elapsed, body in results:
        assert (code, status, got) == (0, 200, size) and body == pattern(size)
        assert 2.5 * 0.9 <= elapsed <= 2.5 * 1.25, elapsed
    assert out[:3] == (0, 200, 512000) and out[3] < 2.0, out[:4]  # 1 KiB/s would take 500 s
    assert bodies.count == 4, "the upstream saw each request once"
    envoy.policy("policy=throttleResponse&bytesPerSecond=51200&percentage=100")
    code, status, got, elapsed, _ = curl(envoy, "/bytes/102400")
    assert (code, status, got) == (0, 200, 102400) and 1.8 <= elapsed <= 2.6, elapsed
    m = counted(envoy)
    assert m["throttles_injected"] == 4 and m["requests_passed"] == 1
    no_wasm_failure(envoy)


def test_fifty_throttled_clients_each_get_the_rate(envoy, bodies):
    # 50 clients at once, 1 MiB each at 512 KiB/s: each takes 2 s, none passes at full speed.
    rules(envoy, on("/bytes/", {"throttle": {"bytes_per_second": 512 * 1024}}))
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: get(envoy, f"/bytes/{MIB}", 30), range(50)))
    times = sorted(elapsed for *_, elapsed in results)
    assert all(status == 200 and body == pattern(MIB) for status, _, body, _ in results)
    assert 2.0 * 0.9 <= times[0] and times[-1] <= 2.0 * 1.5, (times[0], times[-1])
    assert bodies.count == 50
    assert counted(envoy)["throttles_injected"] == 50


def test_a_throttle_needs_envoys_fault_filter(start_envoy, bodies):
    plain = start_envoy(upstream_port=bodies.port)
    answer = plain.control(document={"rules": [on("/", {"throttle": {"bytes_per_second": 102400}})]}, method="GET")
    assert answer.status == 400
    assert "rules[0].fault.throttle: a throttle needs Envoy's fault filter" in answer.text, answer.text
    answer = plain.control("policy=throttleResponse&percentage=100")
    assert answer.status == 400 and "policy: a throttle needs Envoy's fault filter" in answer.text, answer.text
    assert plain.policy()["rules"] == []
    assert plain.metrics()["policy_changes"] == 0


def test_throttled_responses_do_not_stall_other_traffic(envoy):
    # 32 KiB at 8 KiB/s: each held about 4 s, longer than the unthrottled requests take.
    rules(envoy, on("/bytes/32768", {"throttle": {"bytes_per_second": 8192}}))
    with ThreadPoolExecutor(200) as pool:
        throttled = [pool.submit(get, envoy, "/bytes/32768", 30) for _ in range(200)]
        time.sleep(1.0)  # all 200 are held now
        assert not any(f.done() for f in throttled)
        # On 4 kept-alive connections, which Envoy spreads over its workers (and their
        # held responses).
        clients = [http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10) for _ in range(4)]
        latencies = sorted(timed(clients[i % 4], "/fast") for i in range(200))
        assert not any(f.done() for f in throttled), "the unthrottled requests took too long to tell"
        results = [f.result() for f in throttled]
    p99 = latencies[197]
    # A stall behind the held responses would cost the fast requests seconds (each is held
    # about 4 s). 50 ms was too tight on the 2-core CI machine with three test workers
    # (a clean-clone run measured p99 50.2 ms, 2026-12-07); 1 s still tells a stall.
    assert p99 < 1.0, latencies[-5:]
    assert all(status == 200 and body == pattern(32768) and elapsed >= 3.0 for status, _, body, elapsed in results)
    m = counted(envoy)
    assert m["throttles_injected"] == 200 and m["requests_passed"] == 200
    no_wasm_failure(envoy)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_slow_failure_answers_the_abort_after_the_delay(envoy, bodies, http2):
    rules(envoy, {"fault": {"delay": {"fixed": "400ms"}, "abort": {"status": 503}}})
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: curl(envoy, "/x", http2, "-D", "/dev/stderr"), range(10)))
    # The filter reads the clock in whole milliseconds, so a hold may end up to 1 ms before
    # its time as the client measures it (seen: 0.3996 s for 400 ms).
    assert all(code == 0 and status == 503 and elapsed >= 0.39 for code, status, _, elapsed, _ in answers), answers
    rules(envoy)
    envoy.policy("policy=slowFailure&timeout=300ms&status=500&percentage=100")
    status, headers, _, elapsed = (None, None, None, None)
    if not http2:
        conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        start = time.monotonic()
        conn.request("GET", "/y")
        answer = conn.getresponse()
        answer.read()
        status, injected, elapsed = answer.status, answer.getheader("x-fault-injected"), time.monotonic() - start
        assert (status, injected) == (500, "slowFailure") and elapsed >= 0.29
        conn.close()
    else:
        code, status, _, elapsed, _ = curl(envoy, "/y", True)
        assert (code, status) == (0, 500) and elapsed >= 0.29
    assert bodies.count == 0
    m = counted(envoy)
    assert m["slow_failures_injected"] == m["requests_seen"] == 11
    no_wasm_failure(envoy)


def test_delay_shape_meets_its_percentiles(start_envoy, bodies, tmp_path):
    # Each request's hold as Envoy measures it, from the whole request received to the first
    # byte sent upstream: the clients' and the upstream's own queueing on this 2-core box,
    # busy with other tests, stays out of it.
    log = tmp_path / "holds.txt"
    hcm = {"access_log": [file_access_log(log, "%REQ(:PATH)% %COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%\n")]}
    envoy = start_envoy(listeners=[ListenerSpec(hcm_options=hcm)], upstream_port=bodies.port)
    rules(envoy, {"fault": {"delay_shape": {"p50": "100ms", "p99": "1s"}}})
    config = tmp_path / "urls"
    config.write_text("".join(f'url = "http://127.0.0.1:{envoy.port}/x{i}"\noutput = "/dev/null"\n' for i in range(2000)))
    out = subprocess.run(["curl", "-s", "-Z", "--parallel-max", "25", "-w", "%{http_code}\n", "-K", str(config)],
                         capture_output=True, text=True, timeout=90)
    assert out.stdout.split() == ["200"] * 2000
    m = counted(envoy)
    shown = envoy.policy("policy=longTailDelay&p50=200ms&p99=2s")["policy"]
    assert (shown["policy"], shown["p50"], shown["p99"]) == ("longTailDelay", "200ms", "2s")
    envoy.stop()  # which flushes the access log
    holds = [line.split() for line in log.read_text().splitlines() if line.startswith("/x")]
    assert len(holds) == 2000, holds[:5]
    times = sorted(int(us) / 1000 for _, us in holds)
    p50, p99 = times[999], times[1979]
    assert abs(p50 - 100) <= 10 + 5 and abs(p99 - 1000) <= 100 + 5, (p50, p99)
    assert m["delays_injected"] == 2000
    no_wasm_failure(envoy)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_body_change_replaces_or_corrupts_the_upstream_body(envoy, http2):
    rules(envoy,
          on("/bytes/5000", {"body_change": {"replace": {"body": '{"ok": false}', "content_type": "application/json"}}}),
          on("/bytes/100000", {"body_change": {"corrupt": {"percentage": 10}}}))
    code, status, size, _, body = curl(envoy, "/bytes/5000", http2, "-D", "/dev/stderr")
    assert (code, status, body) == (0, 200, b'{"ok": false}')
    head = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", *(["--http2-prior-knowledge"] if http2 else []),
                           f"http://127.0.0.1:{envoy.port}/bytes/5000"], capture_output=True, text=True).stdout.lower()
    assert "content-length: 13\n" in head and "content-type: application/json" in head and "x-fault-injected: bodychange" in head
    code, status, size, _, body = curl(envoy, "/bytes/100000", http2)
    assert (code, status, size) == (0, 200, 100000)
    differing = sum(a != b for a, b in zip(body, pattern(100000)))
    assert 8000 <= differing <= 12000, differing
    # HEAD: headers only, the upstream's.
    code, status, size, _, body = curl(envoy, "/bytes/5000", http2, "-I")
    assert (code, status) == (0, 200) and b"content-length: 5000" in body.lower()
    envoy.policy("policy=corruptBody&corrupt=50&percentage=100")
    _, _, size, _, body = curl(envoy, "/bytes/10000", http2)
    assert size == 10000 and 4000 <= sum(a != b for a, b in zip(body, pattern(10000))) <= 6000
    m = counted(envoy)
    # The HEAD request's answer had no body to change: it passed, and is not counted as changed.
    assert (m["bodies_changed"], m["requests_passed"], m["requests_seen"]) == (4, 1, 5)
    no_wasm_failure(envoy)


def test_the_new_faults_end_with_their_ttl(envoy, bodies):
    rules(envoy, on("/", {"reset": {}}, ttl="1s"))
    assert curl(envoy, "/x")[0] in H1_RESET_EXITS
    time.sleep(1.2)
    assert get(envoy, "/x")[0] == 200
    envoy.policy("policy=truncateResponse&afterBytes=10&percentage=100&ttl=1s")
    assert curl(envoy, "/bytes/5000")[:3] == (18, 200, 10)
    time.sleep(1.2)
    assert curl(envoy, "/bytes/5000")[:3] == (0, 200, 5000)
    counted(envoy)
    no_wasm_failure(envoy)
