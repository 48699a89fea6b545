"""The client is the connection's peer, never a header: `X-Forwarded-For` opens no
control route, escapes no binding and impersonates no client, over HTTP/1.1 and HTTP/2,
on the harness's listeners (which set `use_remote_address` as the shipped ones do), on
the shipped envoy/*.yaml run as written, and on a listener without `use_remote_address`
(where Envoy hands the filter the header's address with port 0, and the filter treats it
as unknown)."""

import copy
import json

import pytest
import yaml

from harness import REPO_ROOT, ListenerSpec, request, wasm_module_path
from transcripts import Demo

CHECKOUT = "/checkout"
PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
# A listener as shipped (harness default) and one that leaves use_remote_address unset.
UNSET = {"use_remote_address": None}


def policy_name(envoy) -> str:
    return envoy.policy()["policy"]["policy"]


@PROTOCOLS
def test_forwarded_for_does_not_open_the_control_route(start_envoy, upstream, http2):
    envoy = start_envoy({"control": {"allowed_cidrs": ["127.0.0.1/32"]}})
    spoof = {"x-forwarded-for": "127.0.0.1"}
    answer = request(envoy.port, "/injector?status=500&percentage=100", source_ip="127.0.0.2", headers=spoof, http2=http2)
    assert answer.status == 403, answer
    assert "control.allowed_cidrs" in json.loads(answer.body)["error"]
    assert policy_name(envoy) == "none"
    assert envoy.metrics()["policy_changes"] == 0
    assert request(envoy.port, "/app", source_ip="127.0.0.2", http2=http2).status == 200
    # The peer itself is still served, whatever it forwards.
    ok = request(envoy.port, "/injector", source_ip="127.0.0.1", headers={"x-forwarded-for": "10.9.9.9"}, http2=http2)
    assert ok.status == 200
    assert upstream.count == 1


@PROTOCOLS
def test_forwarded_for_neither_escapes_nor_impersonates_a_bound_client(start_envoy, upstream, http2):
    envoy = start_envoy()
    # 127.0.0.3 is faulted by a per-client binding, 127.0.0.5 by a rule matching its address.
    envoy.policy(document={"rules": [{"match": {"clients": ["127.0.0.5"]}, "fault": {"abort": {"status": 504}}}]},
                 method="GET")
    envoy.policy("ip=127.0.0.3&status=503&percentage=100")
    get = lambda source, xff: request(envoy.port, CHECKOUT, source_ip=source, headers={"x-forwarded-for": xff},
                                      http2=http2).status
    for bound, status in (("127.0.0.3", 503), ("127.0.0.5", 504)):
        # The bound client does not escape by naming another address...
        assert get(bound, "127.0.0.9") == status
        # ...and another client does not get its faults by naming the bound one.
        assert get("127.0.0.4", bound) == 200


@PROTOCOLS
def test_without_use_remote_address_a_forwarded_address_is_unknown(start_envoy, upstream, http2):
    """Envoy takes the client from X-Forwarded-For here: control calls that carry it are
    refused with a message naming use_remote_address, and no binding or client rule applies
    to them; calls without the header are still the peer's."""
    envoy = start_envoy(listeners=[ListenerSpec(plugin_config={"control": {"allowed_cidrs": ["127.0.0.1/32"]}},
                                                hcm_options=UNSET)])
    assert "use_remote_address" not in json.dumps(envoy.bootstrap)
    for source in ("127.0.0.1", "127.0.0.2"):
        answer = request(envoy.port, "/injector?status=500&percentage=100", source_ip=source,
                         headers={"x-forwarded-for": "127.0.0.1"}, http2=http2)
        assert answer.status == 403, answer
        assert "use_remote_address: true" in json.loads(answer.body)["error"]
    assert policy_name(envoy) == "none"
    assert request(envoy.port, "/injector", source_ip="127.0.0.2", http2=http2).status == 403
    envoy.policy("ip=127.0.0.3&status=503&percentage=100")
    get = lambda source, xff: request(envoy.port, CHECKOUT, source_ip=source, headers={"x-forwarded-for": xff},
                                      http2=http2).status
    assert get("127.0.0.4", "127.0.0.3") == 200  # no impersonation
    assert get("127.0.0.3", "127.0.0.3") == 200  # a header-derived address binds nobody
    assert request(envoy.port, CHECKOUT, source_ip="127.0.0.3", http2=http2).status == 503
    assert envoy.metrics()["policy_changes"] == 1


