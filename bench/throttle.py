"""Throttled downloads of 1, 5 and 20 MiB over HTTP/1.1 and HTTP/2, by 1 and 50 clients at
once, side by side in one Envoy (2 workers) and one run: fault-injector's `throttle` (paced
by Envoy's fault filter after it, as the shipped configurations have it) and Envoy's fault
filter alone (its `response_rate_limit` read from the header the client sends).

Each round runs every cell for both setups in turn, so both meet the same load on a shared
machine. curl fetches from nginx (static files) through Envoy; for each request the body
must arrive whole, and its rate is size / curl's time_total. The upstream's requests are
Envoy's `upstream_rq_total` of the cluster, which must grow by one per request.

Run through `bench/run.sh throttle`; knobs: BENCH_ROUNDS (3), BENCH_THROTTLE_CLIENTS (1,50).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
from bench import UNLIMITED, say, stop_nginx  # noqa: E402
from harness import FAULT_FILTER, Envoy, ListenerSpec, free_port, request, wait_for, wasm_module_path, wasm_filter  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CLIENTS = [int(c) for c in os.environ.get("BENCH_THROTTLE_CLIENTS", "1,50").split(",")]
KIB, MIB = 1024, 1 << 20
# Body size -> rate (KiB/s): about 2 to 5 s each, and 50 clients of 20 MiB ask for 200 MiB/s.
SIZES = {1 * MIB: 512, 5 * MIB: 2048, 20 * MIB: 4096}
PROTOCOLS = {"HTTP/1.1": [], "HTTP/2": ["--http2-prior-knowledge"]}

NGINX_CONF = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/files;
        default_type application/octet-stream;
    }}
}}
"""


def start_nginx(workdir: Path) -> tuple[subprocess.Popen, int]:
    """nginx serving /bytes/<N>: N bytes, for each size."""
    workdir.chmod(0o755)  # nginx's workers, as another user, read the files
    (workdir / "files" / "bytes").mkdir(parents=True)
    block = bytes(range(256)) * 4096
    for size in SIZES:
        with open(workdir / "files" / "bytes" / str(size), "wb") as out:
            for _ in range(size // len(block)):
                out.write(block)
    port = free_port()
    (workdir / "nginx.conf").write_text(NGINX_CONF.format(dir=workdir, port=port))
    nginx = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _serving(port), timeout=30, interval=0.05)
    return nginx, port


def _serving(port: int) -> bool:
    try:
        return request(port, f"/bytes/{MIB}", timeout=1).status == 200
    except OSError:
        return False


def curl(port: int, size: int, extra: list[str]) -> tuple[int, int, float]:
    """(exit code, bytes received, seconds) for one download."""
    args = ["curl", "-sS", "-m", "120", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", *extra,
            f"http://127.0.0.1:{port}/bytes/{size}"]
    out = subprocess.run(args, capture_output=True, text=True)
    got, seconds = out.stdout.split() if out.stdout else ("0", "0")
    return out.returncode, int(got), float(seconds)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bench-throttle-"))
    nginx, upstream = start_nginx(workdir)
    rules = [{"match": {"path": {"exact": f"/bytes/{size}"}}, "fault": {"throttle": {"bytes_per_second": kib * KIB}}}
             for size, kib in SIZES.items()]
    ours = wasm_filter(json.dumps({"rules": rules, "envoy_fault_filter": True}), module=wasm_module_path())
    setups = {
        "fault-injector (+ Envoy's fault filter)": ListenerSpec(name="ours", http_filters=[ours, FAULT_FILTER]),
        "Envoy's fault filter alone": ListenerSpec(name="envoy", http_filters=[FAULT_FILTER]),
    }
    envoy = Envoy(list(setups.values()), upstream_port=upstream, workdir=workdir / "envoy", concurrency=2, log_level="warn",
                  ready_timeout=30, upstream_options={"circuit_breakers": UNLIMITED})
    # (setup, size, protocol, clients) -> [(exit, bytes, seconds)], and the upstream's count.
    got: dict[tuple, list] = {}
    asked_upstream: dict[tuple, list[int]] = {}
    try:
        envoy.start()
        ports = dict(zip(setups, envoy.ports))
        for r in range(ROUNDS):
            for size, kib in SIZES.items():
                for proto, flags in PROTOCOLS.items():
                    for clients in CLIENTS:
                        order = list(setups) if r % 2 == 0 else list(reversed(setups))
                        for setup in order:
                            extra = flags if setup.startswith("fault-injector") else [*flags, "-H", "x-fault-injector-envoy-fault: 1", "-H", f"x-envoy-fault-throughput-response: {kib}"]
                            before = bench.stat_value(envoy, "cluster.upstream.upstream_rq_total")
                            with ThreadPoolExecutor(clients) as pool:
                                runs = list(pool.map(lambda _: curl(ports[setup], size, extra), range(clients)))
                            key = (setup, size, proto, clients)
                            got.setdefault(key, []).extend(runs)
                            asked_upstream.setdefault(key, []).append(bench.stat_value(envoy, "cluster.upstream.upstream_rq_total") - before)
            say(f"round {r + 1}/{ROUNDS} done")
        envoy.check()
    finally:
        envoy.stop()
        stop_nginx(nginx)
    print(f"\n{ROUNDS} rounds; rate reached / rate asked, per request: min / median / max\n")
    print("| setup | body | rate asked | protocol | clients | whole | rate / asked | upstream requests per request |")
    print("|---|---|---|---|---|---|---|---|")
    for (setup, size, proto, clients), runs in got.items():
        kib = SIZES[size]
        whole = sum(code == 0 and n == size for code, n, _ in runs)
        ratios = sorted(n / s / (kib * KIB) for code, n, s in runs if s > 0)
        counts = asked_upstream[(setup, size, proto, clients)]
        per = sum(counts) / (len(runs) or 1)
        print(f"| {setup} | {size // MIB} MiB | {kib} KiB/s | {proto} | {clients} | {whole}/{len(runs)} | "
              f"{ratios[0]:.3f} / {statistics.median(ratios):.3f} / {ratios[-1]:.3f} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
