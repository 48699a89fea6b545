"""Failure of the module, in a real Envoy (2 workers): what traffic sees when the filter
cannot be loaded, under Envoy's `failure_policy` (Istio's `failStrategy`).

The module comes from a `remote` code source (an HTTP server on loopback, checked by
sha256), as when Envoy fetches it itself. When the fetch fails (500, wrong sha256), the
bytes are not Wasm, or the module refuses its configuration, Envoy still starts:
FAIL_OPEN leaves the filter out and traffic goes to the upstream untouched; FAIL_CLOSED
(also the default) answers every request 503 and forwards none. A broken *local* module,
by contrast, stops Envoy from starting whatever the policy; and when the filter comes by
ECDS (as in envoy/sidecar.yaml), a refused first version leaves no filter configuration,
so requests get 500 unless `config_discovery` has a pass-through `default_config`.
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import EnvoyStartError, ListenerSpec, cluster, request, response_body, wasm_module_path

FAILURE_LINE = "Plugin fault_injector failed to load"


class ModuleServer(ThreadingHTTPServer):
    """Serves `body` at any path (or answers 500 when it is None) and counts the fetches."""

    daemon_threads = True

    def __init__(self, body):
        self.body, self.fetches = body, 0
        super().__init__(("127.0.0.1", 0), _ModuleHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ModuleHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (stdlib name)
        self.server.fetches += 1
        body = self.server.body
        self.send_response(500 if body is None else 200)
        self.send_header("content-length", "0" if body is None else str(len(body)))
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def module_server():
    servers = []

    def serve(body):
        servers.append(ModuleServer(body))
        return servers[-1]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def start_with_remote_module(start_envoy, server, sha256, policy, plugin_config="{}"):
    """An Envoy whose filter fetches its module from `server`, with `policy` merged into
    the filter's PluginConfig; one fetch, no retry, so a failure is final at once."""
    remote = {
        "http_uri": {"uri": f"http://127.0.0.1:{server.server_port}/fault_injector.wasm", "cluster": "module_server", "timeout": "5s"},
        "sha256": sha256,
        "retry_policy": {"num_retries": 0},
    }
    vm_config = {"vm_id": "fault_injector", "runtime": "envoy.wasm.runtime.v8", "code": {"remote": remote}}
    spec = ListenerSpec(plugin_config=plugin_config, wasm_overrides={"vm_config": vm_config, **policy})
    return start_envoy(listeners=[spec], clusters=[cluster("module_server", server.server_port)])


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def module():
    return wasm_module_path().read_bytes()


# Each way the module can fail to load: (what is served, the sha256 Envoy expects, plugin configuration).
FAILURES = {
    "fetch answered 500": lambda: (None, sha256(module()), "{}"),
    "sha256 mismatch": lambda: (module(), sha256(b"another module"), "{}"),
    "not a wasm module": lambda: (b"\0asm but not really", sha256(b"\0asm but not really"), "{}"),
    "configuration refused": lambda: (module(), sha256(module()), '{"no_such_key": 1}'),
}

FAIL_OPEN = {"failure_policy": "FAIL_OPEN"}
FAIL_CLOSED = {"failure_policy": "FAIL_CLOSED"}


def test_a_served_module_loads_and_runs(start_envoy, upstream, module_server):
    # The control case: the same setup with a good module gives a working filter, so the
    # failures below are the module's, not the setup's.
    server = module_server(module())
    envoy = start_with_remote_module(start_envoy, server, sha256(module()), FAIL_OPEN)
    response = envoy.control("status=418&percentage=100")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    assert request(envoy.port, "/x").status == 418
    assert upstream.count == 0
    assert server.fetches == 1
    assert FAILURE_LINE not in envoy.log_text()


@pytest.mark.parametrize("failure", FAILURES)
def test_fail_open_passes_traffic_untouched_when_the_module_cannot_load(start_envoy, upstream, module_server, failure):
    served, expected_sha, plugin_config = FAILURES[failure]()
    server = module_server(served)
    envoy = start_with_remote_module(start_envoy, server, expected_sha, FAIL_OPEN, plugin_config)
    assert server.fetches == 1
    assert FAILURE_LINE in envoy.log_text()
    for i in range(20):  # new connections: both workers
        path = f"/data/{i}?q={i}"
        r = request(envoy.port, path, headers={"x-probe": str(i)})
        assert (r.status, r.body) == (200, response_body("GET", path))
        assert "x-fault-injected" not in r.headers
        method, seen_path, headers, _ = upstream.requests[-1]
        assert (method, seen_path, headers.get("x-probe")) == ("GET", path, str(i))
    # Without the filter there is no control route either: nobody can switch a fault on,
    # and /injector is the application's.
    r = envoy.control("status=500&percentage=100")
    assert (r.status, r.body) == (200, response_body("GET", "/injector?status=500&percentage=100"))
    assert request(envoy.port, "/after").status == 200
    assert upstream.count == 22


