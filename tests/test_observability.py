"""What the faults did, seen from outside (docs/observability.md), on a real Envoy with 2
workers: the access log's fault value, the labelled Prometheus series, the per-rule
counts of GET /injector, and the Grafana dashboard's metrics against a real scrape."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import promql_parser
import pytest
import yaml

from harness import REPO_ROOT, ListenerSpec, file_access_log, request, wait_for

DASHBOARD = REPO_ROOT / "k8s" / "observability" / "grafana-dashboard.json"
# The shipped sidecar's stats_tags, so the test checks the configuration users get.
STATS_CONFIG = yaml.safe_load((REPO_ROOT / "envoy" / "sidecar.yaml").read_text())["stats_config"]
# Histograms reach /stats/prometheus at Envoy's stats flush (5 s by default).
BOOTSTRAP = {"stats_config": STATS_CONFIG, "stats_flush_interval": "1s"}

RULES = {
    "rules": [
        {"name": "checkout", "match": {"path": {"prefix": "/checkout"}}, "fault": {"abort": {"status": 503}}},
        {"name": "teapot", "match": {"path": {"prefix": "/teapot"}}, "fault": {"abort": {"status": 418}}},
        {"match": {"path": {"prefix": "/slow"}}, "fault": {"delay": {"fixed": "150ms"}}},
        {"name": "never", "match": {"path": {"prefix": "/never"}}, "fault": {"abort": {"status": 500}}, "percentage": 0},
    ]
}
PLUGIN = {"header_faults": {"enabled": True}, "stats_flush": "100ms"}


def access_log(path: Path) -> list[dict]:
    """The JSON access log the listener wrote, as the sidecar's format has it, without
    the control call."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if not line["path"].startswith("/injector")]


def access_logs(json_path: Path, text_path: Path) -> dict:
    """envoy/sidecar.yaml's access log, written to `json_path` instead of stdout, and a
    plain-text one of the fault value alone to `text_path`."""
    shipped = yaml.safe_load((REPO_ROOT / "envoy" / "sidecar.yaml").read_text())
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    shipped_format = hcm["access_log"][0]["typed_config"]["log_format"]
    return {
        "access_log": [
            file_access_log(json_path, "", name="json", log_format=shipped_format),
            file_access_log(text_path, "%REQ(:PATH)% %FILTER_STATE(wasm.fault_injector:PLAIN)%\n", name="text"),
        ]
    }


def test_the_access_log_says_which_fault_each_request_got(start_envoy, tmp_path):
    json_log, text_log = tmp_path / "access.json", tmp_path / "access.txt"
    envoy = start_envoy(listeners=[ListenerSpec(plugin_config=PLUGIN, hcm_options=access_logs(json_log, text_log))])
    envoy.policy(document=RULES, method="GET")
    sent = {
        "/slow": "delay rule=2 delay_ms=150",
        "/checkout": "abort rule=checkout status=503",
        "/never": None,  # matched by a rule, sampled out: it passed
        "/plain": None,
        "/header": "abort rule=header status=418",
    }
    for http2 in (False, True):
        for path in sent:
            headers = {"x-fault-abort-status": "418"} if path == "/header" else {}
            request(envoy.port, f"{path}?h2={http2}", headers=headers, http2=http2)
    lines = wait_for(lambda: (lambda got: got if len(got) == 2 * len(sent) else None)(access_log(json_log)), timeout=10)
    for line in lines:
        path, _, http2 = line["path"].partition("?h2=")
        # JSON writes a missing value as null.
        assert line["fault"] == sent[path], line
        assert line["protocol"] == ("HTTP/2" if http2 == "True" else "HTTP/1.1"), line
    # The delayed request took its delay; the aborted one got the rule's status.
    assert all(line["duration_ms"] >= 150 and line["status"] == 200 for line in lines if line["path"].startswith("/slow"))
    assert all(line["status"] == 503 for line in lines if line["path"].startswith("/checkout"))
    # A text format writes it as `-`.
    text = wait_for(lambda: (lambda t: t if len(t) == 2 * len(sent) + 1 else None)(text_log.read_text().splitlines()), timeout=10)
    requests = [line for line in text if not line.startswith("/injector")]
    passed = sorted(line for line in requests if line.endswith(" -"))
    assert passed == sorted(f"{p}?h2={h} -" for p in ("/never", "/plain") for h in (False, True)), text
    assert "/checkout?h2=True abort rule=checkout status=503" in requests, text


def prometheus(envoy) -> dict[str, list[tuple[dict, float]]]:
    """The admin /stats/prometheus scrape: each metric's series, as (labels, value)."""
    series: dict[str, list[tuple[dict, float]]] = {}
    for line in envoy.admin("/stats/prometheus").text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            series.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return series


