"""Instructions per request, counted by valgrind's callgrind: the repeatable companion of
bench/bench.py, whose wall-clock ratios move by several percent on a shared machine.

One Envoy (1 worker) runs under callgrind with a listener per setup (bench.py's, plus
fault-injector with its control route on the same listener, as in envoy/demo.yaml, and
with it off). For each setup, after a warm-up on one
keep-alive connection, the counters are zeroed, BENCH_CG_REQUESTS requests are sent on that
connection, and the counters are dumped: their total over the requests is what one request
costs Envoy, filters included. A second Envoy does the same for a state at its caps (64 rules,
256 client bindings), beside the empty filter again, and a third for one rule and one
binding. Takes about 10 minutes (Envoy starts slowly under valgrind). BENCH_CG_KEEP=<folder>
keeps the dumps, one per setup.

    bench/run.sh instructions        # or: .venv/bin/python bench/instructions.py
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
import harness
from harness import wait_for

REQUESTS = int(bench.knob("BENCH_CG_REQUESTS", "2000"))
# Under callgrind Envoy serves about 150 requests a second where it serves 6000 without it.
# A worker hands its counters to Envoy once per stats_flush (100 ms by default), so counted
# at valgrind's pace a flush would fall on every 15th request instead of every 600th: the
# setups flush 60 times less often, to count what a request costs at full speed.
STATS_FLUSH = bench.knob("BENCH_CG_STATS_FLUSH", "6s")
SEEN = "wasmcustom.fault_injector.requests_seen"
# A folder to keep each setup's callgrind dump in (`setup_<key>.out`), to read where a
# request's instructions go with callgrind_annotate; by default they go with the run.
KEEP = bench.knob("BENCH_CG_KEEP", "")
WARMUP = 200
# A state at its caps (64 rules, 256 client bindings): exact paths the benchmark's `/` is
# not, and clients in 10.0.0.0/16 where the benchmark's client is 127.0.0.1.
RULES = [{"match": {"path": {"exact": f"/rule/{i}"}}, "fault": {"abort": {"status": 503}}} for i in range(64)]
CLIENTS = [{"ip": f"10.0.{i // 256}.{i % 256}", "status": 503, "percentage": 100} for i in range(256)]


def runs(module: Path, f: dict) -> bool:
    """Whether the filter `f` is a Wasm filter running `module`."""
    config = f["typed_config"].get("config", {})
    return config.get("vm_config", {}).get("code", {}).get("local", {}).get("filename") == str(module)


def flushing_every(filters: list[dict], module: Path, period: str) -> list[dict]:
    """`filters`, with fault-injector's configuration given `stats_flush: period`."""
    for f in filters:
        if runs(module, f):
            value = f["typed_config"]["config"]["configuration"]
            value["value"] = json.dumps({**json.loads(value["value"] or "{}"), "stats_flush": period})
    return filters


