"""How exactly fault-injector holds requests, side by side with Envoy's fault filter in one
Envoy (2 workers) and one run: BENCH_DELAY_COUNTS (500 and 1000) requests held
BENCH_HOLD_MS (200 ms) at once, as a delay, as a slow failure (a delay, then an abort) and,
for fault-injector, as a reset `after` the delay (Envoy's filter has no reset). Fault-injector
runs both ways: holding requests on its own tick timer (no Envoy fault filter after it, as in
an Istio mesh; the shipped configurations hold plain delays so) and handing them to Envoy's
fault filter after it (`"envoy_fault_filter": true`, which hands slow failures and resets
as the shipped configurations do, and `"envoy_fault_filter_delays": true` for delays).

Each round sends one burst per setup and count, the setups in an order that rotates from
round to round, so both filters meet the same load on a shared machine. The time held is
Envoy's own: its access log's %COMMON_DURATION% from the whole request received
(DS_RX_END) to the first byte sent upstream (US_TX_BEG, a delay) or to the answer's first
byte (DS_TX_BEG, a slow failure), in microseconds; a reset sends neither, so its time is
%DURATION% (whole milliseconds, from the first byte received). For each setup and count
it prints, over the rounds, min/median/max of the p50 and p99 of (held - hold) in ms,
the shortest hold of all (a negative one is a release before its time) and the share of
holds released before their time.

Envoy runs with the environment the shipped sidecars give it (libevent's precise clock,
harness.SHIPPED_ENVOY_ENVIRONMENT), or with BENCH_COARSE_CLOCK=1 without it, as Envoy
starts by default (libevent's coarse clock, which moves in kernel ticks).

Run through `bench/run.sh delays`; knobs: BENCH_ROUNDS (5), BENCH_HOLD_MS (200),
BENCH_DELAY_COUNTS (500,1000), BENCH_COARSE_CLOCK, BENCH_BASELINE_WASM (another build,
e.g. an older commit's, delaying as one more setup) and BENCH_BASELINE_LABEL (what to
call it).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
from bench import UNLIMITED, LISTENER_OPTIONS, percentile, say, start_nginx, stop_nginx, wasm_filter  # noqa: E402
from harness import FAULT_FILTER, SHIPPED_ENVOY_ENVIRONMENT, Envoy, ListenerSpec, file_access_log, wasm_module_path  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HOLD_MS = int(os.environ.get("BENCH_HOLD_MS", "200"))
COUNTS = [int(c) for c in os.environ.get("BENCH_DELAY_COUNTS", "500,1000").split(",")]
COARSE_CLOCK = os.environ.get("BENCH_COARSE_CLOCK") == "1"
# Sent evenly over this long, so every request is held when the last one is sent.
SPREAD_MS = HOLD_MS * 3 // 4
UPSTREAM = "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%"
ANSWER = "%COMMON_DURATION(DS_RX_END:DS_TX_BEG:us)%"


def envoy_fault(abort: bool) -> dict:
    share = {"numerator": 100, "denominator": "HUNDRED"}
    config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {"fixed_delay": f"{HOLD_MS / 1000}s", "percentage": share},
    }
    if abort:
        config["abort"] = {"http_status": 503, "percentage": share}
    return {"name": "envoy.filters.http.fault", "typed_config": config}


def ours(name: str, policy: dict, module: Path | None = None, handed: bool = False) -> dict:
    config = {"policy": {**policy, "percentage": 100}, "envoy_fault_filter": handed, "envoy_fault_filter_delays": handed}
    return wasm_filter(f"delays_{name}", module or wasm_module_path(), json.dumps(config))


def handed(name: str, policy: dict) -> list[dict]:
    """Fault-injector handing its holds to Envoy's fault filter after it."""
    return [ours(name, policy, handed=True), FAULT_FILTER]


DELAY = {"policy": "delayResponse", "timeout": f"{HOLD_MS}ms"}
SLOW = {"policy": "slowFailure", "timeout": f"{HOLD_MS}ms", "status": 503}
RESET = {"policy": "resetStream", "after": f"{HOLD_MS}ms"}


# (key, title, filters, what the log measures)
SETUPS = [
    ("delay-ours", "fault-injector on its tick, delay", [ours("delay", DELAY)], UPSTREAM),
    ("delay-handed", "fault-injector handing to Envoy's, delay", handed("delay_handed", DELAY), UPSTREAM),
    ("delay-envoy", "Envoy's fault filter, delay", [envoy_fault(False)], UPSTREAM),
    ("slow-ours", "fault-injector on its tick, slow failure", [ours("slow", SLOW)], ANSWER),
    ("slow-handed", "fault-injector handing to Envoy's, slow failure", handed("slow_handed", SLOW), ANSWER),
    ("slow-envoy", "Envoy's fault filter, delay + abort", [envoy_fault(True)], ANSWER),
    ("reset-ours", "fault-injector on its tick, reset after", [ours("reset", RESET)], "%DURATION%"),
    ("reset-handed", "fault-injector handing to Envoy's, reset after", handed("reset_handed", RESET), "%DURATION%"),
]
# Another build of the filter (an older commit's), delaying beside the others.
if bench.BASELINE:
    SETUPS.append(("delay-base", f"{bench.BASELINE_LABEL}, delay", [ours("base", DELAY, bench.BASELINE)], UPSTREAM))


