#!/usr/bin/env bash
# The benchmark, in one command: installs wrk, nginx and h2load (nghttp2-client) if
# missing, builds the filter and the empty filter, then runs bench/bench.py, which prints
# the results and writes BENCHMARKS.md. Takes about 5 minutes with the defaults; the knobs
# (BENCH_ROUNDS, BENCH_SECONDS, ...) are described at the top of bench/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
. scripts/setup.sh
main all
apt_install wrk nginx nghttp2-client
./build.sh
./build.sh --example empty_filter
exec .venv/bin/python bench/bench.py "$@"
