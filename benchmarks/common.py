"""What every benchmark needs: a fresh embedded Trainer and a job to run."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

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


@contextlib.contextmanager
def notebook_kernel(
    config: TrainerConfig, folder: Path, notebook: str = "session.ipynb"
) -> Iterator[BlockingKernelClient]:
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
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(folder), env=env)
    kernel = manager.blocking_client()
    kernel.start_channels()
    try:
        kernel.wait_for_ready(timeout=60)
        yield kernel
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(kernel: BlockingKernelClient, code: str, timeout: float = 120) -> str:
    """Run ``code`` as one cell; its stdout. Raises RuntimeError with the traceback if it raised."""
    out: list[str] = []
    failure: list[str] = []

    def collect(message: dict) -> None:
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            failure.extend(content["traceback"])

    kernel.execute_interactive(code, output_hook=collect, timeout=timeout)
    if failure:
        raise RuntimeError("the cell raised:\n" + "\n".join(failure) + "\n" + "".join(out))
    return "".join(out)


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


def wait_terminal(client: TrainerClient, training_id: str, timeout: float = 600) -> pb.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(training_id)
        if job.status.status in TERMINAL:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"{training_id} did not finish in {timeout} s")


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
