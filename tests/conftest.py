"""Shared fixtures: a real embedded Trainer on localhost, its raw stub, and job builders."""

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
from typing import Self, TypeVar

import grpc
import pytest

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc

# For jobs on the session Trainer: small, so jobs of different tests never queue
# behind each other.
SMALL_CPUS = 0.25
TERMINAL = (pb.COMPLETED, pb.FAILED, pb.HALTED)
CALL_TIMEOUT = 30.0

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


class Api:
    """The raw Trainer stub of one user, with the calls tests repeat."""

    def __init__(self, trainer: RunningTrainer, user: str) -> None:
        self.trainer = trainer
        self.user = user
        self.channel = grpc.insecure_channel(
            trainer.target, options=[("grpc.max_receive_message_length", 64 * 2**20)]
        )
        self.stub = pb_grpc.TrainerStub(self.channel)
        self.md = trainer.metadata

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, request: pb.CreateRequest) -> str:
        request.user_id = self.user
        reply = self.stub.CreateTrainingJob(request, metadata=self.md, timeout=CALL_TIMEOUT)
        return reply.training_id

    def job(self, tid: str) -> pb.Job:
        request = pb.GetRequest(training_id=tid, user_id=self.user)
        return self.stub.GetTrainingJob(request, metadata=self.md, timeout=CALL_TIMEOUT).job

    def wait(self, tid: str, *statuses: int, timeout: float = 60.0) -> pb.Job:
        """Poll until the job is in one of ``statuses`` (default: any terminal one)."""
        wanted = statuses or TERMINAL
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(tid)
            if job.status.status in wanted:
                return job
            if job.status.status in TERMINAL or time.monotonic() > deadline:
                names = [pb.Status.Name(s) for s in wanted]
                pytest.fail(f"{tid} is {pb.Status.Name(job.status.status)} "
                            f"({job.status.status_message!r}), expected one of {names}")
            time.sleep(0.02)

    def page(
        self, tid: str, *, pos: int = 0, pagesize: int = 1000, since: str = ""
    ) -> list[pb.LogLine]:
        """One page of the job's log (FfDL's Query rules)."""
        query = pb.Query(meta=pb.MetaInfo(training_id=tid, user_id=self.user),
                         pos=pos, pagesize=pagesize, since=since)
        return list(self.stub.GetTrainingLogs(query, metadata=self.md, timeout=CALL_TIMEOUT))

    def logs(self, tid: str) -> list[pb.LogLine]:
        """Every stored line of the job in time order (time is a unique cursor)."""
        lines: list[pb.LogLine] = []
        while page := self.page(tid, since=str(lines[-1].meta.time + 1) if lines else ""):
            lines.extend(page)
        return lines

    def texts(self, tid: str) -> list[str]:
        return [line.line for line in self.logs(tid)]

    def wait_for_line(self, tid: str, prefix: str, timeout: float = 30.0) -> pb.LogLine:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.logs(tid):
                if line.line.startswith(prefix):
                    return line
            time.sleep(0.05)
        pytest.fail(f"{tid} printed no line starting {prefix!r}: {self.texts(tid)}")

    def trained_model(self, tid: str) -> zipfile.ZipFile:
        request = pb.TrainedModelRequest(training_id=tid, user_id=self.user)
        chunks = self.stub.GetTrainedModel(request, metadata=self.md, timeout=CALL_TIMEOUT)
        return zipfile.ZipFile(io.BytesIO(b"".join(c.data for c in chunks)))

    def halt(self, tid: str) -> pb.HaltResponse:
        request = pb.HaltRequest(training_id=tid, user_id=self.user)
        return self.stub.HaltTrainingJob(request, metadata=self.md, timeout=CALL_TIMEOUT)

    def delete(self, tid: str) -> pb.DeleteResponse:
        request = pb.DeleteRequest(training_id=tid, user_id=self.user)
        return self.stub.DeleteTrainingJob(request, metadata=self.md, timeout=CALL_TIMEOUT)


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
def api(trainer: RunningTrainer, user: str) -> Iterator[Api]:
    """The session Trainer's raw stub as this test's user."""
    with Api(trainer, user) as client:
        yield client


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


def with_data(request: pb.CreateRequest, data_dir: Path) -> pb.CreateRequest:
    """Mount ``data_dir`` as the job's input data (FfDL's host_mount volume)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    request.datastores.add(id="d", type="mount_volume",
                           connection={"type": "host_mount", "path": str(data_dir)})
    request.training.input_data.append("d")
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
