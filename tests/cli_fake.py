"""A fake client for the `boruta` command's tests, and the fixtures that run the command.

The fake records every call and answers with real ReqInfo/WorkerInfo values
or raises real error classes, so the tests check the CLI's side of each
command; tests/test_cli_e2e.py runs the same commands against a server.

Test modules import the fixtures they use:

    from cli_fake import fake, run  # noqa: F401
"""
from __future__ import annotations

import json
import types
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from boruta.cli import app, session
from boruta.core.types import (
    AccessInfo,
    JobInfo,
    ListInfo,
    ReqInfo,
    ReqState,
    UserInfo,
    WorkerInfo,
    WorkerState,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
W1 = "4f1a2b3c-0000-4000-8000-000000000001"
W2 = "4f1a2b3c-0000-4000-8000-000000000002"

KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
-----END OPENSSH PRIVATE KEY-----"""


def req(id: int = 7, state: ReqState = ReqState.WAIT, priority: int = 4,
        worker: str | None = None, caps: dict | None = None) -> ReqInfo:
    return ReqInfo(
        id=id, priority=priority, owner=UserInfo(("lab",), "alice"),
        deadline=T0 + timedelta(days=1), valid_after=T0, state=state,
        job=JobInfo(worker, T0 + timedelta(hours=1)) if worker else None,
        caps=caps if caps is not None else {"device_type": "rpi4"})


def wrk(uuid: str = W1, state: WorkerState = WorkerState.IDLE, groups=("lab",),
        reason: str | None = None, dryad_address: str | None = "10.0.0.5:7176",
        ssh_address: str | None = "10.0.0.5:22") -> WorkerInfo:
    return WorkerInfo(worker_uuid=uuid, state=state, groups=tuple(groups),
                      caps={"UUID": uuid, "device_type": "rpi4"}, fail_reason=reason,
                      dryad_address=dryad_address, ssh_address=ssh_address)


def access(key: Any = KEY, key_type: str | None = "ssh-ed25519") -> Any:
    info = AccessInfo(username="boruta-user", key=key, worker_uuid=W1,
                      ssh_address="10.0.0.5:2222", addr=("10.0.0.5", 2222))
    if key_type is None:
        return types.SimpleNamespace(username=info.username, key=key, worker_uuid=W1,
                                     ssh_address=info.ssh_address, addr=info.addr)
    return types.SimpleNamespace(username=info.username, key=key, worker_uuid=W1,
                                 ssh_address=info.ssh_address, addr=info.addr,
                                 key_type=key_type)


PING = {"server": "0.3.0", "protocol": 1, "matcher": "compiled",
        "endpoints": {"listen": "tcp://0.0.0.0:7175", "dryad": "tcp://0.0.0.0:7176",
                      "events": "tcp://0.0.0.0:7177"},
        "heartbeat_interval": 5.0, "user": {"name": "alice", "role": "admin"}}

# Two valid CURVE public keys (Z85), fixed so that failures read the same every run.
PUB1 = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
PUB2 = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"


def user_doc(name: str = "alice", keys: list | None = None, groups: list | None = None,
             role: str | None = None, priorities: list | None = None,
             max_open: int | None = None) -> dict:
    """A user document as the server answers it (its defaults where an argument is None)."""
    return {"name": name, "keys": list(keys or [PUB1]), "groups": list(groups or []),
            "role": role or "user", "priorities": list(priorities or [1, 16]),
            "max_open": 1000 if max_open is None else max_open}


def _user_set(name: str, keys: list | None = None, **changes: Any) -> dict:
    doc = user_doc(name, keys or [PUB1], groups=["lab"])
    doc.update({k: v for k, v in changes.items() if v is not None})
    return doc


def _user_token(name: str, token_hash: str, revoke: bool = False) -> dict:
    """The user document the server answers: the hash added, or (revoke) gone."""
    doc = user_doc(name)
    if not revoke:
        doc["tokens"] = [token_hash]
    return doc


class FakeClient:
    """Records calls; answers from `answers` (a value, an exception, or a callable)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.opened: list[tuple[str, float]] = []
        self.events_endpoints: list[str | None] = []
        self.closed = 0
        self.answers: dict[str, Any] = {
            "new_request": 7,
            "get_request_info": req(),
            "list_requests": ([req(7), req(8, ReqState.INPROGRESS, worker=W1)], ListInfo(2, 0)),
            "list_workers": ([wrk(W1), wrk(W2, WorkerState.FAIL, reason="board did not boot")],
                             ListInfo(2, 0)),
            "get_worker_info": wrk(),
            "acquire_worker": access(),
            "wait_request": req(state=ReqState.INPROGRESS, worker=W1),
            "events": [],
            "ping": dict(PING),
            "user_add": user_doc,
            "user_set": _user_set,
            "user_token": _user_token,
            "user_list": [user_doc("alice", groups=["lab"]),
                          user_doc("ci", [PUB1, PUB2], role="admin", priorities=[8, 16])],
            "dryad_enroll": lambda uuid, key: {"uuid": uuid, "key": key},
            "dryad_list": [{"uuid": W1, "key": PUB2}],
            "renew_leases": lambda ids: {"held": list(ids), "lost": []},
            "queue_position": {"state": "WAITING", "ahead": 3, "ready": 12},
            "explain_request": {"id": 7, "state": "WAITING", "priority": 8, "ready": True,
                                "held_by": "queue", "candidates": 2,
                                "candidate_states": {"RUNNING": 2}, "misses": [], "ahead": 1,
                                "expected_start": None, "estimate_basis": None, "late": False},
        }

    def open(self, endpoint: str, timeout: float, **kw: Any) -> "FakeClient":
        self.opened.append((endpoint, timeout))
        self.events_endpoints.append(kw.get("events_endpoint"))
        return self

    def close(self) -> None:
        self.closed += 1

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):
                return answer(*args, **kwargs)
            return answer
        return call


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(session, "make_client", client.open)
    for name in ("BORUTA_SERVER", "BORUTA_SERVER_KEY", "BORUTA_KEY_FILE",
                 "BORUTA_CLIENT_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)     # the tests' own client config only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return client


@pytest.fixture
def run(fake, capsys):
    def _run(*args: str) -> Result:
        code = app.run(list(args))
        cap = capsys.readouterr()
        result = Result(code, cap.out, cap.err)
        assert "Traceback" not in cap.out + cap.err, result
        return result
    return _run
