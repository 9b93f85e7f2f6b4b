"""The documents results carry: requests, workers, access, lists (both directions)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from boruta.core.types import (AccessInfo, JobInfo, ListInfo, ReqInfo, ReqState, UserInfo,
                               WorkerInfo, WorkerState)
from boruta.transport.arguments import as_time

def access_out(access: AccessInfo, key_text: str, key_type: str) -> dict[str, Any]:
    host, port = access.addr or ("", 0)
    return {"host": host, "port": port, "username": access.username, "key": key_text,
            "key_type": key_type, "worker_uuid": access.worker_uuid}


def access_in(doc: Mapping[str, Any]) -> AccessInfo:
    return AccessInfo(username=doc["username"], key=doc["key"],
                      worker_uuid=doc.get("worker_uuid", ""),
                      addr=(doc["host"], int(doc["port"])), key_type=doc.get("key_type", ""))


def request_out(info: ReqInfo) -> dict[str, Any]:
    return info.to_dict()


def request_in(doc: Mapping[str, Any]) -> ReqInfo:
    job = doc.get("job")
    return ReqInfo(
        id=int(doc["id"]), priority=int(doc["priority"]),
        owner=_owner_in(doc.get("owner") or {}),
        deadline=as_time("deadline", doc["deadline"]),
        valid_after=as_time("valid_after", doc["valid_after"]),
        state=ReqState(doc["state"]),
        job=None if job is None else JobInfo(job["worker_uuid"],
                                             as_time("timeout", job["timeout"])),
        caps=dict(doc.get("caps") or {}),
        lease=None if doc.get("lease") is None else float(doc["lease"]),
        expr=tuple(str(e) for e in doc.get("expr") or ()))


def _owner_in(owner: Mapping[str, Any]) -> UserInfo:
    return UserInfo(tuple(owner.get("groups") or ()), str(owner.get("name") or ""))


def worker_out(info: WorkerInfo) -> dict[str, Any]:
    doc = info.to_dict()
    doc["dryad_address"] = info.dryad_address
    doc["ssh_address"] = info.ssh_address
    return doc


def worker_in(doc: Mapping[str, Any]) -> WorkerInfo:
    return WorkerInfo(worker_uuid=doc["uuid"], state=WorkerState(doc["state"]),
                      groups=tuple(doc.get("groups") or ()), caps=dict(doc.get("caps") or {}),
                      fail_reason=doc.get("fail_reason"),
                      dryad_address=doc.get("dryad_address"),
                      ssh_address=doc.get("ssh_address"))


def list_out(items: list[dict[str, Any]], info: ListInfo) -> dict[str, Any]:
    return {"items": items, "total": info.total_items, "remaining": info.remaining_items}


def list_in(doc: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], Any]) -> tuple[list[Any], ListInfo]:
    return ([convert(item) for item in doc["items"]],
            ListInfo(int(doc["total"]), int(doc["remaining"])))


