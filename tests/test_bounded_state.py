"""Bounded state in a real Envoy (2 workers): a flood of distinct identities under
boundedRetries keeps the shared retry table at its cap, each identity dropped to make room
is counted, and identities still count right afterwards."""

import threading

from harness import in_parallel, request

CAP = 160  # max_entries: 16 shards of 10, so every shard fills to exactly its share
FLOOD = 5000
CONNECTIONS = 32  # enough that both workers take some (all on one: 1 in 2 billion)
ENTRIES = "retry_entries"
EVICTIONS = "retry_evictions"


def statuses(envoy, path, count):
    """`count` attempts of one identity, each on a new connection (either worker)."""
    return [request(envoy.port, path).status for _ in range(count)]


def flood(envoy, count):
    """`count` distinct paths over several keep-alive connections, in parallel."""
    responses = [None] * count

    def send(lane):
        with envoy.client() as client:
            for i in range(lane, count, CONNECTIONS):
                responses[i] = client.get(f"/flood/{i}")

    in_parallel(*(lambda lane=lane: send(lane) for lane in range(CONNECTIONS)))
    return responses


def test_a_flood_of_identities_keeps_the_retry_table_at_its_cap(start_envoy, upstream):
    # A long window: nothing expires during the test, so every drop is an eviction.
    envoy = start_envoy({"bounded_retries": {"window": "10m", "max_entries": CAP}})
    envoy.policy("boundedRetries=2&percentage=100")
    assert envoy.metrics()[ENTRIES] == 0

    # Watch the gauge while the flood runs.
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(envoy.metrics(settle=False)[ENTRIES])
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        responses = flood(envoy, FLOOD)
    finally:
        done.set()
        watcher.join()

    # Every identity is new, so every request is its first failed attempt.
    assert {r.status for r in responses} == {503}
    assert {r.headers["x-fault-injected"] for r in responses} == {"boundedRetries"}
    assert upstream.count == 0
    assert len(seen) >= 5, seen
    assert max(seen) <= CAP, max(seen)
    assert CAP in seen, "the table never reached its cap while the flood ran"
    m = envoy.metrics()
    assert m[ENTRIES] == CAP
    assert m[EVICTIONS] == FLOOD - CAP
    assert m["retries_injected"] == FLOOD
    # Both workers wrote to the table at once: the gauge they share stayed exact.
    per_worker = {k: v for k, v in envoy.stats().items() if ".worker_" in k and k.endswith("downstream_cx_total")}
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker

    # The newest identities are remembered: a few more, each the newest of its shard.
    tails = [f"/tail/{k}" for k in range(8)]
    for path in tails:
        assert request(envoy.port, path).status == 503
    # The oldest were dropped first: /flood/0 starts counting again (two failures, then a
    # pass), while each tail identity needs one more failure only.
    assert statuses(envoy, "/flood/0", 3) == [503, 503, 200]
    for path in tails:
        assert statuses(envoy, path, 2) == [503, 200], path
    assert statuses(envoy, "/flood/0", 1) == [503]

    # Exact accounting: 9 newcomers into full shards each pushed one out; 9 passes each
    # freed an entry; /flood/0's last attempt took one free place.
    m = envoy.metrics()
    assert m[EVICTIONS] == FLOOD - CAP + 9
    assert m[ENTRIES] == CAP - 9 + 1
    assert upstream.count == 9
