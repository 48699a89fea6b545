"""k8s/components/sidecar-injection/capture.sh, the capture init container's script, run
with /bin/sh in network namespaces of its own: which nat rules it adds for a port list,
that a rerun replaces them, that `clean` removes its own rules and no others, and that
a port list it does not accept is refused with a clear message and changes nothing.
What the rules do to traffic is in tests/test_pod_netns.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest

from harness import REPO_ROOT, process_slot

SCRIPT = REPO_ROOT / "k8s/components/sidecar-injection/capture.sh"
ENVOY_PORTS = ["15006", "8282", "8090", "9901"]
_serial = itertools.count()


class Netns:
    """An empty network namespace, deleted with its rules by close()."""

    def __init__(self):
        self.name = f"fi-cap-{process_slot()}-{next(_serial)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)

    def run(self, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              timeout=30, env={**os.environ, **(env or {})})

    def capture(self, ports: str | None, *args: str) -> subprocess.CompletedProcess:
        env = {} if ports is None else {"FI_INBOUND_PORTS": ports}
        return self.run("/bin/sh", str(SCRIPT), *args, env=env)

    def nat_rules(self) -> list[str]:
        """The nat table's rules and chains, without iptables-save's comments and counters."""
        out = self.run("iptables-save", "-t", "nat").stdout
        return [line.split(" [")[0] for line in out.splitlines() if not line.startswith("#")]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root; .ci/run runs as root")
    ns = Netns()
    yield ns
    ns.close()


def own_rules(ns: Netns) -> list[str]:
    return [r for r in ns.nat_rules() if "FI_" in r]


def test_listed_ports_go_to_the_inbound_listener(netns):
    res = netns.capture("8080, 9090")
    assert res.returncode == 0, res.stderr
    assert "port(s) 8080 9090 -> Envoy :15006" in res.stdout
    assert own_rules(netns) == [
        ":FI_INBOUND -", ":FI_IN_REDIRECT -",
        "-A PREROUTING -p tcp -j FI_INBOUND",
        "-A FI_INBOUND -p tcp -m tcp --dport 8080 -j FI_IN_REDIRECT",
        "-A FI_INBOUND -p tcp -m tcp --dport 9090 -j FI_IN_REDIRECT",
        "-A FI_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    ]
    # Nothing in OUTPUT: what starts inside the pod is never captured.
    assert not [r for r in netns.nat_rules() if r.startswith("-A OUTPUT")]


@pytest.mark.parametrize("ports", [None, "", "*"])
def test_without_a_list_every_port_but_envoys_own_is_captured(netns, ports):
    res = netns.capture(ports)
    assert res.returncode == 0, res.stderr
    rules = own_rules(netns)
    returns = [r for r in rules if r.endswith("-j RETURN")]
    assert returns == [f"-A FI_INBOUND -p tcp -m tcp --dport {p} -j RETURN" for p in ENVOY_PORTS]
    # The catch-all comes after every exception.
    assert rules.index("-A FI_INBOUND -p tcp -j FI_IN_REDIRECT") > max(rules.index(r) for r in returns)


def test_a_rerun_replaces_the_rules(netns):
    assert netns.capture("8080").returncode == 0
    assert netns.capture("9090").returncode == 0
    rules = own_rules(netns)
    assert rules.count("-A PREROUTING -p tcp -j FI_INBOUND") == 1
    assert [r for r in rules if "--dport" in r] == ["-A FI_INBOUND -p tcp -m tcp --dport 9090 -j FI_IN_REDIRECT"]


def test_clean_removes_its_own_rules_and_no_other(netns):
    assert netns.run("iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "-j", "RETURN").returncode == 0
    assert netns.capture("8080").returncode == 0
    res = netns.capture(None, "clean")
    assert res.returncode == 0 and "rules removed" in res.stdout
    assert own_rules(netns) == []
    assert "-A PREROUTING -p udp -j RETURN" in netns.nat_rules()
    # Clean again, with nothing to remove: still fine.
    assert netns.capture(None, "clean").returncode == 0


@pytest.mark.parametrize("ports, message", [
    ("8080,x", '"x" in "8080,x" is not a port'),
    ("8080,,9090", '"" in "8080,,9090" is not a port'),
    ("0", '"0" in "0" is not a port'),
    ("08080", '"08080" in "08080" is not a port'),
    ("-1", '"-1" in "-1" is not a port'),
    ("70000", "70000 in \"70000\" is above 65535"),
    ("8080,8282", "8282 is one of Envoy's own ports (15006 8282 8090 9901)"),
    ("15006", "15006 is one of Envoy's own ports"),
])
def test_a_bad_port_list_is_refused_and_changes_nothing(netns, ports, message):
    assert netns.capture("8080").returncode == 0
    before = netns.nat_rules()
    res = netns.capture(ports)
    assert res.returncode == 2
    assert res.stderr.startswith("fault-injector capture: FI_INBOUND_PORTS (annotation fault-injector/ports): ")
    assert message in res.stderr, res.stderr
    assert netns.nat_rules() == before


def test_an_unknown_argument_is_refused(netns):
    res = netns.capture("8080", "remove")
    assert res.returncode == 2
    assert 'unknown argument "remove"; expected none (add the rules) or "clean"' in res.stderr
    assert own_rules(netns) == []


# --------------------------------------------------------------------------- outbound

OUTBOUND_RULES = [
    ":FI_OUTBOUND -", ":FI_OUT_REDIRECT -",
    "-A OUTPUT -p tcp -j FI_OUTBOUND",
    "-A FI_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
    "-A FI_OUTBOUND -d 127.0.0.0/8 -j RETURN",
    "-A FI_OUTBOUND -p tcp -m tcp --dport 80 -j FI_OUT_REDIRECT",
    "-A FI_OUTBOUND -p tcp -m tcp --dport 8080 -j FI_OUT_REDIRECT",
    "-A FI_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
]


def outbound_rules(ns: Netns) -> list[str]:
    return [r for r in own_rules(ns) if "FI_OUT" in r]


def test_outbound_ports_go_to_the_outbound_listener_but_envoys_own_connections(netns):
    res = netns.run("/bin/sh", str(SCRIPT), env={"FI_INBOUND_PORTS": "8080", "FI_OUTBOUND_PORTS": "80,8080"})
    assert res.returncode == 0, res.stderr
    assert "outbound TCP to port(s) 80 8080, but UID 1337's and loopback's -> Envoy :15001" in res.stdout
    assert outbound_rules(netns) == OUTBOUND_RULES
    # Envoy's exception comes before any redirect.
    rules = own_rules(netns)
    assert rules.index(OUTBOUND_RULES[3]) < rules.index(OUTBOUND_RULES[5])
    # A rerun replaces them; one without outbound ports removes them, inbound ones stay.
    assert netns.run("/bin/sh", str(SCRIPT), env={"FI_OUTBOUND_PORTS": "80,8080"}).returncode == 0
    assert outbound_rules(netns) == OUTBOUND_RULES
    assert netns.capture("8080").returncode == 0
    assert outbound_rules(netns) == []
    assert "-A PREROUTING -p tcp -j FI_INBOUND" in own_rules(netns)


def test_without_outbound_ports_nothing_outbound_is_captured(netns):
    assert netns.capture(None).returncode == 0
    assert outbound_rules(netns) == []
    assert not [r for r in netns.nat_rules() if r.startswith("-A OUTPUT")]


def test_clean_removes_the_outbound_rules_too(netns):
    assert netns.run("/bin/sh", str(SCRIPT), env={"FI_OUTBOUND_PORTS": "80"}).returncode == 0
    assert netns.capture(None, "clean").returncode == 0
    assert own_rules(netns) == []


@pytest.mark.parametrize("env, message", [
    ({"FI_OUTBOUND_PORTS": "80,https"},
     'FI_OUTBOUND_PORTS (annotation fault-injector/outbound-ports): "https" in "80,https" is not a port'),
    ({"FI_OUTBOUND_PORTS": "80", "FI_PROXY_UID": "envoy"}, 'FI_PROXY_UID: "envoy" is not a UID'),
])
def test_bad_outbound_settings_are_refused_and_change_nothing(netns, env, message):
    assert netns.capture("8080").returncode == 0
    before = netns.nat_rules()
    res = netns.run("/bin/sh", str(SCRIPT), env={"FI_INBOUND_PORTS": "9090", **env})
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert netns.nat_rules() == before
