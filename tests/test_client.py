"""The sync TrainerClient over real gRPC on localhost, error translation, and
finding or starting the embedded Trainer.

The server here stands for a plain FfDL Trainer: it answers one page per log or
metrics query and ignores the follow hint, from an in-memory store that the test
grows while the client follows it. test_client_aio.py uses it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psutil
import pytest
from conftest import SMALL_CPUS, RunningTrainer, closed_port_url, job_request, wait_until

from dlaas_jupyter.client import (
    AuthenticationFailed,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    TrainerClient,
    TrainerConfig,
    TrainerError,
    TrainerUnavailable,
    Unsupported,
)
from dlaas_jupyter.client.embedded import ensure_running
from dlaas_jupyter.client.errors import translate
from dlaas_jupyter.paths import TrainerInfo, read_info
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc
from dlaas_jupyter.trainer.cli import main as trainer_cli

TOKEN = "s3cret"
USER = "ada"
CHUNK = 1000


@dataclass
class Seen:
    method: str
    request: Any
    metadata: dict[str, str]
    time_remaining: float | None


class FakeFfDL(pb_grpc.TrainerServicer):
    """FfDL's Trainer behaviour that the client depends on, in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, pb.Job] = {}
        self.logs: dict[str, list[pb.LogLine]] = {}
        self.metrics: dict[str, list[pb.EMetrics]] = {}
        self.models: dict[str, bytes] = {}
        self.break_model_download_after: int | None = None
        self.partial_file_sizes: list[int] = []
        self.watch_dir: Path | None = None
        self.seen: list[Seen] = []
        self.clock = 1_700_000_000_000

    # -- test side ---------------------------------------------------------
    def add_job(self, *, user: str = USER, learners: int = 1, content: bytes = b"zip") -> str:
        training_id = "training-" + secrets.token_hex(5)[:9]
        with self.lock:
            self.jobs[training_id] = pb.Job(
                training_id=training_id,
                user_id=user,
                model_definition=pb.ModelDefinition(name="m", content=content),
                training=pb.Training(resources=pb.ResourceRequirements(learners=learners)),
                status=pb.TrainingStatus(status=pb.PROCESSING),
            )
            self.logs[training_id] = []
            self.metrics[training_id] = []
        return training_id

    def append_logs(self, training_id: str, n: int, *, learners: int = 1) -> None:
        """n lines per learner; time strictly increasing, rindex per learner."""
        with self.lock:
            records = self.logs[training_id]
            for _ in range(n):
                for learner in range(1, learners + 1):
                    subid = f"learner-{learner}"
                    rindex = self._next_rindex(records, subid)
                    self.clock += 1
                    records.append(
                        pb.LogLine(
                            meta=pb.MetaInfo(
                                training_id=training_id,
                                user_id=USER,
                                time=self.clock,
                                rindex=rindex,
                                subid=subid,
                            ),
                            line=f"{subid} says {rindex}",
                        )
                    )

    @staticmethod
    def _next_rindex(records: list[pb.LogLine], subid: str) -> int:
        for record in reversed(records):
            if record.meta.subid == subid:
                return record.meta.rindex + 1
        return 1

    def append_metrics(self, training_id: str, n: int) -> None:
        with self.lock:
            records = self.metrics[training_id]
            for _ in range(n):
                self.clock += 1
                step = len(records) + 1
                records.append(
                    pb.EMetrics(
                        meta=pb.MetaInfo(training_id=training_id, time=self.clock, rindex=step),
                        grouplabel="train",
                        etimes={"iteration": pb.Any(type=pb.Any.INT, value=str(step))},
                        values={"loss": pb.Any(type=pb.Any.FLOAT, value=str(1 / step))},
                    )
                )

    def set_status(self, training_id: str, status: int) -> None:
        with self.lock:
            self.jobs[training_id].status.status = status

    def calls(self, method: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method]

    # -- server side -------------------------------------------------------
    async def _admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        with self.lock:
            self.seen.append(Seen(method, request, metadata, context.time_remaining()))
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing token")

    async def _job(
        self, training_id: str, user_id: str, context: grpc.aio.ServicerContext
    ) -> pb.Job:
        with self.lock:
            job = self.jobs.get(training_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"training job {training_id} not found")
        if job.user_id != user_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "User does not have permission to read training data",
            )
        return job

    async def CreateTrainingJob(self, request: pb.CreateRequest, context: Any) -> pb.CreateResponse:
        await self._admit("CreateTrainingJob", request, context)
        if not request.model_definition.name:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Model definition name is not set"
            )
        ids = {d.id for d in request.datastores}
        for ref in request.training.input_data:
            if ref not in ids:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Training input data reference '{ref}' does not reference "
                    "an existing datastore id.",
                )
        training_id = self.add_job(user=request.user_id, content=request.model_definition.content)
        return pb.CreateResponse(training_id=training_id)

    async def GetTrainingJob(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        await self._admit("GetTrainingJob", request, context)
        return pb.GetResponse(job=await self._job(request.training_id, request.user_id, context))

    async def GetTrainingStatusID(
        self, request: pb.GetRequest, context: Any
    ) -> pb.GetStatusIDResponse:
        await self._admit("GetTrainingStatusID", request, context)
        job = await self._job(request.training_id, request.user_id, context)
        return pb.GetStatusIDResponse(status=job.status.status)

    async def GetAllTrainingsJobs(
        self, request: pb.GetAllRequest, context: Any
    ) -> pb.GetAllResponse:
        await self._admit("GetAllTrainingsJobs", request, context)
        with self.lock:
            return pb.GetAllResponse(
                jobs=[j for j in self.jobs.values() if j.user_id == request.user_id]
            )

    async def HaltTrainingJob(self, request: pb.HaltRequest, context: Any) -> pb.HaltResponse:
        await self._admit("HaltTrainingJob", request, context)
        await self._job(request.training_id, request.user_id, context)
        self.set_status(request.training_id, pb.HALTED)
        return pb.HaltResponse(
            training_id=request.training_id, user_id=request.user_id, status=pb.HALTED
        )

    async def DeleteTrainingJob(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        await self._admit("DeleteTrainingJob", request, context)
        await self._job(request.training_id, request.user_id, context)
        with self.lock:
            del self.jobs[request.training_id]
        return pb.DeleteResponse(training_id=request.training_id)

    async def UpdateTrainingJob(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        await self._admit("UpdateTrainingJob", request, context)
        await self._job(request.training_id, request.user_id, context)
        self.set_status(request.training_id, request.status)
        return pb.UpdateResponse(training_id=request.training_id)

    async def ResumeTrainingJob(self, request: pb.ResumeRequest, context: Any) -> pb.ResumeResponse:
        await self._admit("ResumeTrainingJob", request, context)
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Method ResumeTrainingJob not implemented"
        )

    async def GetVersions(self, request: pb.GetVersionsRequest, context: Any) -> pb.Frameworks:
        await self._admit("GetVersions", request, context)
        return pb.Frameworks(
            frameworks={
                "tensorflow": pb.FrameworkDetailList(
                    versions=[pb.FrameworkDetails(version="1.5", external=True)]
                ),
                "pytorch": pb.FrameworkDetailList(
                    versions=[pb.FrameworkDetails(version="1.0", external=True)]
                ),
            }
        )

    def _page(self, records: list[Any], query: pb.Query) -> list[Any]:
        """FfDL's page rules (reference/ffdl-behaviour.md)."""
        n = query.pagesize or 10
        with self.lock:
            chosen = [
                r for r in records if not query.meta.subid or r.meta.subid == query.meta.subid
            ]
        if query.pos > 0:
            return [r for r in chosen if query.pos <= r.meta.rindex < query.pos + n]
        if query.pos < 0:
            return chosen[len(chosen) + (query.pos + 1) - n : len(chosen) + query.pos + 1]
        since = int(query.since) if query.since else 0
        return [r for r in chosen if r.meta.time >= since][:n]

    async def GetTrainingLogs(self, request: pb.Query, context: Any) -> AsyncIterator[pb.LogLine]:
        await self._admit("GetTrainingLogs", request, context)
        await self._job(request.meta.training_id, request.meta.user_id, context)
        for record in self._page(self.logs[request.meta.training_id], request):
            yield record

    async def GetTrainingEMetrics(
        self, request: pb.Query, context: Any
    ) -> AsyncIterator[pb.EMetrics]:
        await self._admit("GetTrainingEMetrics", request, context)
        await self._job(request.meta.training_id, request.meta.user_id, context)
        for record in self._page(self.metrics[request.meta.training_id], request):
            yield record

    async def GetModelDefinition(
        self, request: pb.ModelDefinitionRequest, context: Any
    ) -> AsyncIterator[pb.ZippedDataChunk]:
        await self._admit("GetModelDefinition", request, context)
        job = await self._job(request.training_id, request.user_id, context)
        content = job.model_definition.content
        for start in range(0, len(content), CHUNK):
            yield pb.ZippedDataChunk(data=content[start : start + CHUNK])

    async def GetTrainedModel(
        self, request: pb.TrainedModelRequest, context: Any
    ) -> AsyncIterator[pb.ZippedDataChunk]:
        await self._admit("GetTrainedModel", request, context)
        await self._job(request.training_id, request.user_id, context)
        model = self.models[request.training_id]
        for i, start in enumerate(range(0, len(model), CHUNK)):
            if i == self.break_model_download_after:
                await asyncio.sleep(0.3)  # let the client write what it has received
                if self.watch_dir is not None:
                    self.partial_file_sizes += [
                        p.stat().st_size for p in self.watch_dir.glob("*.part")
                    ]
                await context.abort(grpc.StatusCode.INTERNAL, "storage went away")
            yield pb.ZippedDataChunk(data=model[start : start + CHUNK])

    async def GetTrainedModelLogs(
        self, request: pb.TrainedModelLogRequest, context: Any
    ) -> AsyncIterator[pb.ByteStreamResponse]:
        await self._admit("GetTrainedModelLogs", request, context)
        await self._job(request.training_id, request.user_id, context)
        for record in list(self.logs[request.training_id]):
            yield pb.ByteStreamResponse(data=(record.line + "\n").encode())


class ServerThread:
    """A grpc.aio server on its own event loop in a thread, restartable on its port."""

    def __init__(self, servicer: FakeFfDL, tls: grpc.ServerCredentials | None = None) -> None:
        self.servicer = servicer
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        pb_grpc.add_TrainerServicer_to_server(self.servicer, self.server)
        address = f"127.0.0.1:{self.port}"
        if self.tls is None:
            port = self.server.add_insecure_port(address)
        else:
            port = self.server.add_secure_port(address, self.tls)
        await self.server.start()
        return port

    def start(self) -> None:
        self.port = self._run(self._start())

    def stop(self) -> None:
        self._run(self.server.stop(None))

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"{'grpc' if self.tls is None else 'grpcs'}://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = ServerThread(FakeFfDL())
    yield running
    running.close()


@pytest.fixture
def fake(server: ServerThread) -> FakeFfDL:
    return server.servicer


def config_for(url: str, *, token: str = TOKEN, user: str = USER) -> TrainerConfig:
    return TrainerConfig.resolve(url=url, token=token, user=user, environ={})


@pytest.fixture
def client(server: ServerThread) -> Iterator[TrainerClient]:
    with TrainerClient(config_for(server.url), timeout=5.0) as c:
        yield c


def create_request(**training: Any) -> pb.CreateRequest:
    return pb.CreateRequest(
        model_definition=pb.ModelDefinition(
            name="mnist",
            content=b"PK-zip",
            framework=pb.Framework(name="tensorflow", version="1.5"),
        ),
        training=pb.Training(command="python train.py", **training),
    )


def grow_then_finish(
    fake: FakeFfDL, training_id: str, *, bursts: list[int], learners: int = 1, pause: float = 0.05
) -> threading.Thread:
    """Append log bursts while the client follows, then end the job."""

    def run() -> None:
        for n in bursts:
            time.sleep(pause)
            fake.append_logs(training_id, n, learners=learners)
        fake.set_status(training_id, pb.COMPLETED)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- plain calls -------------------------------------------------------------


def test_create_fills_user_and_local_datastore(client: TrainerClient, fake: FakeFfDL) -> None:
    request = create_request()
    training_id = client.create(request)
    sent = fake.calls("CreateTrainingJob")[-1].request
    assert sent.user_id == USER
    assert list(sent.training.input_data) == ["local-data"]
    (store,) = sent.datastores
    assert (store.id, store.type) == ("local-data", "mount_volume")
    assert dict(store.connection) == {
        "type": "host_mount",
        "name": "host-mount",
        "path": os.getcwd(),
    }
    assert dict(store.fields) == {"bucket": ""}
    assert not request.datastores and not request.user_id, "the caller's request is left alone"
    assert client.get(training_id).model_definition.content == b"PK-zip"


def test_create_keeps_given_datastores_and_input(client: TrainerClient, fake: FakeFfDL) -> None:
    request = create_request(input_data=["mine"])
    request.user_id = "someone-else"
    request.datastores.append(pb.Datastore(id="mine", type="s3_datastore"))
    client.create(request)
    sent = fake.calls("CreateTrainingJob")[-1].request
    assert [d.id for d in sent.datastores] == ["mine"]
    assert list(sent.training.input_data) == ["mine"]
    assert sent.user_id == "someone-else"


def test_create_with_input_but_no_datastores_is_rejected_by_the_server(
    client: TrainerClient,
) -> None:
    with pytest.raises(InvalidRequest, match="Training input data reference 'elsewhere'"):
        client.create(create_request(input_data=["elsewhere"]))


def test_job_calls_send_user_token_and_deadline(client: TrainerClient, fake: FakeFfDL) -> None:
    mine = fake.add_job()
    fake.add_job(user="bob")
    assert [j.training_id for j in client.list()] == [mine]
    assert client.get(mine).training_id == mine
    assert client.status(mine) == pb.PROCESSING
    assert client.update(pb.UpdateRequest(training_id=mine, status=pb.STORING)) == mine
    assert client.status(mine) == pb.STORING
    assert client.halt(mine).status == pb.HALTED
    assert client.versions() == {
        "tensorflow": [pb.FrameworkDetails(version="1.5", external=True)],
        "pytorch": [pb.FrameworkDetails(version="1.0", external=True)],
    }
    client.delete(mine)
    with pytest.raises(JobNotFound) as caught:
        client.get(mine)
    assert caught.value.training_id == mine
    for seen in fake.seen:
        assert seen.metadata["authorization"] == f"Bearer {TOKEN}"
        # (the wire rounds the timeout up a little)
        assert seen.time_remaining is not None and 0 < seen.time_remaining < 5.1, seen.method
        user = getattr(seen.request, "user_id", None)
        assert user in (USER, None), seen.method  # GetVersionsRequest has no user


def test_someone_elses_job_is_permission_denied(client: TrainerClient, fake: FakeFfDL) -> None:
    theirs = fake.add_job(user="bob")
    with pytest.raises(PermissionDenied) as caught:
        client.halt(theirs)
    assert caught.value.training_id == theirs
    assert "permission" in str(caught.value)


def test_invalid_request_carries_the_servers_message(client: TrainerClient) -> None:
    request = create_request()
    request.model_definition.name = ""
    with pytest.raises(InvalidRequest, match=r"^Model definition name is not set$"):
        client.create(request)


def test_wrong_token_says_to_check_the_token(server: ServerThread) -> None:
    with (
        TrainerClient(config_for(server.url, token="wrong")) as c,
        pytest.raises(AuthenticationFailed, match="DLAAS_TRAINER_TOKEN"),
    ):
        c.list()


def test_resume_is_unsupported_on_ffdl(client: TrainerClient, fake: FakeFfDL) -> None:
    with pytest.raises(Unsupported):
        client.resume(fake.add_job())


def test_closed_port_is_trainer_unavailable() -> None:
    url = closed_port_url()
    with TrainerClient(config_for(url), timeout=5.0) as c:
        started = time.monotonic()
        with pytest.raises(TrainerUnavailable) as caught:
            c.list()
    assert time.monotonic() - started < 4, "an unreachable Trainer fails fast"
    assert caught.value.address == url
    assert str(caught.value).startswith(f"Trainer at {url} is unreachable: ")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_ca_file_and_server_name(tmp_path: Path) -> None:
    """As against a real FfDL: its certificate names dlaas.ibm.com, not the host dialled."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", "/CN=dlaas.ibm.com",
         "-addext", "subjectAltName=DNS:dlaas.ibm.com"],
        check=True, capture_output=True,
    )  # fmt: skip
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    running = ServerThread(FakeFfDL(), tls=credentials)
    try:
        env = {"DLAAS_TRAINER_CA": str(cert), "DLAAS_TRAINER_SERVER_NAME": "dlaas.ibm.com"}
        config = TrainerConfig.resolve(url=running.url, token=TOKEN, user=USER, environ=env)
        with TrainerClient(config) as c:
            assert c.address.startswith("grpcs://")
            assert c.list() == []
        unnamed = TrainerConfig.resolve(url=running.url, token=TOKEN, ca_file=str(cert), environ={})
        with TrainerClient(unnamed) as c, pytest.raises(TrainerUnavailable):
            c.list()
    finally:
        running.close()


# -- pages and live follow ---------------------------------------------------


def test_logs_and_emetrics_pages(client: TrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 25)
    fake.append_metrics(training_id, 5)
    assert [r.meta.rindex for r in client.logs(training_id)] == list(range(1, 11))
    assert [r.meta.rindex for r in client.logs(training_id, pos=20, pagesize=100)] == list(
        range(20, 26)
    )
    assert [r.meta.rindex for r in client.logs(training_id, pos=-1, pagesize=3)] == [23, 24, 25]
    assert client.logs(training_id, subid="learner-2") == []
    metrics = client.emetrics(training_id, pagesize=2)
    assert [m.values["loss"].value for m in metrics] == ["1.0", "0.5"]
    assert fake.calls("GetTrainingLogs")[0].time_remaining is not None


def test_follow_logs_one_learner_while_the_log_grows(client: TrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 1500)
    producer = grow_then_finish(fake, training_id, bursts=[999, 1, 0, 2000, 3])
    got = [r.meta.rindex for r in client.follow_logs(training_id, poll_interval=0.02)]
    producer.join()
    assert got == list(range(1, 4504))
    queries = fake.calls("GetTrainingLogs")
    assert all(q.metadata.get("authorization") == f"Bearer {TOKEN}" for q in queries)
    assert queries[0].metadata.get("dlaas-follow") == "1"
    assert queries[0].time_remaining is None, "a follow stream may stay open: no deadline"
    assert "dlaas-follow" not in queries[-1].metadata, "the final drain is a plain page"
    assert all(q.request.meta.user_id == USER and q.request.pagesize == 1000 for q in queries)


def test_follow_logs_several_learners_by_time(client: TrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job(learners=3)
    fake.append_logs(training_id, 400, learners=3)
    producer = grow_then_finish(fake, training_id, bursts=[500, 7, 333], learners=3)
    got = list(client.follow_logs(training_id, poll_interval=0.02))
    producer.join()
    assert [(r.meta.subid, r.meta.rindex) for r in got] == [
        (r.meta.subid, r.meta.rindex) for r in fake.logs[training_id]
    ]
    assert len(got) == 3 * 1240
    assert all(q.request.pos == 0 and q.request.since for q in fake.calls("GetTrainingLogs"))


def test_follow_emetrics(client: TrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_metrics(training_id, 1200)
    fake.set_status(training_id, pb.FAILED)
    got = list(client.follow_emetrics(training_id, poll_interval=0.02))
    assert [m.meta.rindex for m in got] == list(range(1, 1201))


def test_follow_survives_a_trainer_restart(
    server: ServerThread, client: TrainerClient, fake: FakeFfDL
) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 100)
    follow = client.follow_logs(training_id, poll_interval=0.05)
    got = [next(follow).meta.rindex for _ in range(100)]
    server.stop()
    fake.append_logs(training_id, 50)
    time.sleep(0.5)
    server.start()
    fake.append_logs(training_id, 50)
    fake.set_status(training_id, pb.COMPLETED)
    got += [r.meta.rindex for r in follow]
    assert got == list(range(1, 201))


def test_follow_unknown_job(client: TrainerClient) -> None:
    with pytest.raises(JobNotFound):
        list(client.follow_logs("training-nosuchjob"))


# -- downloads -----------------------------------------------------------------


def test_download_definition_in_many_chunks(
    client: TrainerClient, fake: FakeFfDL, tmp_path: Path
) -> None:
    content = os.urandom(250 * CHUNK + 17)
    training_id = fake.add_job(content=content)
    dest = client.download_definition(training_id, tmp_path / "def.zip")
    assert dest == tmp_path / "def.zip" and dest.read_bytes() == content
    into_folder = client.download_definition(training_id, tmp_path)
    assert into_folder == tmp_path / f"{training_id}-definition.zip"
    assert into_folder.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["def.zip", into_folder.name])


def test_failed_download_leaves_no_file(
    client: TrainerClient, fake: FakeFfDL, tmp_path: Path
) -> None:
    training_id = fake.add_job()
    fake.models[training_id] = os.urandom(300 * CHUNK)
    fake.break_model_download_after = 200
    fake.watch_dir = tmp_path
    (tmp_path / "model.zip").write_bytes(b"previous download")
    with pytest.raises(TrainerError, match="INTERNAL: storage went away"):
        client.download_trained_model(training_id, tmp_path / "model.zip")
    # The chunks were on disk before the stream failed (not held in memory) ...
    assert fake.partial_file_sizes and fake.partial_file_sizes[0] >= 150 * CHUNK
    # ... and the failure removed them, leaving the earlier file untouched.
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    assert (tmp_path / "model.zip").read_bytes() == b"previous download"


def test_download_trained_model(client: TrainerClient, fake: FakeFfDL, tmp_path: Path) -> None:
    training_id = fake.add_job()
    fake.models[training_id] = os.urandom(42 * CHUNK)
    dest = client.download_trained_model(training_id, tmp_path)
    assert dest.name == f"{training_id}-trainedmodel.zip"
    assert dest.read_bytes() == fake.models[training_id]


def test_trained_model_logs(client: TrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 3)
    data = b"".join(client.trained_model_logs(training_id, follow=True))
    assert data == b"learner-1 says 1\nlearner-1 says 2\nlearner-1 says 3\n"
    assert fake.calls("GetTrainedModelLogs")[0].request.follow


# -- error translation ---------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            TrainerUnavailable,
            "Trainer at grpc://h:1 is unreachable: boom",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, TrainerUnavailable, "no answer before the deadline"),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationFailed, "check DLAAS_TRAINER_TOKEN"),
        (grpc.StatusCode.NOT_FOUND, JobNotFound, "'training-x' was not found: boom"),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied, "'training-x': boom"),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest, "boom"),
        (grpc.StatusCode.UNIMPLEMENTED, Unsupported, "does not support this call: boom"),
        (grpc.StatusCode.FAILED_PRECONDITION, TrainerError, "FAILED_PRECONDITION: boom"),
    ],
)
def test_translate(code: grpc.StatusCode, kind: type[Exception], words: str) -> None:
    err = translate(FakeRpcError(code, "boom"), address="grpc://h:1", training_id="training-x")
    assert type(err) is kind
    assert words in str(err)


def test_translate_keeps_code_and_ids() -> None:
    other = translate(FakeRpcError(grpc.StatusCode.INTERNAL, "x"), address="grpc://h:1")
    assert isinstance(other, TrainerError) and other.code is grpc.StatusCode.INTERNAL
    gone = translate(FakeRpcError(grpc.StatusCode.NOT_FOUND, "x"), address="a", training_id="t")
    assert isinstance(gone, JobNotFound) and gone.training_id == "t"
    down = translate(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x"), address="grpc://h:1")
    assert isinstance(down, TrainerUnavailable) and down.address == "grpc://h:1"


# -- the embedded Trainer: finding it, starting it ------------------------------


def write_info(data_dir: Path, pid: int, url: str = "grpc://127.0.0.1:1") -> None:
    (data_dir / "trainer.json").write_text(json.dumps({"url": url, "token": "tok", "pid": pid}))


def test_read_info(tmp_path: Path) -> None:
    assert read_info(tmp_path) is None
    (tmp_path / "trainer.json").write_text('{"url": "grpc://127.0.0.1:1", "tok')
    assert read_info(tmp_path) is None, "a half-written file is not a Trainer"
    write_info(tmp_path, os.getpid())
    assert read_info(tmp_path) == TrainerInfo("grpc://127.0.0.1:1", "tok", os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_info(tmp_path, dead.pid)
    assert read_info(tmp_path) is None


def test_read_info_ignores_a_reused_pid(tmp_path: Path) -> None:
    write_info(tmp_path, os.getpid())
    long_ago = psutil.Process().create_time() - 60
    os.utime(tmp_path / "trainer.json", (long_ago, long_ago))
    assert read_info(tmp_path) is None


def test_trainer_stop_leaves_a_process_that_reused_a_stale_pid_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """trainer.json left by a killed Trainer names a pid now used by another
    process (here: this test's own): `dlaas-trainer stop` must not signal it."""
    write_info(tmp_path, os.getpid())
    long_ago = psutil.Process().create_time() - 60
    os.utime(tmp_path / "trainer.json", (long_ago, long_ago))
    assert trainer_cli(["stop", "--data-dir", str(tmp_path)]) == 0
    assert trainer_cli(["status", "--data-dir", str(tmp_path)]) == 3
    assert capsys.readouterr().out.count("no Trainer is running") == 2


def test_ensure_running_returns_a_live_trainer_without_starting_one(tmp_path: Path) -> None:
    write_info(tmp_path, os.getpid(), url="grpc://127.0.0.1:4242")
    assert ensure_running(tmp_path).url == "grpc://127.0.0.1:4242"
    assert not (tmp_path / "trainer.log").exists()


# A stand-in for `python -m dlaas_jupyter.trainer serve` that follows the
# Trainer's start-up protocol (exclusive lock, then trainer.json) or crashes.
FAKE_TRAINER_MAIN = textwrap.dedent("""
    import fcntl, json, os, sys, time
    data_dir = sys.argv[sys.argv.index("--data-dir") + 1]
    if os.environ.get("FAKE_TRAINER") == "crash":
        sys.exit("trainer: cannot open the job store: disk on fire")
    lock = open(os.path.join(data_dir, "trainer.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("another Trainer serves", data_dir)
        sys.exit(1)
    time.sleep(0.5)  # a slow start widens the race
    tmp = os.path.join(data_dir, "trainer.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"url": "grpc://127.0.0.1:5555", "token": "t", "pid": os.getpid()}, f)
    os.replace(tmp, os.path.join(data_dir, "trainer.json"))
    time.sleep(120)
""")


@pytest.fixture
def fake_trainer_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in first on PYTHONPATH as ``dlaas_jupyter.trainer``; the
    rest of ``dlaas_jupyter`` still comes from the real package."""
    import dlaas_jupyter

    root = tmp_path / "fakepkg"
    package = root / "dlaas_jupyter" / "trainer"
    package.mkdir(parents=True)
    real = list(dlaas_jupyter.__path__)
    (root / "dlaas_jupyter" / "__init__.py").write_text(f"__path__.extend({real!r})\n")
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_TRAINER_MAIN)
    monkeypatch.setenv("PYTHONPATH", str(root))
    return root


def live_trainers(data_dir: Path) -> list[int]:
    """Pids of running (fake) Trainers serving ``data_dir``."""
    pids = []
    for process in psutil.process_iter():
        try:
            cmdline = process.cmdline()
            if (
                "dlaas_jupyter.trainer" in cmdline
                and str(data_dir) in cmdline
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                pids.append(process.pid)
        except psutil.Error:
            pass
    return pids


ENSURE_RUNNING = (
    "import json, sys; from pathlib import Path; "
    "from dlaas_jupyter.client.embedded import ensure_running; "
    "print(json.dumps(ensure_running(Path(sys.argv[1]), timeout=20).__dict__))"
)


def test_concurrent_starts_end_with_one_trainer(tmp_path: Path, fake_trainer_package: Path) -> None:
    """Several processes (a kernel, the server...) starting it at once."""
    data_dir = tmp_path / "data"
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE_RUNNING, str(data_dir)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    infos = {caller.communicate(timeout=30)[0] for caller in callers}
    try:
        assert len(infos) == 1
        info = TrainerInfo(**json.loads(infos.pop()))
        assert info.url == "grpc://127.0.0.1:5555"
        assert oct(data_dir.stat().st_mode & 0o777) == oct(0o700)
        assert "another Trainer serves" in (data_dir / "trainer.log").read_text()
        time.sleep(0.5)  # losers started last have exited by now
        assert live_trainers(data_dir) == [info.pid]
    finally:
        for pid in live_trainers(data_dir):
            psutil.Process(pid).kill()


def test_threads_of_one_process_start_it_once(tmp_path: Path, fake_trainer_package: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        infos = set(pool.map(lambda _: ensure_running(tmp_path, timeout=20), range(4)))
    try:
        assert len(infos) == 1
        assert "another Trainer serves" not in (tmp_path / "trainer.log").read_text()
    finally:
        for pid in live_trainers(tmp_path):
            psutil.Process(pid).kill()


def test_trainer_that_does_not_start_is_reported_with_its_log(
    tmp_path: Path, fake_trainer_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "crash")
    with pytest.raises(TrainerUnavailable) as caught:
        ensure_running(tmp_path, timeout=1.0)
    message = str(caught.value)
    assert str(tmp_path / "trainer.log") in message
    assert "did not start within 1 s" in message
    assert "disk on fire" in message


# -- against the real embedded Trainer -------------------------------------------

# Lines stamped with the time they were printed, a little apart.
STAMPED = """\
import os, time
time.sleep(0.5)
for i in range(8):
    print(f"stamp {time.time():.3f} {os.environ['LEARNER_ID']} {i}", flush=True)
    time.sleep(0.2)
"""
CHATTY = """\
import os
for i in range(1500):
    print(f"learner {os.environ['LEARNER_ID']} line {i}")
"""


@pytest.fixture
def real_client(
    trainer: RunningTrainer, user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrainerClient]:
    monkeypatch.chdir(tmp_path)  # the local datastore a job gets by default
    config = TrainerConfig.resolve(url=trainer.url, token=trainer.token, user=user, environ={})
    with TrainerClient(config) as c:
        yield c


def test_real_trainer_pushes_lines_as_they_are_printed(real_client: TrainerClient) -> None:
    training_id = real_client.create(
        job_request("python main.py", {"main.py": STAMPED}, cpus=SMALL_CPUS)
    )
    lines, delays = [], []
    # Polling every 30 s would make the delays huge: these lines are pushed.
    for record in real_client.follow_logs(training_id, poll_interval=30):
        lines.append(record.line)
        if record.line.startswith("stamp "):
            delays.append(time.time() - float(record.line.split()[1]))
    assert [line.split()[2:] for line in lines if line.startswith("stamp ")] == [
        ["1", str(i)] for i in range(8)
    ]
    assert real_client.status(training_id) == pb.COMPLETED
    assert max(delays) < 3.0, delays


def test_real_trainer_several_learners_followed_by_time(real_client: TrainerClient) -> None:
    request = job_request("python main.py", {"main.py": CHATTY}, cpus=SMALL_CPUS, learners=2)
    training_id = real_client.create(request)
    got = list(real_client.follow_logs(training_id, poll_interval=0.5))
    for learner in ("1", "2"):
        mine = [r for r in got if r.line.startswith(f"learner {learner} ")]
        assert [r.line for r in mine] == [f"learner {learner} line {i}" for i in range(1500)]
        assert [r.meta.rindex for r in mine] == list(range(1, 1501))
    assert len({(r.meta.subid, r.meta.rindex) for r in got}) == len(got)
    assert real_client.status(training_id) == pb.COMPLETED


GATED_COUNT = """\
import os, sys, time
for i in range(1, 501):
    print(f"before {i}", flush=True)
while not os.path.exists(os.path.join(os.environ["DATA_DIR"], "go")):
    time.sleep(0.02)
for i in range(1, 4):
    print(f"after {i}", flush=True)
"""


@pytest.mark.parametrize("learners", [1, 2])
def test_real_trainer_follow_with_a_tail_skips_older_lines_only(
    real_client: TrainerClient, learners: int
) -> None:
    request = job_request(
        "python main.py", {"main.py": GATED_COUNT}, cpus=SMALL_CPUS, learners=learners
    )
    training_id = real_client.create(request)
    wait_until(
        "the job's first lines",
        lambda: len(real_client.logs(training_id, pos=-1, pagesize=1000)) >= 500 * learners,
    )
    follow = real_client.follow_logs(training_id, poll_interval=0.1, tail=10)
    head = [next(follow) for _ in range(10)]
    (Path.cwd() / "go").touch()  # the job's DATA_DIR: the datastore is the cwd
    rest = [(r.meta.subid, r.line) for r in follow]
    assert real_client.status(training_id) == pb.COMPLETED
    if learners == 1:
        assert [r.line for r in head] == [f"before {i}" for i in range(491, 501)]
    else:  # the last 10 lines by time: each learner's share is the end of its lines
        for subid in ("learner-1", "learner-2"):
            numbers = [int(r.line.split()[1]) for r in head if r.meta.subid == subid]
            assert numbers == list(range(501 - len(numbers), 501)), (subid, numbers)
    learner_ids = [f"learner-{n}" for n in range(1, learners + 1)]
    assert sorted(rest) == sorted((s, f"after {i}") for s in learner_ids for i in (1, 2, 3))


def test_real_trainer_halt_and_downloads(real_client: TrainerClient, tmp_path: Path) -> None:
    gated = 'echo started; while [ ! -e "$DATA_DIR/go" ]; do sleep 0.05; done'
    request = job_request(gated, {"main.py": "print('hi')\n"}, cpus=SMALL_CPUS)
    training_id = real_client.create(request)
    follow = real_client.follow_logs(training_id, poll_interval=0.2)
    assert next(follow).line == "started"
    assert real_client.halt(training_id).status == pb.HALTED
    assert [r.line for r in follow] == []
    definition = real_client.download_definition(training_id, tmp_path / "def.zip")
    assert definition.read_bytes() == request.model_definition.content
    model = real_client.download_trained_model(training_id, tmp_path)
    assert model.name == f"{training_id}-trainedmodel.zip" and zipfile.is_zipfile(model)
    real_client.delete(training_id)
    with pytest.raises(JobNotFound):
        real_client.get(training_id)


def test_embedded_trainer_is_started_on_demand(tmp_path: Path, user: str) -> None:
    config = TrainerConfig.resolve(data_dir=tmp_path / "data", user=user, environ={})
    assert config.embedded
    with TrainerClient(config) as first:
        info = read_info(tmp_path / "data")
        assert info is not None and first.address == info.url
        assert first.list() == []
    try:
        with TrainerClient(config) as second:
            assert second.address == info.url, "the running Trainer is reused"
            assert second.versions()
    finally:
        process = psutil.Process(info.pid)
        process.terminate()
        process.wait(30)