def totals(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def main() -> int:
    module = bench.wasm_module_path()
    setups = [s for s in bench.setups(module) if s.key in ("1", "2", "3", "4", "5")]
    # Same VM as setup 4 (under valgrind V8 runs out of address space past a few VMs).
    setups.append(bench.Setup("4s", "fault-injector, no fault set, control route on this listener",
                              [bench.wasm_filter("bench_none", module, "{}", name="bench_same")]))
    setups.append(bench.Setup("4c", "fault-injector, no fault set, control route off",
                              [bench.wasm_filter("bench_none", module, '{"control": {"enabled": false}}', name="bench_off")]))
    # As the shipped data listeners are since Envoy's fault filter paces throttles and holds
    # delays: every request loses the x-fault-injector-envoy-fault header that makes Envoy's
    # fault filter act (one host call), then passes it, which finds no mark.
    paced = json.dumps({**json.loads(bench.data_listener_config()), "envoy_fault_filter": True})
    setups.append(bench.Setup("4f", "fault-injector, no fault set, Envoy's fault filter after it (as shipped)",
                              [bench.wasm_filter("bench_none", module, paced, name="bench_paced"), harness.FAULT_FILTER]))
    # A guard counts the requests a fault in force leaves alone: a 0% abort samples every
    # request out, so each pays what a guard costs. A VM of its own: listeners that share
    # one share the policy state, and this one would put its guard on setup 4's requests.
    guarded = json.loads(bench.data_listener_config({"status": 503, "percentage": 0}))
    guarded["guard"] = {"upstream_failures": {"above": 50, "window": "30s"}}
    setups.append(bench.Setup("4g", "fault-injector, a 0% fault under a guard",
                              [bench.wasm_filter("bench_guard", module, json.dumps(guarded))]))
    # The most rules and client bindings a state holds, none of them for this request: what
    # looking past them costs. VMs of their own, for the same reason as 4g's; with two more
    # VMs V8 fails to create one under valgrind, so they run in a second Envoy, with the
    # empty filter again (3x) to compare with.
    caps = [
        bench.Setup("3x", "empty proxy-wasm filter (floor), in the second Envoy", [bench.wasm_filter("bench_empty", bench.EMPTY_FILTER)]),
        bench.Setup("4r", f"fault-injector, {len(RULES)} exact-path rules, none for this path, in the second Envoy",
                    [bench.wasm_filter("bench_rules", module, bench.data_listener_config(start={"rules": RULES}))]),
        bench.Setup("4i", f"fault-injector, {len(CLIENTS)} client bindings, none for this client, in the second Envoy",
                    [bench.wasm_filter("bench_bindings", module, bench.data_listener_config(start={"clients": CLIENTS}))]),
    ]
    # One rule and one binding, the same way: 64 rules and 256 bindings should cost what one does.
    ones = [
        bench.Setup("4r1", "fault-injector, 1 exact-path rule, not for this path, in a third Envoy",
                    [bench.wasm_filter("bench_rule", module, bench.data_listener_config(start={"rules": RULES[:1]}))]),
        bench.Setup("4i1", "fault-injector, 1 client binding, not for this client, in a third Envoy",
                    [bench.wasm_filter("bench_binding", module, bench.data_listener_config(start={"clients": CLIENTS[:1]}))]),
    ]
    for s in setups + caps + ones:
        flushing_every(s.filters, module, STATS_FLUSH)
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cg-") as tmp:
        workdir = Path(tmp)
        nginx, upstream = bench.start_nginx(workdir)
        try:
            for name, listeners in (("envoy-cg", setups), ("envoy-cg-caps", caps), ("envoy-cg-ones", ones)):
                per_request.update(count(workdir, name, listeners, upstream, module))
        finally:
            bench.stop_nginx(nginx)
    text = section(setups + caps + ones, per_request)
    print(text)
    write_section(text)
    return 0


def count(workdir: Path, name: str, setups: list[bench.Setup], upstream: int, module: Path) -> dict[str, float]:
    """Instructions per request of each setup, in one Envoy under callgrind."""
    bench.say(f"starting Envoy under callgrind (slow), {len(setups)} listeners")
    # One worker, so one thread does all of a request's work.
    callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / 'callgrind.out.%p'}"]
    envoy = bench.start_envoy(workdir, name, setups, upstream, concurrency=1, wrapper=callgrind, ready_timeout=600)
    per_request: dict[str, float] = {}
    try:
        for s in setups:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            for _ in range(WARMUP):
                conn.request("GET", "/")
                conn.getresponse().read()
            seen = bench.stat_value(envoy, SEEN)
            subprocess.run(["callgrind_control", "--zero", str(envoy.pid)], check=True, capture_output=True)
            statuses: dict[int, int] = {}
            started = time.monotonic()
            for _ in range(REQUESTS):
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            rate = REQUESTS / (time.monotonic() - started)
            subprocess.run(["callgrind_control", f"--dump=setup_{s.key}", str(envoy.pid)], check=True, capture_output=True)
            conn.close()
            dumps = sorted(workdir.glob(f"callgrind.out.{envoy.pid}.*"), key=lambda p: int(p.suffix[1:]))
            per_request[s.key] = totals(dumps[-1]) / REQUESTS
            if KEEP:
                Path(KEEP).mkdir(parents=True, exist_ok=True)
                shutil.copy(dumps[-1], Path(KEEP) / f"setup_{s.key}.out")
            bench.say(f"setup {s.key}: {per_request[s.key] / 1000:.1f}k instructions per request, {rate:.0f} requests/s, statuses {statuses}")
            # A filter that failed to load answers fast and cheap, or is left out of the
            # chain (a VM V8 could not create under valgrind): such a count means nothing.
            if any(runs(module, f) for f in s.filters):
                # The filter hands its counts over within a flush (docs/counters.md).
                try:
                    wait_for(lambda: bench.stat_value(envoy, SEEN) - seen >= REQUESTS, timeout=60, interval=0.05)
                except TimeoutError:
                    raise RuntimeError(f"setup {s.key}: fault-injector saw fewer than {REQUESTS} requests; it did not run") from None
            if set(statuses) - {200, 503}:
                tail = envoy.log_tail(20)
                raise RuntimeError(f"setup {s.key} answered {statuses}; Envoy's log ends:\n{tail}")
    finally:
        envoy.stop()
    return per_request


