"""GetAllTrainingsJobs with 10,000 jobs stored. Goal: <= 200 ms.

The jobs are written into the Trainer's store before it starts (running
10,000 real jobs would measure the executor, not the listing).

Run: .venv/bin/python -m benchmarks.list_jobs [JOBS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import embedded_trainer, percentile, report
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.store import Store


def fill(db: Path, jobs: int, user: str) -> None:
    """Write ``jobs`` halted jobs of ``user`` into the store at ``db``, oldest first
    ("experiment 0" is the oldest), for a Trainer started on it afterwards."""
    store = Store(db)
    now = int(time.time() * 1000)
    for n in range(jobs):
        job = pb.Job(training_id=f"training-{n:09d}", user_id=user, job_id=f"training-{n:09d}")
        job.model_definition.name = f"experiment {n}"
        job.model_definition.description = "a benchmark job with a realistic amount of metadata"
        job.model_definition.framework.name = "pytorch"
        job.model_definition.framework.version = "2.13"
        job.training.command = "python train.py --epochs 10 --lr 0.01"
        job.training.resources.cpus = 2
        job.training.resources.memory = 4
        job.training.resources.memory_unit = pb.GiB
        job.training.resources.learners = 1
        job.training.input_data.append("local-data")
        job.datastores.add(
            id="local-data", type="mount_volume", connection={"type": "host_mount", "path": "/data"}
        )
        job.status.status = pb.QUEUED
        job.status.submission_timestamp = str(now - (jobs - n) * 1000)
        store.insert_job(job)
        store.update_status(job.training_id, pb.HALTED, message="Halted by user", error_code="0")
    store.close()


def main(jobs: int = 10_000, calls: int = 20) -> None:
    with tempfile.TemporaryDirectory(prefix="dlaas-bench-") as tmp:
        data_dir = Path(tmp)
        fill(data_dir / "trainer.db", jobs, "bench")
        with embedded_trainer(data_dir) as client:
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                listed = client.list()
                times.append((time.perf_counter() - start) * 1000)
            assert len(listed) == jobs, f"listed {len(listed)} of {jobs}"
    report(
        f"GetAllTrainingsJobs with {jobs:,} jobs ({calls} calls)",
        [
            ("median", f"{statistics.median(times):.0f} ms", "<= 200 ms"),
            ("p90", f"{percentile(times, 90):.0f} ms", "-"),
        ],
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
