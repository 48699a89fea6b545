"""Fixtures for integration tests against a real Envoy.

* ``upstream``: an in-process upstream (harness.start_upstream), fresh per test.
* ``start_envoy``: factory; ``start_envoy(plugin_config="{}", listeners=None, **kw)``
  starts an Envoy in front of ``upstream`` and stops it after the test.
* ``envoy``: ``start_envoy()`` with config ``{}``.
* ``reused_envoy`` (with ``reused_upstream``): an Envoy with config ``{}`` (or the module's
  ``REUSED_LISTENERS``, a list of harness.ListenerSpec, and the harness.Envoy arguments of
  its module-scoped fixture ``reused_envoy_options``) started once per test module and
  shared by the tests that ask for it, each of which gets it as a fresh one would be: no
  policy, rule or binding (``DELETE /injector``), every counter at zero (admin
  ``/reset_counters``, once the counts of the test before and of the DELETE have reached
  Envoy), an upstream count of zero. For tests of one call's effect; an Envoy start costs
  seconds of CPU.

When a test fails, the tail of each of its Envoys' logs is added to the failure
report. A test whose Envoy died on its own, or whose log shows a wasm panic,
fails at teardown (mark a test ``wasm_panic_ok`` to allow panics).
"""

from __future__ import annotations

import pytest

from harness import Envoy, ListenerSpec, custom_metrics, start_upstream

_ENVOYS = pytest.StashKey[list]()
_REPORTS = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wasm_panic_ok: the test expects the wasm module to panic")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    if report.failed:
        for envoy in item.stash.get(_ENVOYS, []):
            report.sections.append(
                (f"envoy log, last 200 lines ({envoy.log_path})", envoy.log_tail(200))
            )
    return report


def _failed(item: pytest.Item) -> bool:
    return any(r.failed for r in item.stash.get(_REPORTS, {}).values())


@pytest.fixture
def upstream():
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture
def start_envoy(request: pytest.FixtureRequest, upstream, tmp_path_factory):
    """Factory: ``start_envoy(plugin_config="{}", *, listeners=None, **Envoy kwargs) -> Envoy``.

    ``listeners`` (a list of harness.ListenerSpec) replaces ``plugin_config``;
    other keyword arguments go to harness.Envoy (concurrency, extra_args,
    access_log, component_log_level, upstream_port, upstream_options, clusters,
    node, module, ...).
    """
    envoys: list[Envoy] = request.node.stash.setdefault(_ENVOYS, [])

    def start(plugin_config: str | dict = "{}", *, listeners=None, **kw) -> Envoy:
        kw.setdefault("upstream_port", upstream.port)
        kw.setdefault("workdir", tmp_path_factory.mktemp("envoy"))
        envoy = Envoy(listeners or [ListenerSpec(plugin_config=plugin_config)], **kw)
        envoys.append(envoy)
        return envoy.start()

    yield start

    problems = []
    for envoy in envoys:
        if envoy.proc is not None and not envoy.alive() and not envoy._stopped:
            problems.append(f"envoy {envoy.ports} exited on its own with code {envoy.proc.returncode}")
        envoy.stop()
        if not request.node.get_closest_marker("wasm_panic_ok"):
            panics = envoy.wasm_panics()
            if panics:
                problems.append(f"wasm panic in envoy {envoy.ports}:\n" + "\n".join(panics[:20]))
    if problems and not _failed(request.node):
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def envoy(start_envoy) -> Envoy:
    """An Envoy with plugin config ``{}`` (no faults) in front of ``upstream``."""
    return start_envoy()


@pytest.fixture(scope="module")
def reused_upstream():
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reused_envoy_options() -> dict:
    """harness.Envoy arguments of the module's shared Envoy (a module overrides it)."""
    return {}


@pytest.fixture(scope="module")
def _module_envoy(request: pytest.FixtureRequest, reused_upstream, reused_envoy_options, tmp_path_factory):
    listeners = getattr(request.module, "REUSED_LISTENERS", None) or [ListenerSpec(plugin_config="{}")]
    options = {"upstream_port": reused_upstream.port, **reused_envoy_options}
    envoy = Envoy(listeners, workdir=tmp_path_factory.mktemp("envoy"), **options)
    envoy.start()
    yield envoy
    envoy.stop()


@pytest.fixture
def reused_envoy(request: pytest.FixtureRequest, _module_envoy: Envoy, reused_upstream) -> Envoy:
    """The module's shared Envoy with config ``{}``, as fresh (see the module docstring)."""
    envoy = _module_envoy
    if not envoy.alive():
        pytest.fail(f"the module's shared envoy {envoy.ports} exited with code {envoy.proc.returncode}")
    request.node.stash.setdefault(_ENVOYS, []).append(envoy)
    panics_before = len(envoy.wasm_panics())
    assert envoy.control(method="DELETE").status == 200
    custom_metrics(envoy)  # the counts of the test before, and the DELETE's, have reached Envoy
    assert envoy.admin("/reset_counters", method="POST").status == 200
    reused_upstream.reset()
    yield envoy
    if len(envoy.wasm_panics()) > panics_before and not _failed(request.node):
        pytest.fail(f"wasm panic in envoy {envoy.ports}:\n" + "\n".join(envoy.wasm_panics()[panics_before:][:20]), pytrace=False)
