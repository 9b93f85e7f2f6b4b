"""The dashboard in a real headless browser (Debian's chromium and chromedriver, via selenium).

First against the dashboard on an in-process server (`DashboardServer`: the server's
own books, changed from the test), then against a real server process through the
HTTP face. Skipped, saying why, where chromium or chromedriver is not installed
(`make system-deps` installs them as root).
"""
from __future__ import annotations

import importlib.util
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from boruta.core.types import WorkerState
from boruta.core.users import token_hash
from e2e_helpers import server_factory  # noqa: F401
from test_dashboard import TOKEN, DashboardServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LIVE_WITHIN = 1.0            # seconds from a change on the server to the page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver in /usr/bin "
                              "(`make system-deps` as root installs them)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="boruta-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def poll(predicate: Callable[[], Any], timeout: float, what: str) -> tuple[Any, float]:
    """Poll the page until `predicate` is truthy; (its value, seconds it took)."""
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.02)


def js(browser: Any, script: str, *args: Any) -> Any:
    return browser.execute_script(script, *args)


def worker_state(browser: Any, uuid: str) -> str | None:
    return js(browser, "const tr = [...document.querySelectorAll('#workers tbody tr')]"
                       ".find((row) => row.dataset.uuid === arguments[0]);"
                       "return tr ? tr.querySelector('td[data-state]').dataset.state : null;",
              uuid)


def worker_cell(browser: Any, uuid: str, cls: str) -> str | None:
    return js(browser, "const tr = [...document.querySelectorAll('#workers tbody tr')]"
                       ".find((row) => row.dataset.uuid === arguments[0]);"
                       "return tr ? tr.querySelector('td.' + arguments[1]).textContent : null;",
              uuid, cls)


def queue_ids(browser: Any) -> list[int]:
    return [int(i) for i in js(browser, "return [...document.querySelectorAll('#queue tbody tr')]"
                                        ".map((tr) => tr.dataset.id);")]


def is_live(browser: Any) -> bool:
    return bool(js(browser, "return document.getElementById('live').textContent === 'live';"))


def log_in(browser: Any, url: str, token: str) -> None:
    """Open the page, which asks for a token (authentication is on), and give it."""
    browser.get(url)
    poll(lambda: browser.find_element("id", "login").is_displayed(), 5, "the login form")
    field = browser.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    field.submit()
    poll(lambda: is_live(browser), 5, "the live feed with the token")


def open_page(browser: Any, url: str) -> None:
    browser.get(url)
    poll(lambda: is_live(browser), 10, "the live feed connects")


# ---------------------------------------------------------------- in-process server
def test_a_state_change_and_a_new_request_show_within_a_second(browser: Any) -> None:
    with DashboardServer() as farm:
        uuids = sorted(farm.add_workers(3))
        open_page(browser, farm.url)
        poll(lambda: [worker_state(browser, u) for u in uuids] == ["MAINTENANCE"] * 3, 5,
             "three workers in MAINTENANCE")
        farm.act(lambda s: s.sched.set_state(uuids[1], WorkerState.IDLE))
        # PREPARE, then FAILED (no dryad here): both reach the page, each within a second.
        _, took = poll(lambda: worker_state(browser, uuids[1]) == "FAILED", LIVE_WITHIN,
                       "the worker's FAILED state on the page")
        req_id = farm.new_request(priority=3)
        _, took_queue = poll(lambda: req_id in queue_ids(browser), LIVE_WITHIN,
                             f"request {req_id} in the queue")
        assert worker_state(browser, uuids[0]) == "MAINTENANCE"     # only that row changed
        transitions = js(browser, "return document.getElementById('transitions').textContent;")
        assert f"request {req_id}" in transitions and "FAILED" in transitions
        print(f"state change on the page after {took * 1000:.0f} ms; "
              f"new request after {took_queue * 1000:.0f} ms")


