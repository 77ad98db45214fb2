"""Shared fixtures: a real embedded Trainer on localhost, and job builders."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from dlaas_jupyter.proto import trainer_pb2 as pb

# For jobs on the session Trainer: small, so jobs of different tests never queue
# behind each other.
SMALL_CPUS = 0.25

T = TypeVar("T")


@dataclass
class RunningTrainer:
    url: str
    token: str
    pid: int
    data_dir: Path
    process: subprocess.Popen

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    @property
    def target(self) -> str:
        return self.url.removeprefix("grpc://")


def start_trainer(data_dir: Path, *extra: str, timeout: float = 30.0) -> RunningTrainer:
    """Start ``dlaas-trainer serve`` as a real process and wait until it accepts calls."""
    data_dir.mkdir(parents=True, exist_ok=True)
    info_path = data_dir / "trainer.json"
    info_path.unlink(missing_ok=True)
    log_path = data_dir / "trainer-test.log"
    command = [sys.executable, "-m", "dlaas_jupyter.trainer", "serve", "--data-dir", str(data_dir)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*command, *extra], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Trainer exited with {process.returncode}: {log_path.read_text()}")
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info.get("pid") == process.pid:
                return RunningTrainer(info["url"], info["token"], process.pid, data_dir, process)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("Trainer did not start in time")


def stop_trainer(trainer: RunningTrainer) -> None:
    if trainer.process.poll() is None:
        trainer.process.send_signal(signal.SIGTERM)
        try:
            trainer.process.wait(30)
        except subprocess.TimeoutExpired:
            trainer.process.kill()
            trainer.process.wait()


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory) -> Iterator[None]:
    """No test may reach the user's own Trainer or data directory."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DLAAS_")}
    for key in saved:
        del os.environ[key]
    os.environ["DLAAS_DATA_DIR"] = str(tmp_path_factory.mktemp("default-data-dir"))
    yield
    os.environ.pop("DLAAS_DATA_DIR", None)
    os.environ.update(saved)


@pytest.fixture(scope="session")
def trainer(tmp_path_factory) -> Iterator[RunningTrainer]:
    """One real embedded Trainer for the test session (jobs are per test user)."""
    running = start_trainer(tmp_path_factory.mktemp("trainer"))
    yield running
    stop_trainer(running)


@pytest.fixture
def user(request) -> str:
    """A user of its own per test, so jobs of other tests never show up."""
    return "u-" + request.node.name.replace("[", "-").replace("]", "")[:40]


@pytest.fixture
def trainer_env(trainer: RunningTrainer, user: str) -> dict[str, str]:
    """Environment variables pointing a subprocess at the test Trainer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLAAS_")}
    env.update(DLAAS_TRAINER_URL=trainer.url, DLAAS_TRAINER_TOKEN=trainer.token, DLAAS_USER=user)
    return env


@pytest.fixture
def client(trainer: RunningTrainer, user: str):
    from dlaas_jupyter.client import TrainerClient, TrainerConfig

    with TrainerClient(TrainerConfig.resolve(url=trainer.url, token=trainer.token, user=user)) as c:
        yield c


@pytest.fixture
async def aclient(trainer: RunningTrainer, user: str):
    from dlaas_jupyter.client import AsyncTrainerClient, TrainerConfig

    c = AsyncTrainerClient(TrainerConfig.resolve(url=trainer.url, token=trainer.token, user=user))
    yield c
    await c.close()


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def job_request(
    command: str,
    files: dict[str, str | bytes] | None = None,
    *,
    name: str = "test-job",
    learners: int = 0,
    cpus: float = 0,
    gpus: float = 0,
    memory_mib: float = 0,
    user_id: str = "",
    zip_bytes: bytes | None = None,
) -> pb.CreateRequest:
    """A CreateRequest for ``command`` over a zip of ``files`` (default: empty main.py)."""
    request = pb.CreateRequest(user_id=user_id)
    request.model_definition.name = name
    request.model_definition.framework.name = "python"
    request.model_definition.framework.version = "3"
    if zip_bytes is None:
        zip_bytes = make_zip(files or {"main.py": ""})
    request.model_definition.content = zip_bytes
    request.training.command = command
    res = request.training.resources
    res.learners, res.cpus, res.gpus = learners, cpus, gpus
    if memory_mib:
        res.memory, res.memory_unit = memory_mib, pb.MiB
    return request


def wait_until(what: str, check: Callable[[], T], timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def closed_port_url() -> str:
    """A grpc:// URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"grpc://127.0.0.1:{sock.getsockname()[1]}"


class Notes(list):
    """A metrics collector's note callback: keeps the (subid, message) pairs."""

    def __call__(self, subid: str, message: str) -> None:
        self.append((subid, message))


def anys(entries: Mapping[str, pb.Any]) -> dict[str, tuple[str, str]]:
    """A record's etimes or values as {key: (type name, text)}, for comparing."""
    return {key: (pb.Any.DataType.Name(a.type), a.value) for key, a in entries.items()}
