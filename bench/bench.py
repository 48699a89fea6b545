"""The benchmark: what fault-injector costs next to Envoy alone, Envoy's own fault filter
and an empty proxy-wasm filter, and how accurately and cheaply it holds thousands of
delayed requests. Run it through bench/run.sh, which installs and builds what it needs.

One Envoy has a listener per setup (one worker, on a core of its own: BENCH_PIN below), all
in front of one nginx. Each round runs every setup for the same time, in an order that
rotates from round to round, so a setup never owes its numbers to the load the machine had
at one moment: the ratios compare measurements taken side by side. Then a separate run holds BENCH_HOLD requests at once in
a fresh Envoy, with fault-injector and then with Envoy's fault filter for comparison.

Knobs (environment): BENCH_ROUNDS (8), BENCH_SECONDS (2, per setup and protocol and
round), BENCH_WARMUP (2), BENCH_CONNECTIONS (32), BENCH_H2 (1: also HTTP/2 with h2load;
0: not), BENCH_PIN (1: the throughput rounds give Envoy one worker on a core of its own
and the load generator and nginx the other cores; 0: Envoy has 2 workers and the cores are
shared, as in the hold run), BENCH_HOLD (2000), BENCH_HOLD_LIGHT (500: the same hold
with fewer requests, to tell the filters' timing from a machine too busy to forward on time;
0: not), BENCH_HOLD_MS (200), BENCH_OUT (BENCHMARKS.md; empty: print
only), BENCH_BASELINE_WASM (another build of the filter to compare, e.g. an older commit's,
as setups 4b and 5b) and BENCH_BASELINE_LABEL (what to call it).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

import harness  # noqa: E402
from harness import REPO_ROOT, Envoy, ListenerSpec, envoy_binary, free_port, request, wait_for, wasm_module_path  # noqa: E402

EMPTY_FILTER = REPO_ROOT / "target" / "wasm32-wasip1" / "release" / "examples" / "empty_filter.wasm"
# Loose enough that Envoy itself never queues or refuses: the limits measured are the filters'.
UNLIMITED = {"thresholds": [{k: 1_000_000 for k in ("max_connections", "max_pending_requests", "max_requests", "max_retries")}]}
LISTENER_OPTIONS = {
    # Thousands of clients connect at once in the hold run.
    "tcp_backlog_size": 4096,
    # Each worker gets the same number of connections: left to the kernel, 32 connections
    # often split 20/12, and the busier worker sets the pace.
    "enable_reuse_port": False,
    "connection_balance_config": {"exact_balance": {}},
}


def knob(name: str, default: str) -> str:
    return os.environ.get(name, default)


ROUNDS = int(knob("BENCH_ROUNDS", "8"))
SECONDS = float(knob("BENCH_SECONDS", "2"))
WARMUP = float(knob("BENCH_WARMUP", "2"))
CONNECTIONS = int(knob("BENCH_CONNECTIONS", "32"))
H2 = knob("BENCH_H2", "1") == "1"
# With the cores shared, the scheduler moves Envoy, wrk and nginx about, and one setup's
# throughput moved by more than the few percent the targets are about (Envoy alone came
# out slower than Envoy with a Wasm filter). On a core of its own, one Envoy worker is
# what sets the pace, so the ratios compare what the filters cost it.
PIN = knob("BENCH_PIN", "1") == "1" and (os.cpu_count() or 1) >= 2
ENVOY_CPU = str((os.cpu_count() or 1) - 1)
CLIENT_CPUS = f"0-{(os.cpu_count() or 1) - 2}"
HOLD = int(knob("BENCH_HOLD", "2000"))
HOLD_LIGHT = int(knob("BENCH_HOLD_LIGHT", "500"))
HOLD_MS = int(knob("BENCH_HOLD_MS", "200"))
# The hold run's requests go out evenly over this long, so all are held at once when the
# last is sent, yet Envoy never gets more at one time than it can forward on release.
SPREAD_MS = int(knob("BENCH_HOLD_SPREAD_MS", str(HOLD_MS * 3 // 4)))
OUT = knob("BENCH_OUT", str(REPO_ROOT / "BENCHMARKS.md"))
FINDINGS = "## Findings across runs"
# Another build of the filter (an older commit's) to compare beside this one, if given.
_BASELINE = knob("BENCH_BASELINE_WASM", "")
BASELINE = Path(_BASELINE).resolve() if _BASELINE else None
BASELINE_LABEL = knob("BENCH_BASELINE_LABEL", "baseline build")


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def met(ok: bool) -> str:
    """A target's verdict, as the reports write it."""
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------- filters


