"""Start-up and memory: how long Envoy (2 workers) takes from its start to LIVE with
fault-injector, and the CPU time it spends on the way, against the same Envoy with the empty
proxy-wasm filter; then its resident memory after BENCH_START_REQUESTS requests.

Each run starts a fresh Envoy with one listener whose one filter is fault-injector (as a data
listener, as bench.py's setup 4) or the empty filter; the two alternate, BENCH_START_RUNS
runs each, so both see the same load of a shared machine (BENCH_BASELINE_WASM adds a third filter, another
build, in turn with them). Time to LIVE: from starting the
process to admin /ready answering LIVE and the listener accepting (polled every 50 ms).
CPU: user + system time of the Envoy process at that moment, all its threads (/proc/PID/stat).
RSS: VmRSS BENCH_START_SETTLE seconds (2) after the requests were answered, sent over 8
keep-alive connections so both workers serve some; with what of it the heap holds (admin
/memory: allocated, and free but not returned to the system). BENCH_START_BOOTSTRAP (JSON) is merged into the bootstrap's top level, to try
options such as `memory_allocator_manager`.

    bench/run.sh startup        # or: .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench

RUNS = int(bench.knob("BENCH_START_RUNS", "5"))
REQUESTS = int(bench.knob("BENCH_START_REQUESTS", "2000"))
BOOTSTRAP = json.loads(bench.knob("BENCH_START_BOOTSTRAP", "{}"))
# Read after the requests and this pause, the same for both filters: time for a periodic
# release of free heap (`memory_allocator_manager`, every second by default) to happen.
SETTLE = float(bench.knob("BENCH_START_SETTLE", "2"))
CONNECTIONS = 8
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    """User + system CPU time of process `pid` so far, every thread's, in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK  # utime, stime


def send(port: int, count: int) -> None:
    """`count` GET / requests on CONNECTIONS keep-alive connections at once; each answered."""
    def one_connection(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"answered {response.status}")
        conn.close()

    threads = [threading.Thread(target=one_connection, args=(count // CONNECTIONS,)) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def one_run(workdir: Path, name: str, setup: bench.Setup, upstream: int) -> dict[str, float]:
    started = time.monotonic()
    envoy = bench.start_envoy(workdir, name, [setup], upstream, bootstrap_options=BOOTSTRAP)
    try:
        live_ms = (time.monotonic() - started) * 1000
        cpu = cpu_ms(envoy.pid)
        send(setup.port, REQUESTS)
        time.sleep(SETTLE)
        rss = bench.rss_kib(envoy.pid) / 1024
        heap = json.loads(envoy.admin("/memory").body)
        mib = lambda key: int(heap.get(key, 0)) / 2**20  # noqa: E731
        # What of the RSS the heap (tcmalloc) has: in use, and free but not given back.
        return {"live_ms": live_ms, "cpu_ms": cpu, "rss_mib": rss, "allocated_mib": mib("allocated"),
                "free_mib": mib("heap_size") - mib("allocated") - mib("pageheap_unmapped")}
    finally:
        envoy.stop()


def main() -> int:
    module = bench.wasm_module_path()
    setups = {
        "fault-injector": bench.Setup("fi", "fault-injector, no fault set", [bench.wasm_filter("start_fi", module, bench.data_listener_config())]),
        "empty filter": bench.Setup("empty", "empty proxy-wasm filter", [bench.wasm_filter("start_empty", bench.EMPTY_FILTER)]),
    }
    if bench.BASELINE:
        setups[bench.BASELINE_LABEL] = bench.Setup("base", bench.BASELINE_LABEL, [bench.wasm_filter("start_base", bench.BASELINE, bench.data_listener_config())])
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in setups}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        workdir = Path(tmp)
        nginx, upstream = bench.start_nginx(workdir)
        try:
            for i in range(RUNS):
                # Alternated, and in turn first, so neither always starts on a machine the
                # other just warmed (page cache) or just left busy.
                for key in (list(setups) if i % 2 == 0 else list(reversed(setups))):
                    r = one_run(workdir, f"envoy-{setups[key].key}-{i}", setups[key], upstream)
                    runs[key].append(r)
                    bench.say(f"{key} run {i + 1}: LIVE after {r['live_ms']:.0f} ms, CPU {r['cpu_ms']:.0f} ms, RSS {r['rss_mib']:.1f} MiB after {REQUESTS} requests "
                              f"(heap: {r['allocated_mib']:.1f} MiB in use, {r['free_mib']:.1f} MiB free)")
        finally:
            bench.stop_nginx(nginx)
    print(section(runs, module))
    return 0


def spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def section(runs: dict[str, list[dict[str, float]]], module: Path) -> str:
    fi, empty = runs["fault-injector"], runs["empty filter"]
    ratio = lambda key: [a[key] / b[key] for a, b in zip(fi, empty)]  # noqa: E731 run by run
    lines = [
        f"Envoy 2 workers, one listener; {RUNS} runs each, alternated; module {module.stat().st_size} bytes"
        + (f"; bootstrap with {json.dumps(BOOTSTRAP)}" if BOOTSTRAP else ""), "",
        "| filter | to LIVE ms (min / median / max) | CPU ms to LIVE | RSS MiB after requests | heap in use MiB | heap free MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        mib = lambda key: " / ".join(f"{v:.1f}" for v in (min(r[key] for r in rs), statistics.median(r[key] for r in rs), max(r[key] for r in rs)))  # noqa: E731
        lines.append(f"| {name} | {spread([r['live_ms'] for r in rs])} | {spread([r['cpu_ms'] for r in rs])} | "
                     f"{mib('rss_mib')} | {mib('allocated_mib')} | {mib('free_mib')} |")
    cpu, live = ratio("cpu_ms"), ratio("live_ms")
    rss_more = [a["rss_mib"] - b["rss_mib"] for a, b in zip(fi, empty)]
    lines += [
        "",
        f"- CPU to LIVE, run by run: {min(cpu):.2f} / {statistics.median(cpu):.2f} / {max(cpu):.2f}x the empty filter's "
        f"(median {statistics.median(r['cpu_ms'] for r in fi):.0f} ms against {statistics.median(r['cpu_ms'] for r in empty):.0f} ms).",
        f"- Time to LIVE: {min(live):.2f} / {statistics.median(live):.2f} / {max(live):.2f}x.",
        f"- RSS after {REQUESTS} requests: {min(rss_more):+.1f} / {statistics.median(rss_more):+.1f} / {max(rss_more):+.1f} MiB against the empty filter.",
    ]
    if bench.BASELINE_LABEL in runs:
        base = [a["cpu_ms"] / b["cpu_ms"] for a, b in zip(runs[bench.BASELINE_LABEL], empty)]
        lines.append(f"- {bench.BASELINE_LABEL}: CPU to LIVE {min(base):.2f} / {statistics.median(base):.2f} / {max(base):.2f}x the empty filter's.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
