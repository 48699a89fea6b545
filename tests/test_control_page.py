"""The control route's page (docs/control-page.md) in a real browser: Debian's chromium,
headless, driven by selenium through Debian's chromium-driver, against a real Envoy with
2 workers. One browser and one Envoy serve the whole module; each test sets the state it
needs first, so none depends on another.

Listener 0 takes POSTed documents (with Envoy's buffer filter after the filter);
listener 1 requires a bearer token and does not take POSTed documents. Both listeners
share the VM, so they show one state.

The screenshots at 375 and 1440 px go to $CONTROL_PAGE_SCREENSHOTS (default: a folder of
pytest's temporary directory, printed with -s); with CONTROL_PAGE_DOCS=1 the 1440 px one
is copied to docs/control-page.png.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from harness import BUFFER_FILTER, REPO_ROOT, Client, Envoy, ListenerSpec, request, start_upstream, wait_for

TOKEN = "s3cret-page"
# What Chromium sends when it opens a URL.
BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
TWO_RULES = {
    "rules": [
        {"name": "checkout", "match": {"path": {"prefix": "/checkout"}}, "fault": {"abort": {"status": 503}},
         "percentage": 50},
        {"name": "items", "match": {"path": {"prefix": "/items"}}, "fault": {"delay": {"fixed": "5ms"}}},
    ],
}


@pytest.fixture(scope="module")
def module_upstream():
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def envoy(tmp_path_factory, module_upstream):
    listeners = [
        ListenerSpec({"control": {"post_documents": True}}, http_filters_after=[BUFFER_FILTER]),
        ListenerSpec({"control": {"token": TOKEN}}, name="with_token"),
    ]
    proxy = Envoy(listeners, upstream_port=module_upstream.port, workdir=tmp_path_factory.mktemp("envoy"))
    try:
        yield proxy.start()
        assert not proxy.wasm_panics(), proxy.log_tail()
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def browser():
    # Given Debian's driver by path, selenium skips its Selenium Manager, which would
    # look for (and download) a driver of its own.
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
                "--disable-client-side-phishing-detection", "--no-pings", "--metrics-recording-only",
                # Whatever the browser might send beyond loopback goes to a closed loopback port.
                "--proxy-server=http://127.0.0.1:9"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def page_url(envoy: Envoy, listener: int = 0) -> str:
    return f"http://127.0.0.1:{envoy.ports[listener]}/injector"


def open_page(driver, envoy: Envoy, listener: int = 0, live: bool = True) -> None:
    """Opens the page, with the logs read so far dropped, and waits for its first refresh."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(page_url(envoy, listener))
    if live:
        WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "state-line").text.startswith("Live"))


# Read in one script: a refresh replaces the elements, which a read element by element
# could meet half way.
def shown_policy(driver) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#policy dd')].map(d => [d.dataset.param, d.textContent]))")


def shown_counts(driver) -> dict[str, dict[str, int]]:
    """The counts each rule's row shows: {"checkout": {"matched": 30, "injected": 14}}."""
    return driver.execute_script("""
        const rows = [...document.querySelectorAll('#rules tbody tr[data-rule]')];
        return Object.fromEntries(rows.map(row => [row.dataset.rule, Object.fromEntries(
            [...row.querySelectorAll('td[data-count]')].filter(c => /^[0-9]+$/.test(c.textContent))
                .map(c => [c.dataset.count, Number(c.textContent)]))]));""")


