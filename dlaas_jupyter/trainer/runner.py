"""One job's life from dispatch to a terminal status, whatever runs it.

The runner owns statuses, folders, log collection, memory limits and halting;
the back end only starts and stops processes. So a cluster back end later
changes where learners run, not what users see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer import lifecycle as lc
from dlaas_jupyter.trainer import requirements
from dlaas_jupyter.trainer.backends.base import Backend, LearnerProcess
from dlaas_jupyter.trainer.capacity import Grant
from dlaas_jupyter.trainer.collect import OutputCollector
from dlaas_jupyter.trainer.metrics.collection import JobMetrics
from dlaas_jupyter.trainer.metrics.spec import parse_spec
from dlaas_jupyter.trainer.store import Store
from dlaas_jupyter.trainer.unzip import UnsafeZipError, ZipLimits, unpack_model
from dlaas_jupyter.trainer.workspace import (
    DatastoreError,
    JobFolders,
    folders_for,
    learner_count,
    learner_env,
    learner_name,
    learner_number,
)

log = logging.getLogger(__name__)


@dataclass
class _Active:
    """What the runner knows about a job it is running."""

    halt: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the Trainer itself stops the job: it then fails, not halts.
    abort: str = ""

    def stopped(self) -> _Stop:
        if self.abort:
            return _Stop(pb.FAILED, self.abort, lc.LEARNER_FAILED_SYSTEM)
        return _Stop(pb.HALTED, lc.HALTED_MESSAGE, lc.HALTED_CODE)


class _Stop(Exception):
    """Ends a job early with a terminal status."""

    def __init__(self, status: int, message: str, error_code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


class JobRunner:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        jobs_root: Path,
        *,
        zip_limits: ZipLimits = ZipLimits(),
        stop_grace: float = 10.0,
        memory_poll: float = 0.5,
    ) -> None:
        self._store = store
        self._backend = backend
        self._jobs_root = jobs_root
        self._zip_limits = zip_limits
        self._stop_grace = stop_grace
        self._memory_poll = memory_poll
        self._active: dict[str, _Active] = {}

    def claim(self, training_id: str) -> None:
        """Mark a job as the runner's before its task starts, so a halt or
        delete arriving in between finds it."""
        self._active[training_id] = _Active()

    async def halt(self, training_id: str) -> bool:
        """Halt a running job and wait until it has stored what it wrote."""
        active = self._active.get(training_id)
        if active is None:
            return False
        active.halt.set()
        await active.done.wait()
        return True

    async def stop_all(self, message: str) -> None:
        """Stop every running job as FAILED with ``message`` (Trainer shutdown)."""
        for active in self._active.values():
            active.abort = message
        await asyncio.gather(*(self.halt(tid) for tid in list(self._active)))

    def _set(self, training_id: str, status: int, message: str | None = None, error_code: str | None = None) -> None:
        self._store.update_status(training_id, status, message=message, error_code=error_code)

    async def run(self, job: pb.Job, grant: Grant, note: str = "") -> None:
        """Run ``job`` on ``grant`` to a terminal status; never raises."""
        tid = job.training_id
        active = self._active.setdefault(tid, _Active())
        try:
            if active.halt.is_set():
                raise active.stopped()
            self._set(tid, pb.PENDING, note or None)
            folders = await self._download(job, active)
            await self._process(job, grant, folders, active, note)
        except _Stop as stop:
            self._set(tid, stop.status, stop.message, stop.error_code)
        except Exception as exc:  # a bug must not leave a job running forever
            log.exception("job %s failed in the Trainer", tid)
            self._set(tid, pb.FAILED, f"Internal Trainer error: {exc}", lc.LEARNER_FAILED_SYSTEM)
        finally:
            del self._active[tid]
            active.done.set()

    async def _download(self, job: pb.Job, active: _Active) -> JobFolders:
        tid = job.training_id
        self._set(tid, pb.DOWNLOADING)
        try:
            folders = folders_for(self._jobs_root, job)
        except DatastoreError as exc:
            raise _Stop(pb.FAILED, f"Loading the data failed: {exc}", lc.LOAD_DATA_FAILED) from exc
        if not folders.input_dir.is_dir():
            raise _Stop(
                pb.FAILED,
                f"Loading the data failed: input data folder {folders.input_dir} does not exist",
                lc.LOAD_DATA_FAILED,
            )
        for path in (folders.state_dir, folders.checkpoint_dir, folders.result_dir):
            path.mkdir(parents=True, exist_ok=True)
        if folders.model_dir.exists():  # a retry after a Trainer restart
            await asyncio.to_thread(shutil.rmtree, folders.model_dir)
        try:
            await asyncio.to_thread(unpack_model, folders.model_zip, folders.model_dir, self._zip_limits)
        except UnsafeZipError as exc:
            raise _Stop(pb.FAILED, f"Invalid model definition zip: {exc}", lc.INVALID_ZIP) from exc
        except OSError as exc:
            raise _Stop(pb.FAILED, f"Loading the model failed: {exc}", lc.LOAD_MODEL_FAILED) from exc
        try:
            await requirements.install(folders.model_dir, folders.packages_dir, folders.learner_log_file(1))
        except (requirements.RequirementsError, OSError) as exc:
            raise _Stop(
                pb.FAILED, f"Installing requirements.txt failed: {exc} (see the log)", lc.LOAD_MODEL_FAILED
            ) from exc
        if active.halt.is_set():
            raise active.stopped()
        return folders

    async def _process(
        self, job: pb.Job, grant: Grant, folders: JobFolders, active: _Active, note: str
    ) -> None:
        tid = job.training_id
        learners = learner_count(job)
        gpus_each = len(grant.gpu_ids) // learners
        envs = [
            learner_env(
                folders, job, learner=n, gpu_ids=grant.gpu_ids[(n - 1) * gpus_each : n * gpus_each]
            )
            for n in range(1, learners + 1)
        ]
        procs: list[LearnerProcess] = []
        collectors: list[OutputCollector] = []
        loop = asyncio.get_running_loop()
        exits: list[asyncio.Future[int]] = []
        metrics = JobMetrics(
            _read_spec(folders),
            logs_root=folders.logs_root,
            env=envs[0],
            sink=partial(self._store.append_emetrics, tid, job.user_id),
            note=_log_note(folders),
        )
        metrics.start()
        try:
            for n, env in enumerate(envs, start=1):
                folders.learner_log_dir(n).mkdir(parents=True, exist_ok=True)
                log_file = folders.learner_log_file(n)
                proc = self._backend.launch(
                    job.training.command, cwd=folders.model_dir, env=env, output=log_file
                )
                procs.append(proc)
                self._store.set_runtime(tid, {"learners": [p.handle for p in procs]})
                collector = OutputCollector(log_file, self._log_sink(job, n, metrics), f"{tid}-{n}")
                collector.start()
                collectors.append(collector)
                exits.append(_wait_in_thread(loop, proc))
            self._set(tid, pb.PROCESSING, note or None)
            outcome = await self._watch(job, procs, exits, active)
        except _Stop as stop:
            outcome = stop
        finally:
            await asyncio.gather(*(asyncio.to_thread(p.stop, self._stop_grace) for p in procs))
            # Before the log collectors stop: the last poll's notes (a bad line in
            # the metrics file, say) are lines of the learners' logs to store too.
            await asyncio.to_thread(metrics.finish)
            for collector in collectors:
                collector.finish()
            await asyncio.gather(*(asyncio.to_thread(c.join) for c in collectors))
            if metrics.error is not None:
                log.warning("metric collection of %s failed: %s", tid, metrics.error)
        self._set(tid, pb.STORING)
        try:
            await asyncio.to_thread(store_logs, folders, learners)
        except OSError as exc:
            raise _Stop(pb.FAILED, f"Storing results failed: {exc}", lc.STORE_RESULTS_FAILED) from exc
        for collector in collectors:
            if collector.error is not None:
                raise _Stop(pb.FAILED, f"Collecting the log failed: {collector.error}", lc.LEARNER_FAILED_SYSTEM)
        self._store.set_runtime(tid, {})
        if outcome is None:
            self._set(tid, pb.COMPLETED, "", "")
        else:
            raise outcome

    async def _watch(
        self,
        job: pb.Job,
        procs: list[LearnerProcess],
        exits: list[asyncio.Future[int]],
        active: _Active,
    ) -> _Stop | None:
        """Wait for the learners; the first failure, halt or overuse decides."""
        limit = lc.memory_bytes(job.training.resources)
        halt = asyncio.ensure_future(active.halt.wait())
        pending: set[asyncio.Future] = {*exits, halt}
        try:
            while True:
                done, pending = await asyncio.wait(
                    pending, timeout=self._memory_poll, return_when=asyncio.FIRST_COMPLETED
                )
                if halt in done:
                    return active.stopped()
                for n, fut in enumerate(exits, start=1):
                    if fut in done and fut.result() != 0:
                        return _Stop(
                            pb.FAILED,
                            f"Learner process exited with code {fut.result()} ({learner_name(n)})",
                            lc.LEARNER_CRASHED,
                        )
                if all(fut.done() for fut in exits):
                    return None
                if limit:
                    for n, proc in enumerate(procs, start=1):
                        used = await asyncio.to_thread(proc.memory_bytes)
                        if used > limit:
                            return _Stop(
                                pb.FAILED,
                                f"{learner_name(n)} used {_mib(used)} of memory, more than the "
                                f"{_mib(limit)} its memory request allows; the job was stopped",
                                lc.LEARNER_FAILED_SYSTEM,
                            )
        finally:
            halt.cancel()

    def _log_sink(self, job: pb.Job, learner: int, metrics: JobMetrics):
        tid, user, subid = job.training_id, job.user_id, learner_name(learner)

        def sink(lines: list[str]) -> None:
            self._store.append_log_lines(tid, user, subid, lines)
            metrics.feed(subid, lines)

        return sink


def _read_spec(folders: JobFolders):
    spec = pb.EMExtractionSpec()
    if folders.metrics_spec.exists():
        spec.ParseFromString(folders.metrics_spec.read_bytes())
    return parse_spec(spec)


def _log_note(folders: JobFolders):
    """Report a collection problem as a line in the learner's own log."""

    def note(subid: str, message: str) -> None:
        path = folders.learner_log_file(learner_number(subid))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, message.rstrip("\n").encode() + b"\n")
        finally:
            os.close(fd)

    return note


def _wait_in_thread(loop: asyncio.AbstractEventLoop, proc: LearnerProcess) -> asyncio.Future[int]:
    """A future for the learner's exit code, without using the loop's executor.

    Waiting blocks for the learner's whole life; the default executor has only
    a few threads and is needed for short work.
    """
    future: asyncio.Future[int] = loop.create_future()

    def wait() -> None:
        code = proc.wait()
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, future, code)

    threading.Thread(target=wait, name="wait-learner", daemon=True).start()
    return future


def _resolve(future: asyncio.Future[int], code: int) -> None:
    if not future.done():
        future.set_result(code)


def store_logs(folders: JobFolders, learners: int) -> None:
    """Copy each learner's logs into the results, as FfDL's learner-N/ folders."""
    for n in range(1, learners + 1):
        source = folders.learner_log_dir(n)
        if source.is_dir():
            shutil.copytree(source, folders.result_dir / learner_name(n), dirs_exist_ok=True)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"
