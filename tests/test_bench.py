"""The benchmark (bench/): its verdicts, the BENCHMARKS.md section it replaces, and one short
run end to end, with wrk and nginx, through a real Envoy."""

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench  # noqa: E402
import instructions  # noqa: E402


def rounds(ratios, attr="rps"):
    """Results where, round by round, setup "a" measured `ratios` times setup "b"."""
    results = bench.Results()
    for r in ratios:
        results.add("HTTP/1.1", "a", bench.Sample(rps=1000 * r, p50=1, p99=r))
        results.add("HTTP/1.1", "b", bench.Sample(rps=1000, p50=1, p99=1))
    return results


def test_a_target_is_judged_only_when_the_middle_half_of_the_rounds_agrees():
    verdict = lambda ratios, **target: rounds(ratios).verdict("HTTP/1.1", "a", "b", "rps", **target)  # noqa: E731
    assert verdict([0.98, 0.99, 1.0, 1.01], at_least=0.97) == "met"
    assert verdict([0.90, 0.92, 0.95, 0.96], at_least=0.97) == "NOT met"
    assert verdict([0.90, 0.95, 0.99, 1.02], at_least=0.97).startswith("not told apart")
    # One round of eight far off does not decide it.
    assert verdict([0.5, 0.98, 0.98, 0.99, 0.99, 1.0, 1.0, 1.01], at_least=0.97) == "met"
    p99 = lambda ratios: rounds(ratios).verdict("HTTP/1.1", "a", "b", "p99", at_most=1.05)  # noqa: E731
    assert p99([1.0, 1.01, 1.02, 1.03]) == "met"
    assert p99([1.1, 1.2, 1.3, 1.4]) == "NOT met"
    assert p99([0.9, 1.0, 1.1, 1.2]).startswith("not told apart")


def test_the_instruction_section_replaces_its_older_self_and_keeps_the_rest(tmp_path, monkeypatch):
    out = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(bench, "OUT", str(out))
    out.write_text("# Benchmarks\n\nwall clock\n\n## Instructions per request\n\nold counts\n\n## Later\n\nkept\n")
    instructions.write_section("## Instructions per request\n\nnew counts\n")
    assert out.read_text() == "# Benchmarks\n\nwall clock\n\n## Instructions per request\n\nnew counts\n\n## Later\n\nkept\n"
    out.write_text("# Benchmarks\n\nwall clock\n")
    instructions.write_section("## Instructions per request\n\nnew counts\n")
    assert out.read_text() == "# Benchmarks\n\nwall clock\n\n## Instructions per request\n\nnew counts\n"
    # A fresh run's file keeps the hand-written findings last.
    out.write_text("# Benchmarks\n\nwall clock\n\n## Findings across runs\n\nby hand\n")
    instructions.write_section("## Instructions per request\n\nnew counts\n")
    assert out.read_text() == (
        "# Benchmarks\n\nwall clock\n\n## Instructions per request\n\nnew counts\n\n## Findings across runs\n\nby hand\n"
    )


def test_a_new_run_keeps_the_hand_written_findings():
    old = "# Benchmarks\n\n- Date: old\n\n## Findings across runs\n\nby hand\n\n## Instructions per request\n\nold\n"
    assert bench.kept_findings(old) == "## Findings across runs\n\nby hand\n\n"
    assert bench.kept_findings("# Benchmarks\n\n## Findings across runs\n\nlast\n") == "## Findings across runs\n\nlast\n"
    assert bench.kept_findings("# Benchmarks\n\nnothing by hand\n") == ""
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?|unknown \(not a git checkout\)", bench.commit())


def table_rows(text: str, key: str) -> list[list[str]]:
    """The cells of every markdown table row whose first cell is `key`."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if r[0] == key]


def test_a_short_run_measures_every_setup_and_holds_every_request(tmp_path):
    assert bench.EMPTY_FILTER.is_file(), "build it with ./build.sh --example empty_filter (test.sh does)"
    out = tmp_path / "BENCHMARKS.md"
    knobs = {"BENCH_ROUNDS": "2", "BENCH_SECONDS": "1", "BENCH_WARMUP": "1", "BENCH_H2": "0",
             "BENCH_HOLD": "100", "BENCH_HOLD_LIGHT": "0", "BENCH_OUT": str(out)}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "bench.py")], env={**os.environ, **knobs},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = out.read_text()
    for key in "123456":
        (row,) = table_rows(text, key)
        assert float(row[2]) > 0, row  # requests/s
    # 20% aborted: some answers were not 2xx; delayed 20% by 100 ms: the p99 shows it.
    assert float(table_rows(text, "5")[0][5]) > 0
    assert float(table_rows(text, "6")[0][4]) >= 100
    for pair in ("4/3", "5/3", "4/1", "4/2", "5/4"):
        assert table_rows(text, pair), pair
    for title in ("fault-injector", "Envoy's fault filter"):
        (row,) = [r for r in table_rows(text, title) if len(r) > 8]  # the hold table's, not the memory table's
        assert row[1] == "100" and row[2] == "100", row  # sent, held at once
        assert row[3] == "100× 200", row  # every answer a 200
        assert -20 < float(row[4]) < 150, row  # error p50, ms: released about 200 ms after arriving
    assert re.search(r"- Module size: \d+ KiB \(target ≤ 640 KiB\): (met|NOT met)\.", text)


def test_the_instruction_section_judges_rules_and_bindings_against_the_empty_filter():
    setups = [bench.Setup(k, f"setup {k}", []) for k in ("1", "2", "3", "4", "5", "4s", "4c", "4f", "4g", "3x", "4r", "4i", "4r1", "4i1")]
    counts = {"1": 160e3, "2": 164e3, "3": 180e3, "4": 183e3, "5": 170e3, "4s": 190e3, "4c": 181e3, "4f": 190e3, "4g": 199e3,
              "3x": 180e3, "4r": 185e3, "4i": 240e3, "4r1": 185e3, "4i1": 192e3}
    text = instructions.section(setups, counts)
    assert table_rows(text, "4r/3x")[0][1] == "1.028"
    assert "64 rules: 1.028 of the empty filter's instructions (target ≤ 1.08): met" in text
    assert "256 client bindings: 1.333 (target ≤ 1.08): NOT met. Against one rule: 1.000; against one binding: 1.250." in text
    assert "No fault set: 1.017 of the empty filter's instructions, so 98.4% of its throughput (target ≤ 1.02): met" in text
    assert "20% aborts: 0.929 of no fault set's instructions (target ≤ 0.93): met" in text


def test_a_short_start_up_run_compares_the_filter_with_the_empty_filter():
    assert bench.EMPTY_FILTER.is_file(), "build it with ./build.sh --example empty_filter (test.sh does)"
    knobs = {"BENCH_START_RUNS": "1", "BENCH_START_REQUESTS": "80", "BENCH_START_SETTLE": "0"}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "startup.py")], env={**os.environ, **knobs},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in ("fault-injector", "empty filter"):
        (row,) = table_rows(run.stdout, name)
        live, cpu, rss = (float(cell.split(" / ")[1]) for cell in row[1:4])  # medians
        assert live > 0 and cpu > 0 and rss > 10, row
    assert re.search(r"- CPU to LIVE, run by run: [\d.]+ / [\d.]+ / [\d.]+x the empty filter's", run.stdout)
    assert re.search(r"- RSS after 80 requests: [-+][\d.]+ / ", run.stdout)
