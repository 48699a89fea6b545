"""The sampler of each root context is seeded from the host's random source (WASI
`random_get`), so two workers of one Envoy, and two Envoys started together, draw different
streams. The observable: which requests of a fixed sequence a 50% abort policy samples,
one bit per request, read on one keep-alive connection (one worker) at a time."""

import threading

from harness import Envoy, ListenerSpec, stats, wait_for

POLICY = {"policy": {"status": 503, "percentage": 50}}
REQUESTS = 48


def pattern(client) -> str:
    """Which of REQUESTS requests on one connection were aborted, as a string of 0 and 1."""
    statuses = [client.get(f"/r/{i}").status for i in range(REQUESTS)]
    assert set(statuses) <= {200, 503}, statuses
    return "".join("1" if s == 503 else "0" for s in statuses)


def worker_connections(envoy) -> dict[str, int]:
    """Connections each worker's listener accepted so far, by worker."""
    found = stats(envoy, r"^listener\..*\.worker_[0-9]+\.downstream_cx_total$")
    return {name.split(".")[-2]: value for name, value in found.items() if f"_{envoy.port}." in name}


def test_two_workers_draw_different_streams(start_envoy):
    envoy = start_envoy(POLICY)
    first = {}
    # Each connection stays on the worker that accepted it; open connections until each
    # worker has had one, and read the first requests of each worker's stream.
    for _ in range(40):
        before = worker_connections(envoy)
        client = envoy.client()
        client.get("/warm-up")
        after = wait_for(lambda: (w := worker_connections(envoy)) != before and w)
        worker = next(name for name, count in after.items() if count > before.get(name, 0))
        if worker not in first:
            first[worker] = pattern(client)
        client.close()
        if len(first) == 2:
            break
    assert len(first) == 2, f"connections never reached both workers: {first}"
    a, b = first.values()
    assert "0" in a and "1" in a, a
    assert a != b, f"both workers drew {a}"


def test_two_envoys_started_together_draw_different_streams(upstream, tmp_path):
    envoys = [
        Envoy([ListenerSpec(plugin_config=POLICY)], upstream_port=upstream.port, concurrency=1, workdir=tmp_path / name)
        for name in ("a", "b")
    ]
    try:
        starts = [threading.Thread(target=e.start) for e in envoys]
        for t in starts:
            t.start()
        for t in starts:
            t.join()
        patterns = []
        for envoy in envoys:
            with envoy.client() as client:
                patterns.append(pattern(client))
        assert patterns[0] != patterns[1], f"both Envoys drew {patterns[0]}"
    finally:
        for envoy in envoys:
            envoy.stop()
