"""The /injector control route in a real Envoy: seed calls, bad input, who may call it."""

import json
import time

import pytest

from harness import EnvoyStartError, ListenerSpec, request


def test_get_shows_the_start_policy_and_never_reaches_upstream(envoy, upstream):
    shown = envoy.policy()
    configuration = shown.pop("configuration")
    assert shown == {
        "rules": [],
        "policy": {"policy": "none", "percentage": 20.0, "timeout": "10s", "status": 503, "boundedRetries": 10},
        "clients": [],
    }
    # The configuration in force: a hash of its bytes, and no label unless it sets "version".
    assert len(configuration["id"]) == 16 and configuration["version"] is None
    assert upstream.count == 0


@pytest.mark.parametrize(
    "query, expected",
    [
        ("policy=simpleResponse", {"policy": "simpleResponse"}),
        ("timeout=0.25", {"policy": "delayResponse", "timeout": "250ms"}),
        ("timeout=2s", {"policy": "delayResponse", "timeout": "2s"}),
        ("policy=delayResponse", {"policy": "delayResponse", "timeout": "10s"}),
        ("policy=timeoutTest", {"policy": "delayResponse", "timeout": "10s"}),
        ("status=404", {"policy": "statusResponse", "status": 404}),
        ("policy=statusResponse", {"policy": "statusResponse", "status": 503}),
        ("boundedRetries=3", {"policy": "boundedRetries", "boundedRetries": 3}),
        ("policy=boundedRetries&status=429", {"policy": "boundedRetries", "status": 429}),
        ("percentage=12.5", {"percentage": 12.5}),
        ("status=500&percentage=100", {"policy": "statusResponse", "status": 500, "percentage": 100.0}),
    ],
)
def test_seed_calls_set_the_default_policy(reused_envoy, query, expected):
    envoy = reused_envoy
    status, _, body = envoy.control(query)
    assert status == 200
    shown = json.loads(body)["policy"]
    assert {k: shown[k] for k in expected} == expected
    assert envoy.policy()["policy"] == shown


def test_parameters_not_given_keep_their_value_and_reset_starts_over(envoy):
    envoy.control("timeout=2&percentage=50")
    envoy.control("status=500")
    envoy.control("ip=127.0.0.9&status=418")
    after = envoy.policy()
    assert after["policy"] == {"policy": "statusResponse", "percentage": 50.0, "timeout": "2s", "status": 500, "boundedRetries": 10}
    assert after["clients"][0]["ip"] == "127.0.0.9/32"
    envoy.control("reset")
    assert envoy.policy() == json.loads(envoy.control().body)
    assert envoy.policy()["clients"] == [] and envoy.policy()["policy"]["policy"] == "none"


@pytest.mark.parametrize(
    "query, needle",
    [
        ("foo=1", "unknown parameter 'foo'"),
        ("policy=chaos", "policy: 'chaos'"),
        ("status=700", "from 200 to 599"),
        ("status=99", "status: '99'"),
        ("percentage=150", "from 0 to 100"),
        ("percentage=-5", "percentage: '-5'"),
        ("timeout=-1", "timeout: '-1'"),
        ("timeout=later", "timeout: 'later'"),
        ("timeout=2h", "timeout: '2h'"),
        ("ip=300.1.1.1", "ip: '300.1.1.1'"),
        ("ip=10.0.0.0/99", "CIDR"),
        ("boundedRetries=x", "boundedRetries: 'x'"),
        ("status=%FF", "not UTF-8"),
        ("status=500&status=502", "more than once"),
        ("timeout=1&status=500", "different faults"),
        # A valid change next to a bad one: nothing at all is applied.
        ("percentage=100&status=999", "status: '999'"),
    ],
)
def test_bad_calls_answer_400_and_change_nothing(reused_envoy, reused_upstream, query, needle):
    envoy, upstream = reused_envoy, reused_upstream
    assert envoy.control("status=502&percentage=30").status == 200
    assert envoy.control("ip=127.0.0.7&timeout=1").status == 200
    before = envoy.policy()
    status, headers, body = envoy.control(query)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert needle in json.loads(body)["error"]
    assert envoy.policy() == before
    assert upstream.count == 0
    assert envoy.metrics()["control_refused"] == 1


def test_non_allowed_client_gets_403_and_changes_nothing(start_envoy, upstream):
    envoy = start_envoy({"control": {"allowed_cidrs": ["127.0.0.1/32"]}})
    status, _, body = envoy.control("status=500&percentage=100", source_ip="127.0.0.2")
    assert status == 403
    assert "allowed" in json.loads(body)["error"]
    assert envoy.policy()["policy"]["policy"] == "none"
    assert request(envoy.port, "/x", source_ip="127.0.0.2").status == 200
    assert envoy.metrics()["control_refused"] == 1
    assert "control call refused (403)" in envoy.log_text()


def test_token_is_required_when_configured(start_envoy):
    envoy = start_envoy({"control": {"token": "s3cret"}})
    assert envoy.control("status=500").status == 401
    assert envoy.control("status=500", headers={"authorization": "Bearer wrong"}).status == 401
    ok = envoy.control("status=500", headers={"authorization": "Bearer s3cret"})
    assert ok.status == 200 and json.loads(ok.body)["policy"]["status"] == 500


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_the_bearer_scheme_is_read_in_any_case(start_envoy, http2):
    """RFC 9110, 11.1: the scheme is case-insensitive; the token is not."""
    envoy = start_envoy({"control": {"token": "s3cret"}})
    for i, scheme in enumerate(["bearer", "BEARER", "bEaReR"]):
        answer = request(envoy.port, f"/injector?status={501 + i}", headers={"authorization": f"{scheme} s3cret"}, http2=http2)
        assert answer.status == 200 and json.loads(answer.body)["policy"]["status"] == 501 + i, (scheme, answer)
    assert request(envoy.port, "/injector", headers={"authorization": "Bearer S3CRET"}, http2=http2).status == 401