@pytest.mark.parametrize("failure", FAILURES)
def test_fail_closed_refuses_traffic_when_the_module_cannot_load(start_envoy, upstream, module_server, failure):
    served, expected_sha, plugin_config = FAILURES[failure]()
    server = module_server(served)
    envoy = start_with_remote_module(start_envoy, server, expected_sha, FAIL_CLOSED, plugin_config)
    assert FAILURE_LINE in envoy.log_text()
    for path in [f"/data/{i}" for i in range(20)] + ["/injector"]:
        r = request(envoy.port, path)
        assert (r.status, r.body) == (503, b""), path
    assert upstream.count == 0


@pytest.mark.parametrize("policy", [{"fail_open": True}, {}], ids=["deprecated fail_open", "policy unset"])
def test_other_spellings_of_the_policy(start_envoy, upstream, module_server, policy):
    # Istio before 1.25 sets the deprecated `fail_open`; leaving both unset is FAIL_CLOSED.
    server = module_server(None)
    envoy = start_with_remote_module(start_envoy, server, sha256(module()), policy)
    expected = 200 if policy else 503
    assert {request(envoy.port, f"/p/{i}").status for i in range(10)} == {expected}
    assert upstream.count == (10 if policy else 0)


@pytest.mark.parametrize("broken", ["module", "configuration"])
@pytest.mark.parametrize("policy", [FAIL_OPEN, FAIL_CLOSED], ids=["FAIL_OPEN", "FAIL_CLOSED"])
def test_a_broken_local_module_stops_envoy_whatever_the_policy(start_envoy, tmp_path, policy, broken):
    module_path = wasm_module_path()
    if broken == "module":
        module_path = tmp_path / "broken.wasm"
        module_path.write_bytes(b"\0asm but not really")
    plugin_config = '{"no_such_key": 1}' if broken == "configuration" else "{}"
    spec = ListenerSpec(plugin_config=plugin_config, wasm_overrides=policy)
    with pytest.raises(EnvoyStartError) as started:
        start_envoy(listeners=[spec], module=module_path)
    assert "Unable to create Wasm plugin fault_injector" in started.value.log

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def start_with_ecds(start_envoy, tmp_path, module_path, pass_through_default):
    """An Envoy whose filter configuration comes from a file by ECDS (like envoy/sidecar.yaml),
    naming a local module and FAIL_OPEN; optionally an RBAC filter with no rules (which lets
    every request through) as the default for when no Wasm configuration is accepted."""
    wasm = {
        "name": "fault_injector",
        "root_id": "fault_injector",
        "failure_policy": "FAIL_OPEN",
        "vm_config": {"vm_id": "fault_injector", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module_path)}}},
    }
    resource = {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "name": "fault_injector", "typed_config": {"@type": WASM_TYPE, "config": wasm}}
    ecds = tmp_path / "fault-injector.json"
    ecds.write_text(json.dumps({"resources": [resource]}))
    discovery = {"config_source": {"path_config_source": {"path": str(ecds)}}, "type_urls": [WASM_TYPE]}
    if pass_through_default:
        discovery["type_urls"].append(RBAC_TYPE)
        discovery["default_config"] = {"@type": RBAC_TYPE}

    return start_envoy(listeners=[ListenerSpec(http_filters=[{"name": "fault_injector", "config_discovery": discovery}])],
                       node={"id": "fault-injector-test", "cluster": "fault-injector"})


def ecds_rejected(envoy):
    return envoy.stats().get("extension_config_discovery.http_filter.fault_injector.update_rejected")


@pytest.mark.parametrize("pass_through_default", [True, False], ids=["pass-through default", "no default"])
def test_ecds_with_a_broken_first_module(start_envoy, upstream, tmp_path, pass_through_default):
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm but not really")
    envoy = start_with_ecds(start_envoy, tmp_path, broken, pass_through_default)
    assert ecds_rejected(envoy) == 1
    statuses = {request(envoy.port, f"/p/{i}").status for i in range(10)}
    if pass_through_default:
        assert statuses == {200} and upstream.count == 10
    else:
        # FAIL_OPEN does not help here: the configuration was refused as a whole, so there
        # is no filter to skip, and Envoy answers for the missing one.
        assert statuses == {500} and upstream.count == 0


def test_ecds_pass_through_default_gives_way_to_a_good_module(start_envoy, upstream, tmp_path):
    envoy = start_with_ecds(start_envoy, tmp_path, wasm_module_path(), pass_through_default=True)
    assert ecds_rejected(envoy) == 0
    assert envoy.control("status=418&percentage=100").status == 200
    assert request(envoy.port, "/x").status == 418
    assert upstream.count == 0
