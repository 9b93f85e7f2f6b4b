"""Jobs and their tunnels: what a request IN PROGRESS has on the server's side.

The core says when a job starts, resumes (after a restart, once its dryad is
back) and finishes; this book opens the job's tunnel to the worker's sshd
before anyone is told where to connect, keeps the job's key (forgotten with
the job), and closes the tunnel when the job ends. A tunnel that cannot be
opened undoes the job start in the core.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boruta.core import effects
from boruta.core.addresses import split_host_port
from boruta.core.errors import BorutaError
from boruta.core.types import AccessInfo
from boruta.server.keys import JobKey
from boruta.server.tunnels import TunnelError, TunnelManager
from boruta.transport import documents

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")


@dataclass(eq=False)
class Job:
    req_id: int
    worker_uuid: str
    username: str
    key: JobKey
    port: int


class JobBook:
    def __init__(self, app: "Server") -> None:
        self.app = app
        cfg = app.cfg
        self.tunnels = TunnelManager(cfg.tunnel_host, cfg.tunnel_ports,
                                     cfg.tunnel_connect_timeout)
        self.jobs: dict[int, Job] = {}
        self.restored_ports: dict[int, int] = {}        # job ports before the restart

    def get(self, req_id: int) -> Job | None:
        return self.jobs.get(req_id)

    def access_doc(self, job: Job) -> dict[str, Any]:
        """What the owner needs to log in: the server's public host, the tunnel, the key."""
        access = AccessInfo(job.username, job.key.private_text, job.worker_uuid,
                            addr=(self.app.cfg.public_host, job.port),
                            key_type=job.key.key_type)
        return documents.access_out(access, job.key.private_text, job.key.key_type)

    def start(self, e: effects.StartJob) -> None:
        access = self._current_access(e.req_id, e.worker_uuid)
        if access is None:
            return
        job = self._open(e.req_id, access, "the worker holds no job key",
                         "job start failed", "cannot open tunnel")
        if job is None:
            return
        log.info("job started", extra={"fields": {
            "req_id": e.req_id, "worker_uuid": e.worker_uuid, "tunnel_port": job.port,
            "ssh_address": access.ssh_address, "username": access.username}})
        self.app.parked.job_opened(job.req_id, self.access_doc(job))

    def resume(self, e: effects.ResumeJob) -> None:
        """After a restart the job's dryad is back: reopen the tunnel, on its old port if free."""
        access = self._current_access(e.req_id, e.worker_uuid)
        if access is None or e.req_id in self.jobs:
            return
        old_port = self.restored_ports.pop(e.req_id, None)
        job = self._open(e.req_id, access, "the worker's job key was not kept",
                         "job resume failed", "cannot reopen tunnel after restart",
                         prefer=old_port)
        if job is None:
            return
        moved = job.port != old_port
        log.info("job resumed", extra={"fields": {
            "req_id": e.req_id, "worker_uuid": e.worker_uuid, "tunnel_port": job.port,
            "old_port": old_port, "moved": moved}})
        reason = "reopened on a new port after restart" if moved else "reopened after restart"
        self.app.events.tunnel(e.req_id, e.worker_uuid, reason, job.port, old_port)
        self.app.parked.job_opened(job.req_id, self.access_doc(job))

    def finish(self, e: effects.FinishJob) -> None:
        job = self.jobs.pop(e.req_id, None)      # the key is forgotten with the job
        closed = self.tunnels.close(e.req_id)
        self.restored_ports.pop(e.req_id, None)
        self.app.outbox.note_port(e.req_id, None)
        if job is not None or closed:
            log.info("job finished", extra={"fields": {"req_id": e.req_id,
                                                        "worker_uuid": e.worker_uuid}})

    def close_all(self) -> None:
        self.tunnels.close_all()

    def _current_access(self, req_id: int, worker_uuid: str) -> AccessInfo | None:
        """The core's access for the request, if it is still this worker's job."""
        try:
            access = self.app.sched.acquire_worker(req_id)
        except BorutaError:
            return None                                  # the request has moved on already
        return access if access.worker_uuid == worker_uuid else None

    def _open(self, req_id: int, access: AccessInfo, no_key: str, failed: str,
              reason: str, prefer: int | None = None) -> Job | None:
        """Open the job's tunnel to its worker (on `prefer` if free) and book the job;
        None when it cannot be opened (then the job start failed, in the core too)."""
        try:
            key = access.key
            if not isinstance(key, JobKey):
                raise TunnelError(no_key)
            if not access.ssh_address:
                raise TunnelError("the worker has no ssh address")
            dest = split_host_port(access.ssh_address)
            tunnel = self.tunnels.open(req_id, dest, prefer=prefer)
        except (TunnelError, ValueError) as exc:
            log.warning(failed, extra={"fields": {
                "req_id": req_id, "worker_uuid": access.worker_uuid, "reason": str(exc)}})
            self.app.sched.job_start_failed(req_id, f"{reason}: {exc}")
            return None
        job = Job(req_id, access.worker_uuid, access.username, key, tunnel.port)
        self.jobs[job.req_id] = job
        self.app.outbox.note_port(job.req_id, job.port)
        return job