@pytest.fixture
def mixed_run(start_envoy):
    """An Envoy (2 workers, the sidecar's stats_tags) after a mixed run: 6 aborts by
    `checkout`, 4 by `teapot`, 3 delays by the unnamed rule 2, 5 header aborts (status
    429), 5 requests matched by `never` and sampled out, 7 that no rule matched. Returns
    the Envoy and what was sent per path, once the counts are flushed."""
    envoy = start_envoy(PLUGIN, bootstrap_options=BOOTSTRAP)
    envoy.policy(document=RULES, method="GET")
    started_ms = time.time() * 1000
    sent = {"/checkout": 6, "/teapot": 4, "/slow": 3, "/header": 5, "/never": 5, "/plain": 7}
    for path, count in sent.items():
        headers = {"x-fault-abort-status": "429"} if path == "/header" else {}
        for i in range(count):
            # A new connection each: Envoy spreads them over its 2 workers.
            request(envoy.port, f"{path}/{i}", headers=headers)
    wait_for(lambda: envoy.metrics(settle=False).get("requests_seen") == sum(sent.values()), timeout=5)
    return envoy, sent, started_ms


def test_prometheus_labels_tell_rules_kinds_and_statuses_apart(mixed_run):
    envoy, sent, _ = mixed_run
    scrape = wait_for(lambda: (lambda s: s if "fault_injector_faults_injected" in s else None)(prometheus(envoy)), timeout=5)
    labelled = {(l["rule"], l["kind"], l.get("status")): v for l, v in scrape["fault_injector_faults_injected"]}
    assert labelled == {
        ("checkout", "abort", "503"): 6,
        ("teapot", "abort", "418"): 4,
        ("2", "delay", None): 3,
        ("header", "abort", "429"): 5,
    }
    # The unlabelled totals stay, and the labelled series add up to them.
    total = lambda name: sum(v for _, v in scrape[name])  # noqa: E731
    assert total("fault_injector_aborts_injected") == 15 == sum(v for k, v in labelled.items() if k[1] == "abort")
    assert total("fault_injector_delays_injected") == 3 == sum(v for k, v in labelled.items() if k[1] == "delay")
    assert total("fault_injector_requests_seen") == sum(sent.values())


def test_get_injector_counts_each_rule_across_workers_after_one_flush(mixed_run):
    envoy, sent, started_ms = mixed_run
    # The workers hand their counts over at their next flush (stats_flush 100 ms).
    time.sleep(0.5)
    counts = {c["rule"]: c for c in envoy.policy()["counts"]}
    assert {rule: (c["matched"], c["injected"]) for rule, c in counts.items()} == {
        "checkout": (6, 6),
        "teapot": (4, 4),
        "2": (3, 3),
        "never": (5, 0),
    }
    assert counts["never"]["last_fired_ms"] == 0
    assert all(started_ms - 1000 <= counts[r]["last_fired_ms"] <= time.time() * 1000 for r in ("checkout", "teapot", "2"))
    # A new rule set starts from zero; the document sent back as shown is accepted.
    shown = envoy.policy()
    shown["rules"] = shown["rules"][:1]
    envoy.policy(document=shown, method="GET")
    assert envoy.policy()["counts"] == [{"rule": "checkout", "matched": 0, "injected": 0, "last_fired_ms": 0}]


def metric_names(node) -> set[str]:
    """The metric names a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        return {node.name} if node.name else set()
    names: set[str] = set()
    for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None:
            names |= metric_names(child)
    for arg in getattr(node, "args", None) or []:
        names |= metric_names(arg)
    return names


def test_the_dashboard_plots_only_metrics_a_real_envoy_exports(mixed_run):
    envoy, _, _ = mixed_run
    board = json.loads(DASHBOARD.read_text())
    assert isinstance(board["schemaVersion"], int) and board["title"]
    targets = [t for panel in board["panels"] for t in panel.get("targets", [])]
    assert len(targets) >= 6 and all(panel["type"] and panel["gridPos"] for panel in board["panels"])
    wanted = set()
    for target in targets:
        # Grafana puts a range in place of $__rate_interval before Prometheus sees it.
        wanted |= metric_names(promql_parser.parse(target["expr"].replace("$__rate_interval", "1m")))
    assert {"fault_injector_requests_seen", "fault_injector_faults_injected", "fault_injector_active_delays"} <= wanted
    # Histograms show once Envoy's stats flush (1 s here) merged them.
    scraped = wait_for(lambda: (lambda s: set(s) if wanted <= set(s) else None)(prometheus(envoy)), timeout=5)
    assert wanted <= scraped, wanted - set(prometheus(envoy))