def listener(key: str, filters: list[dict], measure: str, log: Path) -> ListenerSpec:
    access_log = file_access_log(log, f"%REQ(x-burst)% {measure}\n")
    return ListenerSpec(name=f"setup_{key.replace('-', '_')}", http_filters=filters, listener_options=LISTENER_OPTIONS,
                        hcm_options={"access_log": [access_log]})


def burst(port: int, count: int, tag: str) -> None:
    """`count` HTTP/1.1 connections, then one request on each, evenly over SPREAD_MS; waits
    until each is answered or closed."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
    time.sleep(0.3)  # Envoy accepts them all before the first request
    selector = selectors.DefaultSelector()
    request = f"GET / HTTP/1.1\r\nhost: bench\r\nx-burst: {tag}\r\n\r\n".encode()
    start = time.perf_counter_ns()
    for i, sock in enumerate(socks):
        wait = start + i * SPREAD_MS * 1_000_000 // count - time.perf_counter_ns()
        if wait > 1_000_000:
            time.sleep(wait / 1e9)
        sock.send(request)
        selector.register(sock, selectors.EVENT_READ)
    done = 0
    deadline = time.monotonic() + 30
    while done < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            try:
                data = key.fileobj.recv(65536)
            except ConnectionError:
                data = b""
            # An answer's head, or the close of a reset: either ends this request.
            if not data or b"\r\n\r\n" in data:
                selector.unregister(key.fileobj)
                done += 1
    for sock in socks:
        sock.close()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bench-delays-"))
    logs = {key: workdir / f"{key}.log" for key, *_ in SETUPS}
    nginx, upstream = start_nginx(workdir)
    # Envoy inherits this environment.
    for name, value in SHIPPED_ENVOY_ENVIRONMENT.items():
        if COARSE_CLOCK:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    envoy = Envoy([listener(key, filters, measure, logs[key]) for key, _, filters, measure in SETUPS], upstream_port=upstream,
                  workdir=workdir / "envoy", concurrency=2, log_level="warn", ready_timeout=30,
                  upstream_options={"circuit_breakers": UNLIMITED})
    try:
        envoy.start()
        ports = dict(zip((key for key, *_ in SETUPS), envoy.ports))
        for key, port in ports.items():  # opens Envoy's upstream connections before any timing
            burst(port, max(COUNTS), "warm")
        for r in range(ROUNDS):
            order = SETUPS[r % len(SETUPS):] + SETUPS[:r % len(SETUPS)]
            for count in COUNTS:
                for key, *_ in order:
                    burst(ports[key], count, f"{r}-{count}")
                    time.sleep(0.3)
            say(f"round {r + 1}/{ROUNDS} done")
        envoy.check()
        # Shared by every fault-injector VM of this Envoy: past max_active_delays a request
        # would pass untouched, which would make its hold look short.
        counts = envoy.stats("fault_injector.(delays_overflow|active_delays)")
        say(f"fault-injector's {counts}")
    finally:
        envoy.stop()  # which writes the access logs out
        stop_nginx(nginx)
    clock = "coarse clock (BENCH_COARSE_CLOCK=1)" if COARSE_CLOCK else "precise clock (EVENT_PRECISE_TIMER=1, as shipped)"
    print(f"\n{ROUNDS} rounds, held {HOLD_MS} ms, Envoy on libevent's {clock}; ms past the hold (Envoy's access log): "
          "min/median/max over rounds\n")
    print("| setup | requests at once | p50 | p99 | shortest hold | early |")
    print("|---|---|---|---|---|---|")
    for key, title, _, measure in SETUPS:
        scale = 1 if measure == "%DURATION%" else 1000
        held: dict[str, list[float]] = {}
        for line in logs[key].read_text().splitlines():
            tag, _, value = line.partition(" ")
            if tag != "warm" and value.strip().isdigit():
                held.setdefault(tag, []).append(int(value) / scale - HOLD_MS)
        for count in COUNTS:
            runs = [sorted(v) for tag, v in held.items() if tag.endswith(f"-{count}")]
            if not runs:
                continue
            p50 = sorted(percentile(v, 50) for v in runs)
            p99 = sorted(percentile(v, 99) for v in runs)
            shortest = min(v[0] for v in runs)
            spread = lambda xs: f"{xs[0]:+.2f} / {statistics.median(xs):+.2f} / {xs[-1]:+.2f}"  # noqa: E731
            got = sum(len(v) for v in runs)
            early = sum(held < 0 for v in runs for held in v) / got
            print(f"| {title} | {count} ({got} logged) | {spread(p50)} | {spread(p99)} | {shortest:+.2f} | {early:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