def test_ten_thousand_workers_are_paged_and_a_burst_touches_only_rows(browser: Any) -> None:
    with DashboardServer() as farm:
        uuids = sorted(farm.add_workers(10000))
        open_page(browser, farm.url)
        poll(lambda: js(browser, "return document.querySelectorAll('#workers tbody tr').length;")
             == 100, 10, "the first page of 100 workers")
        assert "10000" in js(browser, "return document.getElementById('workers-total')"
                                      ".textContent;")
        # Tag the table body: a page reload would replace it (a redraw); patches keep it.
        js(browser, "document.querySelector('#workers tbody').dataset.mark = 'kept';")
        shown = uuids[:100]
        start = time.monotonic()
        farm.act(lambda s: [s.sched.set_state(u, WorkerState.IDLE) for u in uuids[100:1100]])
        farm.act(lambda s: s.sched.set_state(shown[5], WorkerState.IDLE))
        poll(lambda: worker_state(browser, shown[5]) in ("PREPARE", "FAILED"), 5,
             "the shown worker's change after a burst of 1000 others")
        took = time.monotonic() - start
        assert js(browser, "return document.querySelector('#workers tbody').dataset.mark;") \
            == "kept"
        assert js(browser, "return document.querySelectorAll('#workers tbody tr').length;") == 100
        browser.find_element("id", "workers-next").click()
        poll(lambda: worker_state(browser, uuids[100]) is not None, 5, "the second page")
        print(f"a shown row changed {took * 1000:.0f} ms after a burst of 2000 events "
              "about workers not shown")


def test_with_authentication_the_page_asks_for_a_token(browser: Any) -> None:
    with DashboardServer(token=TOKEN) as farm:
        uuid = farm.add_workers(1)[0]
        browser.get(farm.url)
        js(browser, "sessionStorage.clear();")
        browser.get(farm.url)
        poll(lambda: browser.find_element("id", "login").is_displayed(), 5, "the login form")
        field = browser.find_element("id", "token")
        field.send_keys("wrong")
        field.submit()
        poll(lambda: "unknown token" in browser.find_element("id", "login-error").text, 5,
             "the refusal shown")
        log_in(browser, farm.url, TOKEN)
        poll(lambda: worker_state(browser, uuid) == "MAINTENANCE", 5, "the worker shown")
        farm.fail(uuid)
        poll(lambda: worker_state(browser, uuid) == "FAILED", LIVE_WITHIN, "FAILED shown")
        js(browser, "sessionStorage.clear();")


# ---------------------------------------------------------------- a real server process
FACE_BUILT = importlib.util.find_spec("boruta.http.face") is not None


@pytest.mark.skipif(not FACE_BUILT, reason="the HTTP face (boruta/http/face.py) is not built")
def test_against_a_real_server_process(browser: Any, server_factory: Any) -> None:  # noqa: F811
    server = server_factory()
    admin = server.client()
    farm = server.farm(2, caps={"device_type": "dash"})
    uuids = sorted(dryad.uuid for dryad in farm.dryads)
    server.user("viewer")
    token = secrets.token_urlsafe(32)
    admin.user_token("viewer", token_hash(token))
    browser.get(server.http.rstrip("/") + "/")
    js(browser, "sessionStorage.clear();")
    log_in(browser, server.http.rstrip("/") + "/", token)
    js(browser, "sessionStorage.clear();")      # the next page load starts logged out
    poll(lambda: [worker_state(browser, u) for u in uuids] == ["MAINTENANCE"] * 2, 5,
         "both simulated workers")
    admin.set_state(uuids[0], "IDLE")         # PREPARE at once, IDLE once its dryad answers
    _, took = poll(lambda: worker_state(browser, uuids[0]) in ("PREPARE", "IDLE"),
                   LIVE_WITHIN, "the worker's change on the page")
    poll(lambda: worker_state(browser, uuids[0]) == "IDLE", 10, "the worker IDLE")
    assert worker_state(browser, uuids[1]) == "MAINTENANCE"
    req_id = admin.new_request({"device_type": "nothing-has-this"}, 5,
                               queue_unsatisfiable=True)
    _, took_queue = poll(lambda: req_id in queue_ids(browser), LIVE_WITHIN,
                         f"request {req_id} in the queue")
    job = admin.new_request({"device_type": "dash"}, 5)       # the IDLE worker takes it
    poll(lambda: worker_cell(browser, uuids[0], "job") == f"#{job}", 5, "the worker's job")
    assert worker_cell(browser, uuids[0], "heartbeat").endswith(" s")   # its dryad speaks
    assert worker_state(browser, uuids[0]) == "RUNNING" and job not in queue_ids(browser)
    poll(lambda: js(browser, "return [...document.querySelectorAll('#waits rect.p50 title')]"
                             ".map((t) => t.textContent).join();").startswith("dash median"),
         5, "the job's wait in the chart")
    print(f"real server: state change shown after {took * 1000:.0f} ms; "
          f"new request after {took_queue * 1000:.0f} ms")

