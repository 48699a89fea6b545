"""The harness itself works: a real Envoy loads the filter and proxies to the upstream,
and the examples in its docstring run."""

import textwrap

import harness
from harness import (
    BUFFER_FILTER,
    REPO_ROOT,
    ListenerSpec,
    render_bootstrap,
    request,
    response_body,
    stats,
    upstream_stats,
    validate_config,
    wasm_module_path,
)


def test_request_with_empty_config_reaches_upstream(envoy, upstream):
    status, headers, body = request(envoy.port, "/smoke?x=1")

    assert status == 200
    assert body == response_body("GET", "/smoke?x=1")
    assert headers["server"] == "envoy"
    assert upstream.count == 1
    assert upstream_stats(upstream.port) == {"requests": 1}
    assert stats(envoy)["http.ingress_http.downstream_rq_2xx"] == 1


def test_other_loopback_sources_and_keepalive(envoy, upstream):
    assert request(envoy.port, "/from-2", source_ip="127.0.0.2").status == 200
    with envoy.client(source_ip="127.0.0.3") as client:
        statuses = {client.get(f"/n{i}").status for i in range(200)}

    assert statuses == {200}
    assert client.connections_opened == 1
    assert upstream.count == 201


def test_control_listener_shares_the_vm(start_envoy, upstream):
    envoy = start_envoy(
        listeners=[ListenerSpec("{}"), ListenerSpec("{}", name="control")]
    )

    assert request(envoy.ports[0], "/data").status == 200
    assert request(envoy.ports[1], "/control").status == 200
    assert upstream.count == 2
    assert stats(envoy)["http.control.downstream_rq_2xx"] == 1


def test_demo_config_is_valid():
    result = validate_config(REPO_ROOT / "envoy" / "demo.yaml")

    assert result.returncode == 0, result.stdout


def code_blocks(doc: str) -> list[str]:
    """The literal blocks of a reST docstring: the indented lines after each line ending in "::"."""
    lines = doc.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.endswith("::"):
            block = []
            for following in lines[i + 1:]:
                if following.strip() and not following.startswith(" "):
                    break
                block.append(following)
            blocks.append(textwrap.dedent("\n".join(block)))
    return blocks


def test_the_docstring_examples_run(start_envoy, upstream):
    in_pytest, outside = code_blocks(harness.__doc__)
    names: dict = {}
    exec(in_pytest, names)
    names["test_abort"](start_envoy, upstream)
    exec(outside, {})


def test_declared_extras_take_their_places_in_the_listener():
    marker = {"name": "envoy.filters.network.set_filter_state", "typed_config": {}}
    first = {"name": "envoy.filters.http.first", "typed_config": {}}
    spec = ListenerSpec("{}", http_filters_before=[first], http_filters_after=[BUFFER_FILTER], network_filters=[marker],
                        listener_options={"tcp_backlog_size": 4096}, hcm_options={"stat_prefix": "mine"})
    alone = ListenerSpec(http_filters=[])
    bootstrap = render_bootstrap([spec, alone], [1001, 1002], 1003, 1004, wasm_module_path())
    with_extras, without = bootstrap["static_resources"]["listeners"]
    network = with_extras["filter_chains"][0]["filters"]
    assert [f["name"] for f in network] == ["envoy.filters.network.set_filter_state", "envoy.filters.network.http_connection_manager"]
    hcm = network[1]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.first", "envoy.filters.http.wasm", "envoy.filters.http.buffer", "envoy.filters.http.router"]
    assert hcm["stat_prefix"] == "mine" and with_extras["tcp_backlog_size"] == 4096
    alone_filters = without["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in alone_filters] == ["envoy.filters.http.router"]
