"""The four faults, sampling, per-client bindings and counters, in a real Envoy with 2 workers."""

import socket
import threading
import time

import pytest

from harness import FAULT_FILTER, ListenerSpec, file_access_log, in_parallel, request, wait_for
from reuse import envoy, upstream  # noqa: F401 (fixtures: the module's one Envoy with config {})


def many(envoy, count, path="/", source_ip="127.0.0.1", connections=8):
    """`count` requests spread over several keep-alive connections (so both workers serve)."""
    clients = [envoy.client(source_ip=source_ip) for _ in range(connections)]
    try:
        return [clients[i % connections].get(f"{path}{i}") for i in range(count)]
    finally:
        for c in clients:
            c.close()


def send_without_reading(envoy, count, prefix):
    """Opens `count` connections, each sending one request; the caller closes them."""
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", envoy.port))
        s.sendall(f"GET {prefix}{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    return socks


def test_no_fault_passes_everything_untouched(envoy, upstream):
    responses = many(envoy, 200)
    assert {r.status for r in responses} == {200}
    assert all("x-fault-injected" not in r.headers for r in responses)
    assert upstream.count == 200
    m = envoy.metrics()
    assert m["requests_seen"] == 200
    assert m["requests_passed"] == 200
    assert m["aborts_injected"] == 0


def test_counters_reach_envoy_once_per_stats_flush(start_envoy, upstream):
    # Workers hold their counter increments for up to stats_flush; gauges move at once.
    envoy = start_envoy({"stats_flush": "3s"})
    sent = time.monotonic()
    assert {r.status for r in many(envoy, 20)} == {200}
    early = envoy.metrics(settle=False)
    assert time.monotonic() - sent < 2.5, "too slow to look before the flush"
    assert early["requests_seen"] == 0
    assert early["state_version"] > 0
    wait_for(lambda: envoy.metrics(settle=False)["requests_seen"] == 20, timeout=10)
    assert time.monotonic() - sent >= 2.5
    assert envoy.metrics()["requests_passed"] == 20


def test_twenty_percent_of_1000_requests_are_aborted_and_counted(envoy, upstream):
    envoy.policy("status=503")
    responses = many(envoy, 1000)
    aborted = [r for r in responses if r.status == 503]
    passed = [r for r in responses if r.status == 200]
    assert len(aborted) + len(passed) == 1000
    # Binomial(1000, 0.2): mean 200, sd 12.6; 130..270 is 5.5 sd either way (outside it:
    # 1 in 24 million runs; 150..250 was 1 in 14,500).
    assert 130 <= len(aborted) <= 270
    assert all(r.headers["x-fault-injected"] == "statusResponse" for r in aborted)
    assert all(r.body == b"fault filter abort\n" for r in aborted)
    assert upstream.count == len(passed)
    m = envoy.metrics()
    assert m["requests_seen"] == 1000
    assert m["aborts_injected"] == len(aborted)
    assert m["requests_passed"] == len(passed)
    assert m["policy_changes"] == 1
    assert m["delays_injected"] == 0


def test_policy_change_is_seen_by_every_worker_at_once(envoy):
    envoy.policy("status=418&percentage=100")
    statuses = {request(envoy.port, f"/w{i}").status for i in range(40)}
    assert statuses == {418}
    envoy.policy("policy=none")
    assert {request(envoy.port, f"/w{i}").status for i in range(40)} == {200}


def test_simple_response_is_canned(envoy, upstream):
    envoy.policy("policy=simpleResponse&percentage=100")
    status, headers, body = request(envoy.port, "/x")
    assert (status, headers["x-fault-injected"]) == (200, "simpleResponse")
    assert body == b"fault-injector: simple response\n"
    assert upstream.count == 0
    assert envoy.metrics()["responses_injected"] == 1


def test_delays_are_accurate_and_do_not_block_other_requests(start_envoy, upstream):
    envoy = start_envoy({"clients": [{"ip": "127.0.0.2", "timeout": "300ms", "percentage": 100}]})
    # Side by side: 100 held requests from 127.0.0.2 and undelayed ones from 127.0.0.1.
    start = time.monotonic()
    held = []
    thread = threading.Thread(target=lambda: held.extend(
        timed_in_parallel_from(envoy, "127.0.0.2", 100)))
    thread.start()
    quick = [request(envoy.port, f"/quick{i}") for i in range(20)]
    thread.join()
    wall = time.monotonic() - start
    assert all(r.status == 200 and "x-fault-injected" not in r.headers for r in quick)
    # Behind a hold they would take 300 ms or more.
    assert max(r.elapsed for r in quick) < 0.29
    assert len(held) == 100
    assert all(r.status == 200 and r.headers["x-fault-injected"] == "delay" for r in held)
    elapsed = sorted(r.elapsed for r in held)
    # Never early, and none held twice over: what 100 client threads measure includes their
    # own scheduling, which a busy machine (parallel test workers) stretches past 100 ms;
    # bench/ measures how close the hold is, from Envoy's log.
    assert elapsed[0] >= 0.295, elapsed[:5]
    assert elapsed[-1] < 0.9, elapsed[-5:]
    # Held concurrently, not one after another.
    assert wall < 2.0
    assert upstream.count == 120
    m = envoy.metrics()
    assert m["delays_injected"] == 100
    assert m["active_delays"] == 0


def timed_in_parallel_from(envoy, source_ip, count):
    results = [None] * count

    def one(i):
        results[i] = request(envoy.port, f"/held{i}", source_ip=source_ip, timeout=30)

    in_parallel(*(lambda i=i: one(i) for i in range(count)))
    return results


def test_fractional_and_unit_delays(envoy):
    for query, seconds in (("timeout=0.2", 0.2), ("timeout=150ms", 0.15)):
        envoy.policy(f"{query}&percentage=100")
        r = request(envoy.port, "/d")
        assert r.headers["x-fault-injected"] == "delay"
        # 0.2 read as 2 s, or 150ms as 150 s, fails the bound; a busy machine's stall does not.
        assert seconds - 0.005 <= r.elapsed < seconds + 0.5


def test_clients_hanging_up_during_a_delay_are_forgotten(envoy, upstream):
    envoy.policy("timeout=1&percentage=100")
    socks = send_without_reading(envoy, 50, "/gone")
    assert wait_for(lambda: envoy.metrics(settle=False)["active_delays"] == 50, timeout=5)
    for s in socks:
        s.close()
    assert wait_for(lambda: envoy.metrics(settle=False)["active_delays"] == 0, timeout=5)
    time.sleep(1.2)  # past the delay: nothing is released upstream for the departed clients
    assert upstream.count == 0
    envoy.policy("policy=none")
    assert request(envoy.port, "/still-alive").status == 200
    assert envoy.alive()


def test_bounded_retries_are_counted_across_workers(envoy, upstream):
    envoy.policy("boundedRetries=3&percentage=100")
    # A new connection per attempt: the kernel spreads them over both workers.
    # 32 of them: the test's connections all land on one worker in under 1 of 2 billion
    # runs (with 8, about 1 in 8,000).
    statuses = [request(envoy.port, "/pay").status for _ in range(32)]
    assert statuses == [503, 503, 503, 200] * 8
    # Another identity (path) counts on its own; so does another client address.
    assert request(envoy.port, "/other").status == 503
    assert request(envoy.port, "/pay", source_ip="127.0.0.2").status == 503
    envoy.policy("boundedRetries=1&status=429")
    r = request(envoy.port, "/new")
    assert (r.status, r.headers["x-fault-injected"]) == (429, "boundedRetries")
    assert request(envoy.port, "/new").status == 200
    assert envoy.metrics()["retries_injected"] == 27
    assert upstream.count == 9
    # The attempts really were spread: both workers accepted connections.
    per_worker = {k: v for k, v in envoy.stats().items() if ".worker_" in k and k.endswith("downstream_cx_total")}
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker


def test_clients_are_bound_by_address(envoy, upstream):
    envoy.policy("ip=127.0.0.2&status=500&percentage=100")
    envoy.policy("ip=127.0.0.3&timeout=0.2&percentage=100")
    for _ in range(20):
        assert request(envoy.port, "/a", source_ip="127.0.0.2").status == 500
    held = request(envoy.port, "/a", source_ip="127.0.0.3")
    assert held.status == 200 and held.headers["x-fault-injected"] == "delay" and held.elapsed >= 0.195
    assert request(envoy.port, "/a", source_ip="127.0.0.4").status == 200
    # A fault for everyone, with 127.0.0.3 exempt.
    envoy.policy("status=503&percentage=100")
    envoy.policy("ip=127.0.0.3&policy=none")
    assert request(envoy.port, "/a", source_ip="127.0.0.3").status == 200
    assert request(envoy.port, "/a", source_ip="127.0.0.4").status == 503
    state = envoy.policy("ip=127.0.0.2&reset")
    assert [c["ip"] for c in state["clients"]] == ["127.0.0.3/32"]
    assert request(envoy.port, "/a", source_ip="127.0.0.2").status == 503
    envoy.policy("ip=127.0.0.0/24&status=502&percentage=100")
    assert request(envoy.port, "/a", source_ip="127.0.0.9").status == 502
    assert request(envoy.port, "/a", source_ip="127.0.0.3").status == 200


def test_ttl_ends_the_fault_it_came_with(envoy):
    envoy.policy("status=500&percentage=100")
    state = envoy.policy("status=418&ttl=1")
    assert state["policy"]["status"] == 418 and state["policy"]["ttl"] in ("1s", "999ms", "998ms")
    assert request(envoy.port, "/t").status == 418
    envoy.policy("ip=127.0.0.2&policy=none&ttl=1")
    assert request(envoy.port, "/t", source_ip="127.0.0.2").status == 200
    time.sleep(1.2)
    # Both ended on every worker, with no further call: the default's fault (the 500 from
    # before it does not come back), and the binding.
    assert {request(envoy.port, f"/t{i}").status for i in range(20)} == {200}
    assert request(envoy.port, "/t", source_ip="127.0.0.2").status == 200
    shown = envoy.policy()
    assert shown["clients"] == [] and "ttl" not in shown["policy"] and shown["policy"]["policy"] == "none"


def test_delays_past_max_active_delays_pass_untouched_and_are_counted(start_envoy, upstream):
    envoy = start_envoy({"max_active_delays": 5, "policy": {"timeout": "2s", "percentage": 100}})
    socks = send_without_reading(envoy, 5, "/held")
    assert wait_for(lambda: envoy.metrics(settle=False)["active_delays"] == 5, timeout=5)
    extra = [request(envoy.port, f"/over{i}") for i in range(5)]
    assert all(r.status == 200 and "x-fault-injected" not in r.headers and r.elapsed < 1 for r in extra)
    m = envoy.metrics()
    assert (m["delays_overflow"], m["delays_injected"]) == (5, 5)
    assert m["requests_passed"] == 5
    for s in socks:
        s.close()


def held_listener(name, policy, measure, log, handed=False):
    """A listener of its own (own VM, own policy) whose access log gives, per request, how long
    Envoy saw it held: `measure` is one of Envoy's access-log durations. `handed`: Envoy's
    fault filter follows, as shipped, and holds slow failures and resets."""
    config = {"policy": {**policy, "percentage": 100}, "envoy_fault_filter": handed}
    return ListenerSpec(config, name=name, vm_id=f"held_{name}", hcm_options={"access_log": [file_access_log(log, f"{measure}\n")]},
                        http_filters_after=[FAULT_FILTER] if handed else [])


def test_held_requests_are_never_released_early(start_envoy, tmp_path):
    # 300 requests each, sent over 150 ms so that they start all through the millisecond
    # and are held at once: with the due time in whole milliseconds, a request that came at
    # 100.9 ms was due at 300 and let go 199.1 ms after it came. Handed to Envoy's fault
    # filter, whose timers run from the time its event loop read when the turn began, a
    # third to a half of the aborts come early (BENCHMARKS.md); they wait for their time.
    names = ("delay", "slow", "reset", "slow_handed", "reset_handed")
    logs = {name: tmp_path / f"{name}.log" for name in names}
    slow, reset = {"policy": "slowFailure", "timeout": "200ms", "status": 503}, {"policy": "resetStream", "after": "200ms"}
    answered = "%COMMON_DURATION(DS_RX_END:DS_TX_BEG:us)%"
    envoy = start_envoy(listeners=[
        held_listener("delay", {"policy": "delayResponse", "timeout": "200ms"}, "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%", logs["delay"]),
        held_listener("slow", slow, answered, logs["slow"]),
        # A reset sends nothing: whole milliseconds from the first byte received.
        held_listener("reset", reset, "%DURATION%", logs["reset"]),
        held_listener("slow_handed", slow, answered, logs["slow_handed"], handed=True),
        held_listener("reset_handed", reset, "%DURATION%", logs["reset_handed"], handed=True),
    ])
    for port in envoy.ports:
        socks = []
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /held{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(s)
            time.sleep(0.0005)
        for s in socks:
            s.settimeout(10)
            try:
                s.recv(1024)
            except ConnectionError:
                pass  # the reset
            s.close()
    envoy.stop()  # which writes the access logs out
    held = {name: sorted(int(v) for v in log.read_text().split()) for name, log in logs.items()}
    assert [len(v) for v in held.values()] == [300] * len(names)
    for name in ("delay", "slow", "slow_handed"):
        assert held[name][0] >= 200_000, (name, held[name][:3])
        # Late only by what a loaded machine adds (the precision is measured in bench/delays.py).
        assert held[name][149] < 300_000, (name, held[name][149])
    assert held["reset"][0] >= 200 and held["reset_handed"][0] >= 200, (held["reset"][:3], held["reset_handed"][:3])
