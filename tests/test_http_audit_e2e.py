"""An HTTP call is audited like a ZeroMQ one: its user, operation, result, and address."""
from __future__ import annotations

import json
import secrets
import urllib.request

import pytest

from boruta.core.users import token_hash
from boruta.testing.processes import wait_until
from tests.e2e_helpers import server_factory, unique_caps  # noqa: F401

pytestmark = pytest.mark.slow


def test_an_http_call_is_audited_with_its_user_and_address(server_factory) -> None:  # noqa: F811
    server = server_factory()
    token = secrets.token_urlsafe(32)
    server.client().user_token(name="admin", token_hash=token_hash(token))
    body = json.dumps({"Priority": 8, "Caps": unique_caps()}).encode()
    request = urllib.request.Request(server.http + "/api/v1/reqs/", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
        req_id = json.load(answer)["ReqID"]

    def audited() -> list[str]:
        return [line for line in server.log().splitlines()
                if " audit " in line and f"req_id={req_id} op=new_request" in line]
    lines = wait_until(audited, 5)
    assert "result=ok" in lines[0] and "peer=admin" in lines[0]
    assert "ip=127.0.0.1" in lines[0]
