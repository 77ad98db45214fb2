"""What every benchmark needs: a fresh embedded Trainer and a job to run."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path

from benchmarks.kernel import Kernel
from dlaas_jupyter.client import TrainerClient, TrainerConfig
from dlaas_jupyter.client.embedded import ensure_running
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto.semantics import TERMINAL
from dlaas_jupyter.trainer.cli import main as trainer_cli


@contextlib.contextmanager
def embedded_trainer(data_dir: Path | None = None, user: str = "bench") -> Iterator[TrainerClient]:
    """A client, as ``user``, of a Trainer started on a data directory of its own, stopped after."""
    with tempfile.TemporaryDirectory(prefix="dlaas-bench-") as tmp:
        folder = data_dir or Path(tmp)
        info = ensure_running(folder)
        config = TrainerConfig.resolve(url=info.url, token=info.token, user=user, environ={})
        try:
            with TrainerClient(config) as client:
                yield client
        finally:
            trainer_cli(["stop", "--data-dir", str(folder)])


def notebook_kernel(config: TrainerConfig, folder: Path, notebook: str = "session.ipynb") -> Kernel:
    """A python3 ipykernel in ``folder``, pointed at the Trainer of ``config`` as
    Jupyter points one (env), told its notebook as jupyter_server tells it
    (JPY_SESSION_NAME), and never reaching the user's own Trainer or data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env.update(
        DLAAS_TRAINER_URL=config.url or "",
        DLAAS_TRAINER_TOKEN=config.token or "",
        DLAAS_USER=config.user,
        DLAAS_DATA_DIR=str(folder / "data"),
        JPY_SESSION_NAME=str(folder / notebook),
    )
    return Kernel(folder, env)


def script_job(
    script: str, *, name: str, cpus: float = 1, memory_gib: float = 4
) -> pb.CreateRequest:
    """A CreateRequest running ``script`` as main.py."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", script)
    request = pb.CreateRequest()
    request.model_definition.name = name
    request.model_definition.framework.name = "python"
    request.model_definition.framework.version = "3"
    request.model_definition.content = buffer.getvalue()
    request.training.command = "python main.py"
    request.training.resources.cpus = cpus
    request.training.resources.memory = memory_gib
    request.training.resources.memory_unit = pb.GiB
    return request


def wait_status(
    client: TrainerClient,
    training_id: str,
    statuses: Collection[int],
    *,
    timeout: float = 120,
    interval: float = 0.05,
) -> pb.Job:
    """Poll every ``interval`` s until the job is in one of ``statuses``: at a steady
    pace, not Job.wait's backoff, so a change is seen soon after it happens."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(training_id)
        if job.status.status in statuses:
            return job
        if time.monotonic() > deadline:
            wanted = ", ".join(sorted(pb.Status.Name(s) for s in statuses))
            raise TimeoutError(
                f"{training_id} still {pb.Status.Name(job.status.status)} after {timeout} s"
                f" (waiting for {wanted})"
            )
        time.sleep(interval)


def wait_terminal(client: TrainerClient, training_id: str, timeout: float = 600) -> pb.Job:
    return wait_status(client, training_id, TERMINAL, timeout=timeout)


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Print measured figures beside their goals."""
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for label, value, goal in rows:
        print(f"  {label:<{width}}  {value:>14}   goal: {goal}")