@PROTOCOLS
def test_trusted_hops_take_the_client_a_trusted_proxy_forwarded(start_envoy, upstream, http2):
    envoy = start_envoy({"xff_num_trusted_hops": 1, "control": {"allowed_cidrs": ["10.1.2.3/32"]}})
    call = lambda xff: request(envoy.port, "/injector", source_ip="127.0.0.2", http2=http2,
                               headers={"x-forwarded-for": xff} if xff else {}).status
    assert call("10.1.2.3") == 200  # what the one trusted proxy saw
    assert call("10.1.2.3, 10.9.9.9") == 403  # only one hop is trusted: the client is 10.9.9.9
    assert call(None) == 403  # no proxy: the peer, 127.0.0.2
    assert call("nonsense") == 403


# ---------------------------------------------------------------- the shipped configurations


def shipped_hcms(doc: dict) -> list[dict]:
    return [f["typed_config"] for listener in doc["static_resources"]["listeners"]
            for chain in listener["filter_chains"] for f in chain["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]


@pytest.mark.parametrize("name", ["demo.yaml", "sidecar.yaml", "sidecar-capture.yaml"])
def test_every_shipped_listener_uses_the_remote_address(name):
    hcms = shipped_hcms(yaml.safe_load((REPO_ROOT / "envoy" / name).read_text()))
    assert hcms and all(hcm.get("use_remote_address") is True for hcm in hcms)
    assert not [hcm for hcm in hcms if "xff_num_trusted_hops" in hcm or hcm.get("skip_xff_append")]


def locked_to_loopback_one(name: str, tmp_path) -> Demo:
    """The shipped file as written, but for the module path, the ports, and its plugin
    configuration's allowed_cidrs narrowed to 127.0.0.1/32; the sidecar's filter (read by
    ECDS from a pod's volume) inlined from envoy/fault-injector.yaml, without its
    control.port (the port moves; its control.filter_state still marks the control
    listener), and without the health listener and its admin cluster (whose port the
    runner would take for the upstream's)."""
    doc = yaml.safe_load((REPO_ROOT / "envoy" / name).read_text())
    resources = doc["static_resources"]
    resources["listeners"] = [li for li in resources["listeners"] if li["name"] != "health"]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != "envoy_admin"]
    filter_resource = yaml.safe_load((REPO_ROOT / "envoy/fault-injector.yaml").read_text())["resources"][0]
    for hcm in shipped_hcms(doc):
        for f in hcm.get("http_filters", []):
            if "config_discovery" in f:
                del f["config_discovery"]
                f["typed_config"] = copy.deepcopy(filter_resource["typed_config"])
            config = f.get("typed_config", {}).get("config", {})
            if "configuration" in config:
                plugin = json.loads(config["configuration"]["value"])
                if plugin.get("direction") != "outbound":
                    plugin.setdefault("control", {})["allowed_cidrs"] = ["127.0.0.1/32"]
                    plugin["control"].pop("port", None)
                config["configuration"]["value"] = json.dumps(plugin)
                config["vm_config"]["code"]["local"]["filename"] = str(wasm_module_path())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return Demo(path)


@pytest.mark.parametrize("name, control_port", [("demo.yaml", 10000), ("sidecar.yaml", 8282)])
def test_shipped_configs_refuse_a_forwarded_client(tmp_path, name, control_port):
    demo = locked_to_loopback_one(name, tmp_path).start()
    try:
        port = demo.ports[control_port]
        for http2 in (False, True):
            spoofed = request(port, "/injector?status=500&percentage=100", source_ip="127.0.0.2",
                              headers={"x-forwarded-for": "127.0.0.1"}, http2=http2)
            assert spoofed.status == 403, (http2, spoofed)
            state = request(port, "/injector", source_ip="127.0.0.1", http2=http2)
            assert state.status == 200 and json.loads(state.body)["policy"]["policy"] == "none"
    finally:
        demo.stop()
