"""Which queued job runs next: any that fits the free CPUs and GPUs, oldest first.

Smaller jobs may overtake a large one that does not fit yet, as on a cluster;
a job that could never fit this machine fails at once instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import math

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer import lifecycle as lc
from dlaas_jupyter.trainer.capacity import CapacityPool, Grant
from dlaas_jupyter.trainer.runner import JobRunner
from dlaas_jupyter.trainer.store import Store
from dlaas_jupyter.trainer.workspace import learner_count


class Scheduler:
    def __init__(self, store: Store, runner: JobRunner, pool: CapacityPool) -> None:
        self._store = store
        self._runner = runner
        self._pool = pool
        self._queue: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, training_id: str) -> None:
        self._queue.append(training_id)
        self.dispatch()

    def cancel(self, training_id: str) -> bool:
        """Take a job that has not started off the queue."""
        if training_id in self._queue:
            self._queue.remove(training_id)
            return True
        return False

    def dispatch(self) -> None:
        for tid in list(self._queue):
            job = self._store.get_job(tid)
            if job is None or job.status.status != pb.QUEUED:
                self._queue.remove(tid)
                continue
            cpus, gpus, note = self._demand(job)
            reason = self._pool.never_fits(cpus, gpus)
            if reason:
                self._queue.remove(tid)
                self._store.update_status(
                    tid,
                    pb.FAILED,
                    message=f"Insufficient resources: the job {reason}",
                    error_code=lc.INSUFFICIENT_RESOURCES,
                )
                continue
            grant = self._pool.try_acquire(cpus, gpus)
            if grant is None:
                waiting = (
                    f"Waiting for {cpus:g} CPUs and {gpus} GPUs "
                    f"({self._pool.free_cpus:g} CPUs and {self._pool.free_gpus} GPUs free)"
                )
                if job.status.status_message != waiting:
                    self._store.update_status(tid, pb.QUEUED, message=waiting)
                continue
            self._queue.remove(tid)
            self._runner.claim(tid)
            task = asyncio.get_running_loop().create_task(self._run(job, grant, note))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: pb.Job, grant: Grant, note: str) -> None:
        try:
            await self._runner.run(job, grant, note)
        finally:
            self._pool.release(grant)
            self.dispatch()

    def _demand(self, job: pb.Job) -> tuple[float, int, str]:
        """CPUs and GPUs for all learners, and a note when CPUs were clamped."""
        res = job.training.resources
        learners = learner_count(job)
        asked = res.cpus * learners
        cpus = self._pool.clamp_cpus(asked)
        note = ""
        if cpus < asked:
            note = f"Asked for {asked:g} CPUs; this machine has {self._pool.total_cpus:g}, so the job gets all of them"
        return cpus, math.ceil(res.gpus) * learners, note

    async def drain(self) -> None:
        """Wait for every job started by this scheduler to finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