def test_other_methods_are_refused(envoy):
    status, headers, _ = envoy.control("status=500", method="PUT")
    assert status == 405 and headers["allow"] == "GET, POST, DELETE"
    assert envoy.policy()["policy"]["policy"] == "none"


def test_a_change_is_answered_once_every_worker_has_it(envoy):
    # A write reaches the other workers as a notice on their queues, and the call that wrote
    # is answered only when all have acknowledged it: no request sent after the answer, on
    # either worker, meets the old policy.
    clients = [envoy.client() for _ in range(16)]  # enough that both workers hold some
    try:
        assert {c.get("/warm").status for c in clients} == {200}
        for round in range(10):
            on = round % 2 == 0
            started = time.monotonic()
            answer = envoy.control("status=503&percentage=100" if on else "policy=none")
            took = time.monotonic() - started
            assert answer.status == 200, answer.body
            assert "x-fault-injector-unconfirmed" not in answer.headers
            # A worker that never acknowledges holds the answer 1 s, then marks it unconfirmed.
            assert took < 0.9, f"answered after {took:.3f}s: a worker did not acknowledge"
            assert {c.get(f"/{round}").status for c in clients} == ({503} if on else {200}), round
    finally:
        for c in clients:
            c.close()
    assert "did not confirm" not in envoy.log_text()


def test_control_off_passes_the_path_through_and_a_control_listener_shares_the_policy(start_envoy, upstream):
    envoy = start_envoy(
        listeners=[
            ListenerSpec({"control": {"enabled": False}}),
            ListenerSpec({}, name="control"),
        ]
    )
    data = envoy.port
    passed = envoy.control("status=500")
    assert passed.status == 200 and passed.body.startswith(b"upstream GET /injector")
    assert envoy.control("status=418&percentage=100", listener=1).status == 200
    assert request(data, "/app").status == 418
    assert request(data, "/app").headers["x-fault-injected"] == "statusResponse"


def marking(key="fault_injector.control"):
    """Envoy's set_filter_state network filter, putting `key` on every connection of its
    listener, as envoy/sidecar.yaml does on its control listener."""
    return {
        "name": "envoy.filters.network.set_filter_state",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
            "on_new_connection": [{"object_key": key, "factory_key": "envoy.string",
                                   "format_string": {"text_format_source": {"inline_string": "1"}}}],
        },
    }


def test_control_filter_state_serves_the_route_only_on_marked_connections(start_envoy, upstream):
    config = {"control": {"filter_state": "fault_injector.control"}}
    envoy = start_envoy(listeners=[ListenerSpec(config), ListenerSpec(config, name="control", network_filters=[marking()])])
    data = envoy.port
    passed = envoy.control("status=500&percentage=100")
    assert passed.status == 200 and passed.body == b"upstream GET /injector?status=500&percentage=100\n"
    assert upstream.count == 1
    assert envoy.control("status=418&percentage=100", listener=1).status == 200
    assert request(data, "/app").status == 418
    assert envoy.policy(listener=1)["policy"]["status"] == 418
    # A mark under another key is no mark.
    other = start_envoy(listeners=[ListenerSpec(config, vm_id="other", network_filters=[marking("x.other")])])
    assert other.control("status=500").body.startswith(b"upstream GET /injector")


def test_moved_control_path(start_envoy, upstream):
    envoy = start_envoy({"control": {"path": "/_fault"}})
    assert envoy.control("status=500&percentage=100", path="/_fault").status == 200
    assert envoy.control().status == 500


@pytest.mark.parametrize(
    "config, needle",
    [
        ('{"polcy": {}}', "unknown field `polcy`"),
        ('{"policy": {"status": 700}}', "policy: status: '700'"),
        ('{"control": {"allowed_cidrs": ["nope"]}}', "control.allowed_cidrs: 'nope'"),
        ("not json", "invalid plugin configuration"),
        ('{"control": {"filter_state": "a b"}}', "control.filter_state: 'a b' is not accepted"),
        ('{"control": {"token": " "}}', "control.token: a blank token"),
        ('{"control": {"token": "\\t"}}', "control.token: a blank token"),
        ('{"control": {"allowed_hosts": ["injector:8282"]}}', "control.allowed_hosts: 'injector:8282' is not accepted"),
    ],
)
def test_bad_plugin_configuration_is_refused_with_the_key(start_envoy, config, needle):
    with pytest.raises(EnvoyStartError) as err:
        start_envoy(config)
    assert needle in err.value.log


def test_configured_start_policy_and_canned_response(start_envoy, upstream):
    envoy = start_envoy(
        {
            "policy": {"policy": "simpleResponse", "percentage": 100},
            "simple_response": {"status": 201, "headers": [["x-canned", "yes"]], "body": "canned\n"},
            "clients": [{"ip": "127.0.0.3", "policy": "none"}],
        }
    )
    status, headers, body = request(envoy.port, "/a")
    assert (status, body, headers["x-canned"], headers["x-fault-injected"]) == (201, b"canned\n", "yes", "simpleResponse")
    assert request(envoy.port, "/a", source_ip="127.0.0.3").status == 200
    envoy.control("status=503")
    envoy.control("reset")
    assert envoy.policy()["policy"]["policy"] == "simpleResponse"
    assert upstream.count == 1