def shown_last_fired(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#rules tbody tr[data-rule] td:last-child')].map(c => c.textContent)")


def api_counts(envoy: Envoy) -> dict[str, dict[str, int]]:
    return {c["rule"]: {"matched": c["matched"], "injected": c["injected"]} for c in envoy.policy().get("counts", [])}


def press(driver, element_id: str) -> None:
    """Activates a button from the keyboard."""
    driver.find_element(By.ID, element_id).send_keys(Keys.ENTER)


def fill(driver, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        field = driver.find_element(By.CSS_SELECTOR, f"#change [name={name}]")
        field.clear()
        field.send_keys(value)


def severe_console_entries(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def requests_sent(driver) -> list[tuple[str, dict[str, str]]]:
    """The URL and headers of each request the page made since the log was last read."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append((request["url"], {k.lower(): v for k, v in request["headers"].items()}))
    return sent


def test_the_page_loads_alone_refreshes_and_is_labelled_and_keyboard_reachable(browser, envoy):
    envoy.policy("reset")
    open_page(browser, envoy)
    time.sleep(2.5)  # one more refresh, 2 s after the first

    assert severe_console_entries(browser) == []
    origin = f"http://127.0.0.1:{envoy.port}/"
    sent = requests_sent(browser)
    assert [url for url, _ in sent if not url.startswith(origin)] == []
    # The page, then its first refresh and one 2 s later: each asks for JSON.
    assert [url for url, _ in sent].count(page_url(envoy)) >= 3, sent
    assert [headers.get("accept") for _, headers in sent[1:]] == ["application/json"] * (len(sent) - 1)
    assert shown_policy(browser)["policy"] == "none"
    assert browser.find_element(By.ID, "config-id").text == envoy.policy()["configuration"]["id"]
    assert browser.find_element(By.ID, "doc-section").is_displayed()
    assert not browser.find_element(By.ID, "resume").is_displayed()

    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels.length).map(e => e.id)")
    assert unlabelled == []
    controls = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea, button')]"
        ".filter(e => e.offsetParent !== null).map(e => e.id || e.textContent)")
    browser.find_element(By.TAG_NAME, "body").click()
    reached = []
    for _ in range(len(controls) + 2):
        webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script("const e = document.activeElement; return e.id || e.textContent"))
    assert set(controls) <= set(reached), f"not reached by Tab: {set(controls) - set(reached)}"


def test_apply_changes_the_policy_for_the_next_requests_and_shows_it(browser, envoy):
    envoy.policy("reset")
    open_page(browser, envoy)
    fill(browser, {"status": "503", "percentage": "100"})
    pressed = time.monotonic()
    press(browser, "apply")
    WebDriverWait(browser, 3).until(lambda d: shown_policy(d).get("policy") == "statusResponse")
    shown_after = time.monotonic() - pressed

    answers = [request(envoy.port, f"/data/{i}") for i in range(20)]
    assert [a.status for a in answers] == [503] * 20
    assert {a.headers.get("x-fault-injected") for a in answers} == {"statusResponse"}
    assert shown_after < 3
    shown = shown_policy(browser)
    assert (shown["status"], shown["percentage"]) == ("503", "100")
    policy = envoy.policy()["policy"]
    assert (policy["policy"], policy["status"], policy["percentage"]) == ("statusResponse", 503, 100.0)
    assert browser.find_element(By.ID, "error").text == ""


def test_the_page_counts_what_the_api_counts(browser, envoy):
    envoy.policy("reset")
    open_page(browser, envoy)
    area = browser.find_element(By.ID, "document")
    area.clear()
    area.send_keys(json.dumps(TWO_RULES))
    press(browser, "post-document")
    WebDriverWait(browser, 3).until(lambda d: set(shown_counts(d)) == {"checkout", "items"})
    assert [r["name"] for r in envoy.policy()["rules"]] == ["checkout", "items"]

    with Client(envoy.port) as client:
        for i in range(30):
            client.get(f"/checkout/{i}")
            client.get(f"/items/{i}")
    wait_for(lambda: all(c["matched"] == 30 for c in api_counts(envoy).values()), timeout=5)
    expected = api_counts(envoy)
    assert 0 < expected["checkout"]["injected"] < 30 and expected["items"]["injected"] == 30
    WebDriverWait(browser, 5).until(lambda d: shown_counts(d) == expected)
    assert [text.endswith(" s ago") for text in shown_last_fired(browser)] == [True, True]


def test_a_refused_call_shows_the_api_error_and_changes_nothing(browser, envoy):
    before = envoy.policy("reset&status=500&percentage=30")
    open_page(browser, envoy)
    fill(browser, {"status": "700"})
    press(browser, "apply")
    error = WebDriverWait(browser, 3).until(lambda d: d.find_element(By.ID, "error").text)

    refused = envoy.control("status=700")
    assert refused.status == 400
    assert error == "Refused: 400: " + json.loads(refused.body)["error"]
    assert envoy.policy() == before
    time.sleep(2.2)  # a refresh later, the page still shows the policy in force
    shown = shown_policy(browser)
    assert (shown["policy"], shown["status"], shown["percentage"]) == ("statusResponse", "500", "30")


def test_reset_restores_no_fault(browser, envoy):
    envoy.policy("reset&status=503&percentage=100")
    assert request(envoy.port, "/before").status == 503
    open_page(browser, envoy)
    assert shown_policy(browser)["policy"] == "statusResponse"
    press(browser, "reset")
    WebDriverWait(browser, 3).until(lambda d: shown_policy(d).get("policy") == "none")

    assert envoy.policy()["policy"]["policy"] == "none"
    assert [request(envoy.port, f"/after/{i}").status for i in range(10)] == [200] * 10


def test_resume_shows_while_a_guard_has_halted_the_faults(browser, envoy, module_upstream):
    guard = {"upstream_failures": {"above": 10, "window": "5s", "min_requests": 50}}
    envoy.control("reset")
    envoy.policy(document={"policy": {"status": 503, "percentage": 30}, "guard": guard}, method="GET")
    open_page(browser, envoy)
    assert not browser.find_element(By.ID, "resume").is_displayed()
    module_upstream.behave(fail_percent=100)
    try:
        with Client(envoy.port) as client:
            deadline = time.monotonic() + 10
            while "halted" not in envoy.policy() and time.monotonic() < deadline:
                for i in range(20):
                    client.get(f"/failing/{i}")
    finally:
        module_upstream.behave()
    assert "halted" in envoy.policy()
    WebDriverWait(browser, 3).until(lambda d: d.find_element(By.ID, "resume").is_displayed())
    assert "upstream_failures" in browser.find_element(By.ID, "halted").text

    press(browser, "resume")
    WebDriverWait(browser, 3).until(lambda d: not d.find_element(By.ID, "halted").is_displayed())
    assert not browser.find_element(By.ID, "resume").is_displayed()
    state = envoy.policy()
    assert "halted" not in state and state["policy"]["status"] == 503


def test_json_callers_get_json_and_browsers_the_page(envoy):
    envoy.policy("reset&status=418&percentage=5")
    plain = request(envoy.port, "/injector")
    for accept in ("*/*", "application/json", "application/json, text/html", "text/html;q=0.5, */*"):
        answer = request(envoy.port, "/injector", headers={"accept": accept})
        assert (answer.status, answer.headers["content-type"], answer.body) == (200, "application/json", plain.body)
    assert plain.headers["content-type"] == "application/json"
    assert json.loads(plain.body)["policy"]["status"] == 418
    assert "content-security-policy" not in plain.headers

    page = request(envoy.port, "/injector", headers={"accept": BROWSER_ACCEPT})
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.body.startswith(b"<!doctype html>")
    csp = page.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; script-src 'sha256-") and "unsafe" not in csp
    assert page.headers["vary"] == "accept" and page.headers["cache-control"] == "no-store"
    # With a query, a browser's call is an API call like any other.
    changed = request(envoy.port, "/injector?percentage=6", headers={"accept": BROWSER_ACCEPT})
    assert changed.headers["content-type"] == "application/json"
    assert json.loads(changed.body)["policy"]["percentage"] == 6.0


def test_the_token_field_authorizes_the_pages_calls(browser, envoy):
    envoy.policy("reset&status=502&percentage=7")
    assert request(envoy.ports[1], "/injector").status == 401
    open_page(browser, envoy, listener=1, live=False)
    line = WebDriverWait(browser, 5).until(
        lambda d: d.find_element(By.ID, "state-line").text.startswith("Not updated") and d.find_element(
            By.ID, "state-line").text)
    assert "401" in line and "control.token" in line
    assert not browser.find_element(By.ID, "doc-section").is_displayed()

    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    token.send_keys(Keys.TAB)
    WebDriverWait(browser, 3).until(lambda d: d.find_element(By.ID, "state-line").text.startswith("Live"))
    assert shown_policy(browser)["status"] == "502"
    stored = browser.execute_script("return JSON.stringify([localStorage, sessionStorage, document.cookie])")
    assert TOKEN not in stored


def screenshot(driver, width: int, path: Path) -> None:
    """The whole page at `width` CSS pixels."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    path.write_bytes(driver.get_screenshot_as_png())


def test_screenshots_with_rules_firing(browser, envoy, tmp_path_factory):
    out = Path(os.environ.get("CONTROL_PAGE_SCREENSHOTS") or tmp_path_factory.mktemp("control-page"))
    out.mkdir(parents=True, exist_ok=True)
    document = {**TWO_RULES, "policy": {"status": 503, "percentage": 10},
                "clients": [{"ip": "10.1.2.0/24", "timeout": "250ms", "percentage": 100}],
                "guard": {"upstream_failures": {"above": 5, "window": "30s", "min_requests": 50}}}
    envoy.control("reset")
    assert envoy.control(document=document).status == 200
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 20
        with Client(envoy.port) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                client.get("/checkout/cart")
                client.get("/items/42")
                time.sleep(0.02)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        open_page(browser, envoy)
        first = WebDriverWait(browser, 5).until(
            lambda d: (c := shown_counts(d)) and all(r.get("injected", 0) > 0 for r in c.values()) and c)
        WebDriverWait(browser, 5).until(lambda d: shown_counts(d)["items"]["matched"] > first["items"]["matched"])
        try:
            screenshot(browser, 1440, out / "control-page-1440.png")
            screenshot(browser, 375, out / "control-page-375.png")
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        finally:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    finally:
        stop.set()
        sender.join()
    print(f"\nscreenshots: {out}")
    assert overflow <= 0, "the page scrolls sideways at 375 px"
    for width in (375, 1440):
        assert (out / f"control-page-{width}.png").stat().st_size > 10_000
    if os.environ.get("CONTROL_PAGE_DOCS") == "1":
        shutil.copyfile(out / "control-page-1440.png", REPO_ROOT / "docs" / "control-page.png")
