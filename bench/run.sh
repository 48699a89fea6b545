#!/usr/bin/env bash
# The benchmark, in one command: installs wrk, nginx, h2load (nghttp2-client) and valgrind
# if missing, builds the filter and the empty filter, then runs bench/bench.py (wall clock:
# prints the results and writes BENCHMARKS.md) and bench/instructions.py (instructions per
# request under callgrind, added to BENCHMARKS.md). Takes about 17 minutes with the
# defaults; the knobs (BENCH_ROUNDS, BENCH_SECONDS, ...) are described at the top of
# bench/bench.py. `bench/run.sh instructions` runs only the second; `bench/run.sh startup`
# runs bench/startup.py instead (start-up time, CPU and memory against the empty filter);
# `bench/run.sh compile` bench/compile.py (the instructions V8 takes to compile the module,
# the repeatable measure of start-up, ~1 minute); `bench/run.sh delays` only
# bench/delays.py (held requests side by side with Envoy's fault filter, ~2 minutes);
# `bench/run.sh throttle` only bench/throttle.py (throttled downloads, likewise, ~12
# minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
. scripts/setup.sh
main all
apt_install wrk nginx nghttp2-client valgrind
./build.sh
./build.sh --example empty_filter
if [[ "${1:-}" == delays || "${1:-}" == throttle ]]; then
    script="bench/$1.py"
    shift
    exec .venv/bin/python "$script" "$@"
fi
if [[ "${1:-}" == instructions ]]; then
    shift
    exec .venv/bin/python bench/instructions.py "$@"
fi
if [[ "${1:-}" == compile ]]; then
    shift
    needs_debian "bench/compile.py compiles the module with Node's V8" nodejs
    exec .venv/bin/python bench/compile.py "$@"
fi
if [[ "${1:-}" == startup ]]; then
    shift
    exec .venv/bin/python bench/startup.py "$@"
fi
.venv/bin/python bench/bench.py "$@"
exec .venv/bin/python bench/instructions.py
