"""Start-up, counted: the instructions V8 takes to compile each module, the repeatable
companion of bench/startup.py, whose CPU times move by 10 to 30% from run to run here.

Envoy compiles a Wasm module once, when it starts, with V8's optimizing compiler only
(proxy-wasm turns Liftoff off), every function of it; that is most of the CPU a module adds
to Envoy's start-up (bench/startup.py). Envoy's V8 cannot be told to count, so this has
Node's V8 compile the module the same way (`--no-liftoff --no-wasm-lazy-compilation`, one
thread) under valgrind's callgrind, and subtracts Node compiling nothing. The same build
gives the same count to well under 1%; Node's V8 is not Envoy's, so compare modules with
each other (ratios), not with Envoy's milliseconds.

    bench/run.sh compile        # or: .venv/bin/python bench/compile.py [more modules...]

BENCH_BASELINE_WASM adds another build (an older commit's), named BENCH_BASELINE_LABEL.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bench

NODE_FLAGS = ["--no-liftoff", "--no-wasm-tier-up", "--no-wasm-lazy-compilation", "--single-threaded"]
SCRIPT = Path(__file__).resolve().parent / "compile.js"


def instructions(modules: list[Path]) -> int:
    """Instructions Node takes to start and compile `modules`, all threads."""
    run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "node", *NODE_FLAGS, str(SCRIPT), *map(str, modules)],
                         capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if not found:
        raise RuntimeError(f"callgrind printed no total:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    modules = {"fault-injector": bench.wasm_module_path(), "empty filter": bench.EMPTY_FILTER}
    if bench.BASELINE:
        modules[bench.BASELINE_LABEL] = bench.BASELINE
    modules.update({Path(m).name: Path(m).resolve() for m in sys.argv[1:]})
    node_alone = instructions([])
    counts = {name: instructions([path]) - node_alone for name, path in modules.items()}
    empty = counts["empty filter"]
    lines = ["| module | bytes | M instructions to compile | against the empty filter |", "|---|---:|---:|---:|"]
    for name, path in modules.items():
        lines.append(f"| {name} | {path.stat().st_size:,} | {counts[name] / 1e6:,.0f} | {counts[name] / empty:.2f}x |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
