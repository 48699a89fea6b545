"""No web page drives the control route unasked. Browsers mark what they send for a page
(`Sec-Fetch-*`, `Origin`): a control call marked cross-site or same-site, one whose
`Origin` is not the route's own, and a browser's call naming the route by a host that is
not an IP literal, `localhost` or in `control.allowed_hosts` (DNS rebinding) get 403 and
change nothing. Callers without those headers (curl, scripts, other services) and the
route's own page keep working, whatever their `Host`. Over HTTP/1.1 and HTTP/2."""

import json

import pytest

from harness import BUFFER_FILTER, ListenerSpec, request

PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
CHANGE = "/injector?status=500&percentage=100"


def browser(site: str, *, origin: str | None = None, host: str | None = None) -> dict[str, str]:
    headers = {"sec-fetch-site": site, "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}
    if origin:
        headers["origin"] = origin
    if host:
        headers["host"] = host
    return headers


@pytest.fixture
def route(start_envoy):
    return start_envoy(listeners=[ListenerSpec(plugin_config={"control": {"post_documents": True,
                                                                          "allowed_hosts": ["injector.test"]}},
                                               http_filters_after=[BUFFER_FILTER])])


def refused_calls(port: int) -> dict[str, tuple[dict[str, str], str]]:
    """What each kind of page sends, and what the refusal says."""
    other, origin = "another site's page", "Origin is not the control route's own"
    return {
        "cross-site": (browser("cross-site", origin="https://evil.example"), other),
        "same-site": (browser("same-site", origin=f"http://app.localhost:{port}"), other),
        "foreign origin": (browser("same-origin", origin="https://evil.example", host=f"localhost:{port}"), origin),
        "Origin alone (an older browser)": ({"origin": "https://evil.example"}, origin),
        "null origin": (browser("same-origin", origin="null"), origin),
        # A DNS-rebinding page: its own name now resolves to loopback, so to the browser
        # the call is same-origin; only the Host gives it away.
        "rebinding": (browser("same-origin", origin=f"http://rebind.evil.example:{port}",
                              host=f"rebind.evil.example:{port}"), "control.allowed_hosts"),
        "rebinding navigation": ({"sec-fetch-site": "none", "sec-fetch-mode": "navigate",
                                  "host": f"rebind.evil.example:{port}"}, "control.allowed_hosts"),
    }


@PROTOCOLS
def test_pages_of_other_origins_are_refused(route, upstream, http2):
    cases = refused_calls(route.port)
    for case, (headers, needle) in cases.items():
        answer = request(route.port, CHANGE, headers=headers, http2=http2)
        assert answer.status == 403, (case, answer)
        assert needle in json.loads(answer.body)["error"], (case, answer)
    assert route.policy()["policy"]["policy"] == "none"
    metrics = route.metrics()
    assert (metrics["policy_changes"], metrics["control_refused"]) == (0, len(cases))
    assert upstream.count == 0


@PROTOCOLS
def test_callers_without_browser_marks_work_whatever_their_host(route, http2):
    answer = request(route.port, CHANGE, headers={"host": "fault-injector.default.svc.cluster.local:8282"}, http2=http2)
    assert answer.status == 200, answer
    assert json.loads(answer.body)["policy"]["status"] == 500


@PROTOCOLS
def test_the_routes_own_page_and_a_typed_url_work(route, http2):
    port = route.port
    own = f"localhost:{port}"
    # What a page served from http://localhost:<port>/injector sends with fetch().
    read = request(port, "/injector", headers=browser("same-origin", host=own), http2=http2)
    assert read.status == 200, read
    document = {"policy": {"policy": "statusResponse", "status": 503, "percentage": 100}}
    post = request(port, "/injector", method="POST", body=json.dumps(document), http2=http2,
                   headers={**browser("same-origin", origin=f"http://{own}", host=own), "content-type": "application/json"})
    assert post.status == 200, post
    assert json.loads(post.body)["policy"]["status"] == 503
    # The user typing the address (an IP literal, or a name in control.allowed_hosts).
    for host in (f"127.0.0.1:{port}", f"[::1]:{port}", f"injector.test:{port}"):
        typed = request(port, "/injector", headers={"sec-fetch-site": "none", "sec-fetch-mode": "navigate",
                                                    "sec-fetch-user": "?1", "host": host}, http2=http2)
        assert typed.status == 200, (host, typed)
    assert route.metrics()["control_refused"] == 0
