"""Where a job's files live, and the environment its learners see.

The layout follows what an FfDL learner sees (MODEL_DIR, DATA_DIR, RESULT_DIR,
LOG_DIR, ...), so training code written for FfDL runs here unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dlaas_jupyter.proto import trainer_pb2 as pb

LOG_FILE = "training-log.txt"
MODEL_ZIP = "model.zip"
LOGS_DIR = "logs"
# The job's EMExtractionSpec as submitted (the Job message has no field for it).
METRICS_SPEC_FILE = "evaluation-metrics-spec.pb"
HOST_MOUNT_TYPES = {"mount_volume", "host_mount"}


class DatastoreError(ValueError):
    """A job's datastore cannot be used on this machine."""


@dataclass(frozen=True)
class JobFolders:
    root: Path
    model_zip: Path
    model_dir: Path
    logs_root: Path
    state_dir: Path
    checkpoint_dir: Path
    result_dir: Path
    input_dir: Path

    @property
    def packages_dir(self) -> Path:
        """Where the job's requirements.txt is installed (see requirements.py)."""
        return self.root / "site-packages"

    @property
    def metrics_spec(self) -> Path:
        return self.root / METRICS_SPEC_FILE

    def learner_log_dir(self, learner: int) -> Path:
        return self.logs_root / learner_name(learner)

    def learner_log_file(self, learner: int) -> Path:
        return self.learner_log_dir(learner) / LOG_FILE


def learner_name(learner: int) -> str:
    return f"learner-{learner}"


def learner_number(subid: str) -> int:
    """The learner a subid names; learner 1 for anything else."""
    number = subid.removeprefix("learner-")
    return int(number) if number.isdigit() and number != "0" else 1


def learner_count(job: pb.Job) -> int:
    """How many learners run the job; at least one."""
    return max(job.training.resources.learners, 1)


def job_root(jobs_root: Path, training_id: str) -> Path:
    return jobs_root / training_id


def folders_for(jobs_root: Path, job: pb.Job) -> JobFolders:
    """Resolve a job's folders; raises DatastoreError for stores we cannot mount."""
    root = job_root(jobs_root, job.training_id)
    stores = {ds.id: ds for ds in job.datastores}
    input_dir = root / "data"
    if job.training.input_data:
        input_dir = _host_path(stores[job.training.input_data[0]], "input")
    result_dir = root / "results"
    if job.training.output_data:
        result_dir = _host_path(stores[job.training.output_data[0]], "output") / job.training_id
    return JobFolders(
        root=root,
        model_zip=root / MODEL_ZIP,
        model_dir=root / "model",
        logs_root=root / LOGS_DIR,
        state_dir=root / "state",
        checkpoint_dir=root / "checkpoints",
        result_dir=result_dir,
        input_dir=input_dir,
    )


def _host_path(store: pb.Datastore, role: str) -> Path:
    kind = store.connection.get("type", store.type)
    if store.type not in HOST_MOUNT_TYPES and kind not in HOST_MOUNT_TYPES:
        raise DatastoreError(
            f"{role} datastore '{store.id}' has type '{store.type}'; the embedded Trainer "
            "can only mount local folders (type mount_volume, connection type host_mount)"
        )
    path = store.connection.get("path", "")
    if not path:
        raise DatastoreError(f"{role} datastore '{store.id}' names no connection path")
    bucket = store.fields.get("bucket", "")
    return Path(path) / bucket if bucket else Path(path)


def learner_env(
    folders: JobFolders,
    job: pb.Job,
    *,
    learner: int,
    gpu_ids: tuple[int, ...],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment FfDL gives a learner, plus what makes Python behave here."""
    env = dict(os.environ if base is None else base)
    # The Trainer's interpreter first, so `python train.py` finds the packages
    # installed beside it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    paths = [str(folders.model_dir)]
    if folders.packages_dir.is_dir():
        paths.append(str(folders.packages_dir))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # A pipe makes Python block-buffer stdout; unbuffered output is what makes
    # the log live.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(
        MODEL_DIR=str(folders.model_dir),
        DATA_DIR=str(folders.input_dir),
        RESULT_DIR=str(folders.result_dir),
        LOG_DIR=str(folders.learner_log_dir(learner)),
        JOB_STATE_DIR=str(folders.state_dir),
        CHECKPOINT_DIR=str(folders.checkpoint_dir),
        TRAINING_ID=job.training_id,
        TRAINING_COMMAND=job.training.command,
        GPU_COUNT=str(len(gpu_ids)),
        NUM_LEARNERS=str(learner_count(job)),
        LEARNER_ID=str(learner),
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in gpu_ids),
    )
    return env
