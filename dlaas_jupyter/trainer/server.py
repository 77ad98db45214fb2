"""Starting and stopping the embedded Trainer process.

One Trainer per data directory (an exclusive lock proves it); it announces
itself in ``trainer.json`` (url, token, pid; mode 0600) only once it accepts
calls, so a client that finds the file can use it straight away.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dlaas_jupyter.paths import INFO_FILE, LOCK_FILE
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc
from dlaas_jupyter.trainer import lifecycle as lc
from dlaas_jupyter.trainer.auth import TokenInterceptor
from dlaas_jupyter.trainer.backends import load_backend
from dlaas_jupyter.trainer.backends.base import Backend
from dlaas_jupyter.trainer.capacity import CapacityPool, detect_gpus
from dlaas_jupyter.trainer.events import JobEvents
from dlaas_jupyter.trainer.runner import JobRunner, store_logs
from dlaas_jupyter.trainer.scheduler import Scheduler
from dlaas_jupyter.trainer.service import TrainerService
from dlaas_jupyter.trainer.store import Store
from dlaas_jupyter.trainer.unzip import ZipLimits
from dlaas_jupyter.trainer.workspace import DatastoreError, folders_for, learner_count

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 2**20
LOST_MESSAGE = (
    "The Trainer stopped while this job was running and its learner processes were "
    "lost; the log up to that point is kept"
)


class AlreadyRunning(RuntimeError):
    """Another Trainer holds this data directory."""


@dataclass
class ServeOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    auth: bool = True
    backend: str = "local"
    cpus: float | None = None
    gpus: int | None = None
    stop_grace: float = 10.0
    zip_limits: ZipLimits = field(default_factory=ZipLimits)


def _lock(data_dir: Path):
    handle = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(f"another Trainer is already running for {data_dir}") from None
    return handle


def write_info(data_dir: Path, info: dict) -> None:
    """Write trainer.json atomically, readable by its owner only."""
    tmp = data_dir / f".{INFO_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(info, out)
    os.replace(tmp, data_dir / INFO_FILE)


def recover(store: Store, backend: Backend, jobs_root: Path) -> None:
    """Settle jobs that were in progress when a previous Trainer died."""
    for job in store.jobs_with_status(lc.ACTIVE):
        tid = job.training_id
        for handle in store.get_runtime(tid).get("learners", []):
            backend.kill_orphan(handle)
        store.set_runtime(tid, {})
        if job.status.status in (pb.PENDING, pb.DOWNLOADING):
            # Nothing of the job ran yet: it simply runs again.
            store.update_status(tid, pb.QUEUED, message="Requeued after the Trainer restarted")
            continue
        try:
            store_logs(folders_for(jobs_root, job), learner_count(job))
        except (DatastoreError, KeyError, OSError) as exc:
            log.warning("could not store the logs of %s: %s", tid, exc)
        store.update_status(tid, pb.FAILED, message=LOST_MESSAGE, error_code=lc.LEARNER_FAILED_SYSTEM)


async def serve(options: ServeOptions) -> None:
    """Run the Trainer until SIGTERM or SIGINT."""
    data_dir = options.data_dir
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock(data_dir)
    loop = asyncio.get_running_loop()
    events = JobEvents(loop)
    store = Store(data_dir / "trainer.db", on_change=events.notify)
    jobs_root = data_dir / "jobs"
    backend = load_backend(options.backend)
    pool = CapacityPool(
        cpus=options.cpus or float(os.cpu_count() or 1),
        gpus=detect_gpus() if options.gpus is None else options.gpus,
    )
    runner = JobRunner(store, backend, jobs_root, zip_limits=options.zip_limits, stop_grace=options.stop_grace)
    scheduler = Scheduler(store, runner, pool)
    recover(store, backend, jobs_root)

    token = secrets.token_urlsafe(32) if options.auth else ""
    server = grpc.aio.server(
        interceptors=[TokenInterceptor(token)] if options.auth else [],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    pb_grpc.add_TrainerServicer_to_server(TrainerService(store, scheduler, runner, events, jobs_root), server)
    port = server.add_insecure_port(f"{options.host}:{options.port}")
    await server.start()
    for job in store.jobs_with_status([pb.QUEUED]):
        scheduler.submit(job.training_id)

    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    host = f"[{options.host}]" if ":" in options.host else options.host
    write_info(data_dir, {"url": f"grpc://{host}:{port}", "token": token, "pid": os.getpid()})
    log.info("Trainer listening on %s:%s, data in %s", options.host, port, data_dir)
    try:
        await stopping.wait()
    finally:
        (data_dir / INFO_FILE).unlink(missing_ok=True)
        await server.stop(grace=1.0)
        await runner.stop_all("The Trainer was stopped while this job was running")
        await scheduler.drain()
        store.close()
        lock.close()