def wasm_filter(vm_id: str, module: Path, configuration: str = "{}", name: str = "") -> dict:
    """A proxy-wasm filter in its own VM: a VM id of its own also means shared data of its own.
    Filters with one `vm_id` and different `name`s share a VM, each with its root context."""
    return harness.wasm_filter(configuration, module=module, vm_id=vm_id, root_id=vm_id, name=name or vm_id)


def envoy_fault_filter(percent: int, delay_ms: int) -> dict:
    """Envoy's own fault filter, aborting 0% and delaying `percent` of requests by `delay_ms`."""
    share = lambda n: {"numerator": n, "denominator": "HUNDRED"}  # noqa: E731
    return {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"http_status": 503, "percentage": share(0)},
            "delay": {"fixed_delay": f"{delay_ms / 1000}s", "percentage": share(percent)},
        },
    }


@dataclass
class Setup:
    """One listener of the benchmark's Envoy."""

    key: str
    title: str
    filters: list[dict]
    port: int = 0
    held_log: Path | None = None  # where to log, per request, how long the filters held it

    def listener(self) -> ListenerSpec:
        """This setup as a listener of the benchmark's Envoy: its filters alone, then the router."""
        return ListenerSpec(
            name=f"setup_{self.key}",
            stat_prefix=f"setup_{self.key}",
            http_filters=self.filters,
            listener_options=LISTENER_OPTIONS,
            hcm_options={"access_log": [held_log(self.held_log)]} if self.held_log else {},
        )


def data_listener_config(policy: dict | None = None, start: dict | None = None) -> str:
    """fault-injector's configuration for a data listener, as envoy/sidecar.yaml deploys it:
    the control route is on the connections a control listener marks, which this one does
    not, so its requests never read `:path` for it; `policy` is the start policy, `start`
    more of the start document (`rules`, `clients`)."""
    config: dict = {"control": {"filter_state": "fault_injector.control"}, **(start or {})}
    if policy:
        config["policy"] = policy
    return json.dumps(config)


def setups(module: Path) -> list[Setup]:
    out = [
        Setup("1", "Envoy, no extra filter (ceiling)", []),
        Setup("2", "Envoy's fault filter at 0%", [envoy_fault_filter(0, 100)]),
        Setup("3", "empty proxy-wasm filter (floor)", [wasm_filter("bench_empty", EMPTY_FILTER)]),
        Setup("4", "fault-injector, no fault set", [wasm_filter("bench_none", module, data_listener_config())]),
        Setup("5", "fault-injector, aborting 20%",
              [wasm_filter("bench_abort", module, data_listener_config({"status": 503, "percentage": 20}))]),
        Setup("6", "fault-injector, delaying 20% by 100 ms",
              [wasm_filter("bench_delay", module, data_listener_config({"timeout": "100ms", "percentage": 20}))]),
    ]
    if BASELINE:
        out += [
            Setup("4b", f"{BASELINE_LABEL}, no fault set", [wasm_filter("bench_base_none", BASELINE, data_listener_config())]),
            Setup("5b", f"{BASELINE_LABEL}, aborting 20%",
                  [wasm_filter("bench_base_abort", BASELINE, data_listener_config({"status": 503, "percentage": 20}))]),
        ]
    return out


# --------------------------------------------------------------------------- processes


