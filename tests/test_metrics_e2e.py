"""`GET /metrics` of a real server process, scraped over HTTP as Prometheus would (a
user's token), while simulated dryads, requests and a job move the farm."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from boruta.core.errors import PriorityError
from boruta.core.users import token_hash
from tests.e2e_helpers import server_factory, unique_caps, wait_until  # noqa: F401
from tests.test_metrics import Samples, samples

TOKEN = "scraper-token-4d2f"


def http(url: str, method: str = "GET", token: str | None = TOKEN,
         **headers: str) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request; error statuses are answers too."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for name, text in headers.items():
        req.add_header(name.replace("_", "-"), text)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def scrape(url: str) -> Samples:
    status, headers, body = http(url)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(body.decode())


def value(found: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for one not exposed yet (a histogram before its first label)."""
    return found.get(name, {}).get(frozenset(labels.items()), 0.0)


def scraper(server: Any) -> str:
    """A user with a token (as a Prometheus job would be configured); the URL to scrape."""
    server.user("scraper")
    server.client().user_token(name="scraper", token_hash=token_hash(TOKEN))
    return server.http + "/metrics"


@pytest.mark.slow
def test_the_metrics_move_when_the_farm_moves(server_factory, tmp_path) -> None:  # noqa: F811
    server = server_factory(state_dir=str(tmp_path / "state"))
    url = scraper(server)
    admin = server.client()
    caps = unique_caps()
    kind = caps["device_type"]
    before = scrape(url)
    assert value(before, "boruta_workers", state="MAINTENANCE", device_type=kind) == 0

    farm = server.farm()
    host, port = farm.echo_server()                                   # stands in for sshd
    dryad = farm.add(caps=caps, ssh_address=f"{host}:{port}")
    farm.wait_registered(5)
    found = scrape(url)
    assert value(found, "boruta_workers", state="MAINTENANCE", device_type=kind) == 1
    assert value(found, "boruta_dryad_heartbeat_age_seconds_count") == 1
    assert value(found, "boruta_dryad_heartbeat_age_max_seconds") < 2.0    # 0.5 s heartbeats

    admin.set_state(dryad.uuid, "IDLE")
    wait_until(lambda: value(scrape(url), "boruta_workers", state="IDLE", device_type=kind)
               == 1, 5, what="the worker IDLE in /metrics")
    with pytest.raises(PriorityError):
        admin.new_request(caps, 99)
    req_id = admin.new_request(caps, 4)
    access = admin.acquire_worker(req_id, timeout=5)
    with socket.create_connection(access.addr, timeout=5) as conn:
        conn.sendall(b"x" * 5000)
        got = b""
        while len(got) < 5000:
            got += conn.recv(65536)
    found = scrape(url)
    assert value(found, "boruta_requests", state="IN PROGRESS", priority="4") == 1
    assert value(found, "boruta_workers", state="RUNNING", device_type=kind) == 1
    assert value(found, "boruta_queue_wait_seconds_count", device_type=kind) == 1
    assert value(found, "boruta_tunnel_bytes_total", direction="to_worker") == 5000
    assert value(found, "boruta_tunnel_bytes_total", direction="to_client") == 5000
    assert value(found, "boruta_tunnels_open") == 1

    admin.close_request(req_id)
    wait_until(lambda: value(scrape(url), "boruta_workers", state="IDLE", device_type=kind)
               == 1, 5, what="the worker prepared again after its job")
    found = scrape(url)
    assert value(found, "boruta_requests", state="DONE", priority="4") == 1
    assert value(found, "boruta_requests", state="IN PROGRESS", priority="4") == 0
    assert value(found, "boruta_job_duration_seconds_count", device_type=kind) == 1
    assert value(found, "boruta_tunnels_open") == 0
    assert value(found, "boruta_tunnel_bytes_total", direction="to_worker") == 5000
    assert value(found, "boruta_calls_total", endpoint="client", operation="new_request") == 2
    assert value(found, "boruta_calls_total", endpoint="client", operation="close_request") == 1
    assert value(found, "boruta_call_errors_total", endpoint="client", operation="new_request",
                 code="bad_priority") == 1
    assert value(found, "boruta_calls_total", endpoint="dryad", operation="register") == 1
    wait_until(lambda: value(scrape(url), "boruta_calls_total", endpoint="dryad",
                             operation="heartbeat") > 0, 5, what="a heartbeat counted")
    assert value(found, "boruta_matching_call_seconds_count", operation="new_request") == 1
    assert value(found, "boruta_matching_call_seconds_count", operation="worker_prepared") == 2
    assert value(found, "boruta_matching_call_seconds_count", operation="set_state") == 1
    assert value(found, "boruta_store_commit_seconds_count") > value(
        before, "boruta_store_commit_seconds_count")
    assert value(found, "process_resident_memory_bytes") > 0


@pytest.mark.slow
def test_bad_requests_to_metrics_get_a_clear_answer(server_factory) -> None:  # noqa: F811
    server = server_factory()
    url = scraper(server)
    status, headers, body = http(url, "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert b"/metrics is read-only: use GET (or HEAD), not POST" in body
    status, headers, body = http(url, Accept="application/json")
    assert status == 406 and b"text/plain or application/openmetrics-text" in body
    status, headers, body = http(url, token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    status, headers, body = http(url, token="not-a-token")
    assert status == 401 and b"unknown token" in body
    status, headers, body = http(url, "HEAD")
    assert status == 200 and body == b"" and headers["Content-Type"].startswith("text/plain")
    status, headers, body = http(url, Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and body.endswith(b"# EOF\n")
    status, _, body = http(server.http + "/metrics/")    # redirected (308) to /metrics
    assert status == 200 and b"boruta_requests" in body
