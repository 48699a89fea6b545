#!/usr/bin/env bash
# The benchmark, in one command: installs wrk, nginx and h2load (nghttp2-client) if
# missing, builds the filter and the empty filter, then runs bench/bench.py, which prints
# the results and writes BENCHMARKS.md. Takes about 5 minutes with the defaults; the knobs
# (BENCH_ROUNDS, BENCH_SECONDS, ...) are described at the top of bench/bench.py.
# `bench/run.sh instructions` counts instructions per request instead (bench/instructions.py).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
. scripts/setup.sh
main all
apt_install wrk nginx nghttp2-client
./build.sh
./build.sh --example empty_filter
if [[ "${1:-}" == instructions ]]; then
    # Instructions per request under callgrind: repeatable where wall-clock ratios are not.
    apt_install valgrind
    shift
    exec .venv/bin/python bench/instructions.py "$@"
fi
exec .venv/bin/python bench/bench.py "$@"