def on_client_cpus(args: list[str]) -> list[str]:
    """`args`, run on the cores left to the load generator and nginx when PIN."""
    return ["taskset", "-c", CLIENT_CPUS, *args] if PIN else args


def start_nginx(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = (BENCH_DIR / "nginx.conf").read_text().replace("@PORT@", str(port)).replace("@DIR@", str(workdir))
    (workdir / "nginx.conf").write_text(conf)
    log = workdir / "nginx.log"
    with open(log, "ab") as out:
        nginx = subprocess.Popen(on_client_cpus(["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"]),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def serving() -> bool:
        if nginx.poll() is not None:
            raise RuntimeError(f"nginx exited with {nginx.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return request(port, "/", timeout=1).status == 200
        except OSError:
            return False

    wait_for(serving, timeout=30, interval=0.05)
    return nginx, port


def stop_nginx(nginx: subprocess.Popen) -> None:
    nginx.terminate()  # nginx's fast shutdown, workers included
    try:
        nginx.wait(10)
    except subprocess.TimeoutExpired:
        nginx.kill()
        nginx.wait(5)


def start_envoy(workdir: Path, name: str, listeners: list[Setup], upstream_port: int, pinned: bool = False, **options) -> Envoy:
    """The harness's Envoy with one listener per setup (each setup's `port` is set), with 2
    workers or, `pinned`, one worker on a core of its own. `options` go to harness.Envoy
    (instructions.py runs it under valgrind)."""
    if pinned:
        options.update(concurrency=1, wrapper=["taskset", "-c", ENVOY_CPU])
    options = {"concurrency": 2, "log_level": "warn", "ready_timeout": 30, **options}
    envoy = Envoy([s.listener() for s in listeners], upstream_port=upstream_port, workdir=workdir / name,
                  upstream_options={"circuit_breakers": UNLIMITED}, **options)
    envoy.start()
    for s, port in zip(listeners, envoy.ports):
        s.port = port
    return envoy


def held_log(path: Path) -> dict:
    """An access log of, per request, the microseconds from the whole request received to
    its first byte sent upstream: the time the filters held it, as Envoy itself measured."""
    return harness.file_access_log(path, "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%\n")


def envoy_version() -> str:
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else out.strip()


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ns(pid: int) -> int:
    """CPU time used so far by all threads of a process, in nanoseconds (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def stat_value(envoy: Envoy, name: str) -> int:
    """One counter or gauge of `envoy`'s; 0 while it does not exist."""
    return envoy.stats(f"^{re.escape(name)}$").get(name, 0)


# --------------------------------------------------------------------------- load


@dataclass
class Sample:
    """One measurement: requests per second and latency percentiles in microseconds."""

    rps: float
    p50: float
    p99: float
    non_2xx: int = 0
    errors: int = 0
    cpu_us: float = 0.0  # Envoy's CPU time per request, all threads


def measured(pid: int, run) -> Sample:
    """Runs a load generator and adds Envoy's CPU time per request: unlike throughput, it
    hardly moves when other processes compete for the cores."""
    before = cpu_ns(pid)
    sample, requests = run()
    sample.cpu_us = (cpu_ns(pid) - before) / 1000 / max(1, requests)
    return sample


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def run_wrk(port: int, seconds: float) -> tuple[Sample, int]:
    """HTTP/1.1: wrk, one thread, keep-alive connections."""
    args = on_client_cpus(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(BENCH_DIR / "report.lua"), f"http://127.0.0.1:{port}/"])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    line = next(l for l in reversed(out.splitlines()) if l.startswith("{"))
    r = json.loads(line)
    return Sample(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"], r["p99_us"], r["non_2xx"], r["errors"]), r["requests"]


def run_h2load(port: int, seconds: float, workdir: Path) -> tuple[Sample, int]:
    """HTTP/2: h2load, one thread, CONNECTIONS streams over 4 connections; percentiles from its per-request log."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends
    streams = max(1, CONNECTIONS // 4)
    args = on_client_cpus(["h2load", "-t1", "-c4", f"-m{streams}", "-D", str(max(1, round(seconds))), "--log-file", str(log), f"http://127.0.0.1:{port}/"])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    codes = [int(x) for x in re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out).groups()]
    failed = int(re.search(r"(\d+) failed, (\d+) errored", out).group(2))
    durations = sorted(int(l.split("\t")[2]) for l in log.read_text().splitlines() if l.count("\t") >= 2)
    return Sample(rps, percentile(durations, 50), percentile(durations, 99), sum(codes[1:]), failed), len(durations)


# --------------------------------------------------------------------------- throughput rounds


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(self, proto: str, key: str, sample: Sample) -> None:
        self.samples.setdefault((proto, key), []).append(sample)

    def median(self, proto: str, key: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples[(proto, key)])

    def ratios(self, proto: str, a: str, b: str, attr: str) -> list[float]:
        """The round-by-round ratios a/b: each pair was measured side by side."""
        pairs = zip(self.samples[(proto, a)], self.samples[(proto, b)])
        return [getattr(x, attr) / getattr(y, attr) for x, y in pairs]

    def ratio(self, proto: str, a: str, b: str, attr: str) -> float:
        return statistics.median(self.ratios(proto, a, b, attr))

    def middle_half(self, proto: str, a: str, b: str, attr: str) -> tuple[float, float]:
        """The quartiles of the round-by-round ratios: how far one round's ratio could be
        trusted on this machine."""
        ratios = self.ratios(proto, a, b, attr)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        return q1, q3

    def spread(self, proto: str, a: str, b: str, attr: str) -> str:
        q1, q3 = self.middle_half(proto, a, b, attr)
        return f"{q1:.2f}–{q3:.2f}"

    def verdict(self, proto: str, a: str, b: str, attr: str, at_least: float | None = None, at_most: float | None = None) -> str:
        """Whether the ratio a/b meets a target, said only when the middle half of the rounds
        agrees: where it straddles the target, this run cannot tell."""
        q1, q3 = self.middle_half(proto, a, b, attr)
        if at_least is not None:
            all_met, none_met = q1 >= at_least, q3 < at_least
        else:
            all_met, none_met = q3 <= at_most, q1 > at_most
        if all_met or none_met:
            return met(all_met)
        return "not told apart by this run (the middle half of the rounds straddles the target)"


def throughput(workdir: Path, module: Path, upstream: int) -> tuple[list[Setup], list[str], Results]:
    all_setups = setups(module)
    protos = ["HTTP/1.1"] + (["HTTP/2"] if H2 else [])
    envoy = start_envoy(workdir, "envoy-throughput", all_setups, upstream, pinned=PIN)
    results = Results()
    try:
        say(f"warm-up: {WARMUP:g} s per setup")
        for s in all_setups:
            run_wrk(s.port, WARMUP)
        for r in range(ROUNDS):
            order = all_setups[r % len(all_setups):] + all_setups[: r % len(all_setups)]
            for s in order:
                for proto in protos:
                    if proto == "HTTP/1.1":
                        sample = measured(envoy.pid, lambda: run_wrk(s.port, SECONDS))
                    else:
                        sample = measured(envoy.pid, lambda: run_h2load(s.port, SECONDS, workdir))
                    envoy.check()
                    results.add(proto, s.key, sample)
                    say(f"round {r + 1}/{ROUNDS} {proto:8} {s.key:>2} {sample.rps:9.0f} req/s  p50 {sample.p50 / 1000:6.2f} ms  p99 {sample.p99 / 1000:6.2f} ms  Envoy CPU {sample.cpu_us:5.1f} µs/req")
    finally:
        envoy.stop()
    return all_setups, protos, results


# --------------------------------------------------------------------------- the hold run


@dataclass
class Hold:
    """What holding `count` delayed requests at once cost and how exact the delays were."""

    title: str
    count: int  # requests sent
    held: int  # the filter's own gauge of requests held, read once all were sent
    statuses: dict[str, int]
    errors_ms: list[float]  # each request's time, as the client saw it, minus the delay, sorted
    held_errors_ms: list[float]  # each request's time held in Envoy, as Envoy logged it, minus the delay, sorted
    undelayed_ms: list[float]  # the same requests' times through a listener without the filter, sorted
    rss_idle_kib: int  # before any burst
    rss_connected_kib: int  # after the same burst passed untouched, with the connections for the held one open
    rss_held_kib: int  # with every request held

    def err(self, pct: float) -> float:
        return percentile(self.held_errors_ms, pct)


def burst(port: int, count: int, on_all_sent=lambda: None, on_connected=lambda: None) -> tuple[list[float], dict[str, int]]:
    """Opens `count` HTTP/1.1 connections, then sends one request on each, evenly over
    SPREAD_MS, and returns each request's time (ms, from its send to its whole answer) and
    the statuses.

    Connecting first keeps the handshakes out of the times. `on_all_sent` runs once every
    request is out (to look at Envoy while they are held), `on_connected` before the first.
    """
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    time.sleep(0.5)  # Envoy accepts them all before the clock starts
    on_connected()
    request = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"
    selector = selectors.DefaultSelector()
    sent: dict[int, int] = {}
    start = time.perf_counter_ns()
    for i, sock in enumerate(socks):
        # Sleeping, not spinning, between the millisecond batches: the cores are Envoy's.
        wait = start + i * SPREAD_MS * 1_000_000 // count - time.perf_counter_ns()
        if wait > 1_000_000:
            time.sleep(wait / 1e9)
        sock.send(request)
        sent[sock.fileno()] = time.perf_counter_ns()
        selector.register(sock, selectors.EVENT_READ)
    on_all_sent()
    buffers: dict[int, bytes] = {}
    times: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + 30 + HOLD_MS / 1000
    while len(times) + statuses.get("closed", 0) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            fd = sock.fileno()
            data = sock.recv(65536)
            now = time.perf_counter_ns()
            if not data:
                statuses["closed"] = statuses.get("closed", 0) + 1
                selector.unregister(sock)
                continue
            buf = buffers.get(fd, b"") + data
            head, sep, body = buf.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if not sep or (length and len(body) < int(length.group(1))):
                buffers[fd] = buf
                continue
            status = head.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            times.append((now - sent[fd]) / 1e6)
            selector.unregister(sock)
    answered = len(times) + statuses.get("closed", 0)
    if answered < count:
        statuses["no answer"] = count - answered
    for sock in socks:
        sock.close()
    return sorted(times), statuses


def hold_run(workdir: Path, module: Path, upstream: int, ours: bool, count: int) -> Hold:
    """Holds `count` requests of HOLD_MS at once in a fresh Envoy, with fault-injector or with
    Envoy's fault filter. The same burst first goes through a listener without the filter,
    which warms Envoy's upstream connections and shows what the proxying alone takes."""
    if ours:
        config = json.dumps({"policy": {"policy": "delayResponse", "timeout": f"{HOLD_MS}ms", "percentage": 100}})
        held = Setup("h", "fault-injector", [wasm_filter("bench_hold", module, config)], held_log=workdir / f"held-ours-{count}.log")
        gauge = "wasmcustom.fault_injector.active_delays"
    else:
        held = Setup("h", "Envoy's fault filter", [envoy_fault_filter(100, HOLD_MS)], held_log=workdir / f"held-envoy-{count}.log")
        gauge = "http.setup_h.fault.active_faults"
    held.held_log.unlink(missing_ok=True)  # Envoy appends to it
    plain = Setup("p", "no filter", [])
    name = "envoy-hold-ours" if ours else "envoy-hold-envoy-fault"
    envoy = start_envoy(workdir, name, [held, plain], upstream)
    try:
        run_wrk(plain.port, 1)
        time.sleep(0.5)
        rss_idle = rss_kib(envoy.pid)
        # Also leaves Envoy with as many idle upstream connections as the held requests will use.
        undelayed, _ = burst(plain.port, count)
        seen = {"held": 0, "rss": 0}
        started = time.monotonic()

        def look() -> None:
            # Until the first release is near: the most held at once, and Envoy's memory then.
            while time.monotonic() - started < 0.9 * HOLD_MS / 1000 and seen["held"] < count:
                seen["held"] = max(seen["held"], stat_value(envoy, gauge))
                seen["rss"] = max(seen["rss"], rss_kib(envoy.pid))
                time.sleep(0.005)
            seen["rss"] = max(seen["rss"], rss_kib(envoy.pid))

        rss_connected = 0

        def connected() -> None:
            nonlocal rss_connected, started
            rss_connected = rss_kib(envoy.pid)
            started = time.monotonic()

        times, statuses = burst(held.port, count, look, connected)
        time.sleep(1.5)  # Envoy writes its access log out every second
        envoy.check()
    finally:
        envoy.stop()  # which also flushes the access log
    assert held.held_log is not None
    held_us = [int(l) for l in held.held_log.read_text().split() if l.isdigit()]
    return Hold(
        held.title, count, seen["held"], statuses, sorted(t - HOLD_MS for t in times), sorted(us / 1000 - HOLD_MS for us in held_us),
        undelayed, rss_idle, rss_connected, seen["rss"],
    )


# --------------------------------------------------------------------------- report


RATIOS = [("4", "3"), ("5", "3"), ("4", "1"), ("4", "2")]


def ratio_lines(proto: str, results: Results, keys: set[str]) -> list[str]:
    lines = []
    pairs = RATIOS + [("5", "4")] + ([("4", "4b"), ("5", "5b")] if {"4b", "5b"} <= keys else [])
    for a, b in pairs:
        rps = results.ratio(proto, a, b, "rps")
        p99 = results.ratio(proto, a, b, "p99")
        cpu = results.ratio(proto, a, b, "cpu_us")
        lines.append(f"| {a}/{b} | {rps:.3f} | {results.spread(proto, a, b, 'rps')} | {p99:.3f} | {results.spread(proto, a, b, 'p99')} | {cpu:.3f} |")
    return lines


def verdicts(results: Results, holds: list[Hold], module_size: int) -> list[str]:
    proto = "HTTP/1.1"
    rps_43 = results.ratio(proto, "4", "3", "rps")
    p99_43 = results.ratio(proto, "4", "3", "p99")
    rps_54 = results.ratio(proto, "5", "4", "rps")
    lines = [
        f"- No fault set: throughput {rps_43:.1%} of the empty filter's (target ≥ 97%; middle half of the rounds "
        f"{results.spread(proto, '4', '3', 'rps')}): {results.verdict(proto, '4', '3', 'rps', at_least=0.97)}; "
        f"p99 {p99_43 - 1:+.1%} against it (target ≤ +5%; middle half {results.spread(proto, '4', '3', 'p99')}): "
        f"{results.verdict(proto, '4', '3', 'p99', at_most=1.05)}.",
        f"- 20% aborts: throughput {rps_54:.1%} of no fault set (target ≥ 100%; middle half "
        f"{results.spread(proto, '5', '4', 'rps')}): {results.verdict(proto, '5', '4', 'rps', at_least=1.0)}.",
        "- The instruction counts below tell apart what the wall clock here does not.",
    ]
    ours = next((h for h in holds if h.title == "fault-injector" and h.count == HOLD), None)
    if ours:
        mib = (ours.rss_held_kib - ours.rss_connected_kib) / 1024
        ok = ours.held >= HOLD and ours.err(99) < 10 and ours.err(100) < 25 and ours.statuses.get("200", 0) == HOLD
        lines.append(
            f"- Delays: {ours.held} held at once (target {HOLD}), error p99 {ours.err(99):.1f} ms (target < 10), "
            f"max {ours.err(100):.1f} ms (target < 25): {met(ok)}; memory for them {mib:.1f} MiB (target < 20): {met(mib < 20)}."
        )
    light = next((h for h in holds if h.title == "fault-injector" and h.count == HOLD_LIGHT), None)
    if light:
        lines.append(
            f"- Delays, {HOLD_LIGHT} held at once: error p99 {light.err(99):.1f} ms, max {light.err(100):.1f} ms: "
            f"{met(light.err(99) < 10 and light.err(100) < 25)} at that load."
        )
    lines.append(f"- Module size: {module_size / 1024:.0f} KiB (target ≤ 640 KiB): {met(module_size <= 640 * 1024)}.")
    return lines


def commit() -> str:
    """The commit measured, as `git describe` names it (with -dirty when the tree has changes)."""
    run = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=7"],
                         capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 and run.stdout.strip() else "unknown (not a git checkout)"


def kept_findings(old: str) -> str:
    """The hand-written section of an older BENCHMARKS.md (FINDINGS up to the next section or
    the end), which a new run keeps: the numbers change, what was learnt across runs stays."""
    start = old.find(FINDINGS)
    if start < 0:
        return ""
    end = old.find("\n## ", start + len(FINDINGS))
    return old[start:] if end < 0 else old[start:end + 1]


def report(all_setups: list[Setup], protos: list[str], results: Results, holds: list[Hold], module: Path) -> str:
    keys = {s.key for s in all_setups}
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.machine())
    size = module.stat().st_size
    out = [
        "# Benchmarks",
        "",
        "Written by `bench/run.sh` (method: [docs/development.md](docs/development.md#the-benchmark));",
        "every number below comes from one run of it, except under \"Findings across runs\", which",
        "is written by hand and kept from run to run. Compare ratios, not absolute numbers: the",
        "machine is shared, and the setups were interleaved round by round so that each ratio",
        "compares runs taken side by side.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Commit: {commit()}",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}",
        f"- Envoy {envoy_version()}, upstream nginx (1 worker) on loopback. Throughput rounds: "
        + (f"Envoy with 1 worker pinned to core {ENVOY_CPU}, load generator and nginx pinned to core(s) {CLIENT_CPUS}" if PIN
           else "Envoy with 2 workers, cores shared")
        + "; hold run: Envoy with 2 workers, cores shared",
        f"- Load: {ROUNDS} rounds × {SECONDS:g} s per setup and protocol; HTTP/1.1 with wrk "
        f"(1 thread, {CONNECTIONS} connections){'; HTTP/2 with h2load (1 thread, 4 connections × ' + str(max(1, CONNECTIONS // 4)) + ' streams)' if H2 else ''}",
        f"- Module: `fault_injector.wasm` {size} bytes ({size / 1024:.0f} KiB); empty filter {EMPTY_FILTER.stat().st_size} bytes",
        "",
        "## Results",
        "",
        "Medians over the rounds; p50 and p99 are request latencies seen by the load generator;",
        "Envoy CPU is the CPU time of all Envoy threads (from /proc) over the requests served.",
        "",
    ]
    for proto in protos:
        out += [f"### {proto}", "", "| # | setup | req/s | p50 ms | p99 ms | non-2xx/s | Envoy CPU µs/req |", "|---|---|---:|---:|---:|---:|---:|"]
        for s in all_setups:
            rps, p50, p99 = (results.median(proto, s.key, a) for a in ("rps", "p50", "p99"))
            samples = results.samples[(proto, s.key)]
            non2xx = statistics.median(x.non_2xx / SECONDS for x in samples)
            cpu = results.median(proto, s.key, "cpu_us")
            out.append(f"| {s.key} | {s.title} | {rps:.0f} | {p50 / 1000:.2f} | {p99 / 1000:.2f} | {non2xx:.0f} | {cpu:.0f} |")
        out += ["", "Ratios (median of the per-round ratios, and the middle half of them; p99 ratio above 1 means slower):", "",
                "| ratio | req/s | middle half | p99 | middle half | Envoy CPU/req |", "|---|---:|---:|---:|---:|---:|"]
        out += ratio_lines(proto, results, keys)
        out.append("")
    if holds:
        mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
        out += [
            f"## Holding {HOLD} delayed requests at once",
            "",
            f"A fresh Envoy (2 workers) per filter and run, delaying every request by {HOLD_MS} ms. The client opens",
            f"{HOLD} HTTP/1.1 connections (or {HOLD_LIGHT}, to see the same hold on a machine not too busy to",
            f"forward on time), then sends one request on each, evenly over {SPREAD_MS} ms, so all",
            "are held at once when the last goes out (\"held at once\": the filter's own gauge, read then).",
            "Error = how long Envoy held a request (its access log: whole request received to first byte",
            f"sent upstream, in µs) minus {HOLD_MS} ms. The client's view, send to whole answer minus the",
            "delay, adds Envoy's queueing on this machine: the same requests sent through a listener of",
            "the same Envoy without any filter show how much.",
            "",
            "| filter | requests | held at once | answers | error p50 ms | p99 ms | max ms | min ms | client's view: p50 ms | p99 ms | max ms | no filter, client's view: p50 ms | p99 ms |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for h in holds:
            answers = ", ".join(f"{n}× {code}" for code, n in sorted(h.statuses.items()))
            c, u = h.errors_ms, h.undelayed_ms
            out.append(
                f"| {h.title} | {h.count} | {h.held} | {answers} | {h.err(50):.1f} | {h.err(99):.1f} | {h.err(100):.1f} | "
                f"{h.held_errors_ms[0] if h.held_errors_ms else 0:.1f} | {percentile(c, 50):.1f} | {percentile(c, 99):.1f} | "
                f"{percentile(c, 100):.1f} | {percentile(u, 50):.1f} | {percentile(u, 99):.1f} |"
            )
        out += [
            "",
            "Envoy's memory (RSS, MiB): idle; after the same requests went through untouched, with",
            f"the connections for the held ones open; at its peak while they are held. \"For the held",
            "requests\" is the last minus the one before: what holding costs beyond proxying as many.",
            "",
            "| filter | requests | idle | after the untouched burst, connected | held | for the held requests |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for h in holds:
            out.append(
                f"| {h.title} | {h.count} | {mib(h.rss_idle_kib)} | {mib(h.rss_connected_kib)} | {mib(h.rss_held_kib)} | "
                f"{mib(h.rss_held_kib - h.rss_connected_kib)} |"
            )
        out.append("")
    out += ["## Targets", ""] + verdicts(results, holds, size) + [""]
    return "\n".join(out)


def main() -> int:
    # Stopped from outside, still stop nginx and Envoy (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    module = wasm_module_path()
    for needed in (module, EMPTY_FILTER):
        if not needed.is_file():
            raise SystemExit(f"bench: {needed} not found: run bench/run.sh, which builds it")
    with tempfile.TemporaryDirectory(prefix="fault-injector-bench-") as tmp:
        workdir = Path(tmp)
        nginx, upstream = start_nginx(workdir)
        try:
            all_setups, protos, results = throughput(workdir, module, upstream)
            holds = []
            for count in [n for n in (HOLD, HOLD_LIGHT) if n > 0]:
                for ours in (True, False):
                    say(f"holding {count} requests of {HOLD_MS} ms ({'fault-injector' if ours else 'Envoy fault filter'})")
                    holds.append(hold_run(workdir, module, upstream, ours, count))
        finally:
            stop_nginx(nginx)
    text = report(all_setups, protos, results, holds, module)
    print(text)
    if OUT:
        findings = kept_findings(Path(OUT).read_text()) if Path(OUT).is_file() else ""
        Path(OUT).write_text(text + ("\n" + findings.rstrip("\n") + "\n" if findings else ""))
        say(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