SECTION = "## Instructions per request"


def section(setups: list[bench.Setup], per_request: dict[str, float]) -> str:
    """The counts as a section of BENCHMARKS.md, with what they say of the targets: when one
    Envoy worker's CPU sets the pace, throughput goes as the inverse of the instructions."""
    r = lambda a, b: per_request[a] / per_request[b]  # noqa: E731
    lines = [
        SECTION, "",
        f"`bench/run.sh instructions` (run by `bench/run.sh` too): Envoy with 1 worker under valgrind's callgrind,",
        f"{REQUESTS} keep-alive HTTP/1.1 requests per setup after a warm-up; the total over them is what one",
        "request costs Envoy, filters included. Unlike the wall clock here, the same build gives the",
        f"same counts to about 1%. fault-injector's setups hand their counters over every {STATS_FLUSH} (`stats_flush`)",
        "instead of 100 ms: under valgrind Envoy serves some 40 times fewer requests a second, and a flush",
        "per 100 ms would fall on every 15th request instead of every 600th.", "",
        "| # | setup | k instructions / request |", "|---|---|---:|",
    ]
    lines += [f"| {s.key} | {s.title} | {per_request[s.key] / 1000:.1f} |" for s in setups]
    lines += ["", "| ratio | instructions |", "|---|---:|"]
    lines += [f"| {a}/{b} | {r(a, b):.3f} |" for a, b in (("4", "3"), ("5", "3"), ("4s", "3"), ("4c", "3"), ("4g", "4"), ("4f", "4"), ("5", "4"), ("4r", "3x"), ("4i", "3x"), ("4r", "4r1"), ("4i", "4i1"), ("4", "1"), ("4", "2"))]
    lines += [
        "",
        f"- No fault set: {r('4', '3'):.3f} of the empty filter's instructions, so {1 / r('4', '3'):.1%} of its throughput "
        f"(target ≤ 1.02): {bench.met(r('4', '3') <= 1.02)}. With the control route off (4c): {1 / r('4c', '3'):.1%}; "
        f"with the control route on the same listener (4s): {1 / r('4s', '3'):.1%}.",
        f"- 20% aborts: {r('5', '4'):.3f} of no fault set's instructions (target ≤ 0.93): {bench.met(r('5', '4') <= 0.93)}.",
        f"- {len(RULES)} rules: {r('4r', '3x'):.3f} of the empty filter's instructions (target ≤ 1.08): {bench.met(r('4r', '3x') <= 1.08)}; "
        f"{len(CLIENTS)} client bindings: {r('4i', '3x'):.3f} (target ≤ 1.08): {bench.met(r('4i', '3x') <= 1.08)}. "
        f"Against one rule: {r('4r', '4r1'):.3f}; against one binding: {r('4i', '4i1'):.3f}.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Puts the section into BENCHMARKS.md (bench.OUT), in place of an older one."""
    if not bench.OUT or not Path(bench.OUT).is_file():
        return
    old = Path(bench.OUT).read_text()
    head, found, rest = old.partition(SECTION)
    if found:  # what followed the older section: the next section, if any
        after = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
    elif bench.FINDINGS in old:  # a fresh run's file: the hand-written section stays last
        head, findings = old.split(bench.FINDINGS, 1)
        head, after = head.rstrip("\n") + "\n\n", bench.FINDINGS + findings
    else:
        head, after = old.rstrip("\n") + "\n\n", ""
    Path(bench.OUT).write_text(head + text + ("\n" + after if after else ""))
    bench.say(f"wrote the instruction counts into {bench.OUT}")


if __name__ == "__main__":
    sys.exit(main())
