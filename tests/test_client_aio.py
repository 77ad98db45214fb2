"""The asyncio client against the same page-only FfDL stand-in as test_client.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import psutil
import pytest
from conftest import SMALL_CPUS, closed_port_url, job_request
from test_client import (  # the shared FfDL stand-in and its fixtures
    CHUNK,
    STAMPED,
    TOKEN,
    USER,
    FakeFfDL,
    ServerThread,
    config_for,
    create_request,
    fake,
    fake_trainer_package,
    server,
)

from dlaas_jupyter.client import (
    AsyncTrainerClient,
    AuthenticationFailed,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    TrainerConfig,
    TrainerError,
    TrainerUnavailable,
    Unsupported,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

__all__ = ["fake", "fake_trainer_package", "server"]  # fixtures used by name


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[AsyncTrainerClient]:
    async with AsyncTrainerClient(config_for(server.url), timeout=5.0) as c:
        yield c


async def grow_then_finish(
    fake: FakeFfDL, training_id: str, bursts: list[int], learners: int = 1
) -> None:
    for n in bursts:
        await asyncio.sleep(0.03)
        fake.append_logs(training_id, n, learners=learners)
    fake.set_status(training_id, pb.COMPLETED)


class LoopTicks:
    """Counts 10 ms sleeps the event loop completes inside the block: a blocked loop counts none."""

    def __init__(self) -> None:
        self.count = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._task.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.count += 1


async def test_calls(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = await client.create(create_request())
    sent = fake.calls("CreateTrainingJob")[0].request
    assert sent.user_id == USER and [d.id for d in sent.datastores] == ["local-data"]
    assert [j.training_id for j in await client.list()] == [training_id]
    assert (await client.get(training_id)).model_definition.content == b"PK-zip"
    assert (
        await client.update(pb.UpdateRequest(training_id=training_id, status=pb.STORING))
        == training_id
    )
    assert await client.status(training_id) == pb.STORING
    assert (await client.halt(training_id)).status == pb.HALTED
    assert set(await client.versions()) == {"tensorflow", "pytorch"}
    await client.delete(training_id)
    with pytest.raises(JobNotFound):
        await client.status(training_id)
    for seen in fake.seen:
        assert seen.metadata["authorization"] == f"Bearer {TOKEN}"
        assert seen.time_remaining is not None and 0 < seen.time_remaining < 5.1, seen.method


async def test_errors(client: AsyncTrainerClient, fake: FakeFfDL, server: ServerThread) -> None:
    with pytest.raises(PermissionDenied):
        await client.get(fake.add_job(user="bob"))
    with pytest.raises(Unsupported):
        await client.resume(fake.add_job())
    bad = create_request()
    bad.model_definition.name = ""
    with pytest.raises(InvalidRequest, match="Model definition name is not set"):
        await client.create(bad)
    async with AsyncTrainerClient(config_for(server.url, token="nope")) as wrong:
        with pytest.raises(AuthenticationFailed, match="DLAAS_TRAINER_TOKEN"):
            await wrong.list()
    address = closed_port_url()
    async with AsyncTrainerClient(config_for(address)) as closed:
        with pytest.raises(TrainerUnavailable, match=f"^Trainer at {address} is unreachable"):
            await closed.list()


async def test_pages(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 12)
    fake.append_metrics(training_id, 3)
    assert [r.meta.rindex for r in await client.logs(training_id, pos=5, pagesize=4)] == [
        5,
        6,
        7,
        8,
    ]
    assert len(await client.emetrics(training_id)) == 3


async def test_follow_logs_keeps_the_loop_free(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 1000)
    producer = asyncio.create_task(grow_then_finish(fake, training_id, [1000, 0, 1, 1499]))
    async with LoopTicks() as ticks:
        started = time.monotonic()
        got = [r.meta.rindex async for r in client.follow_logs(training_id, poll_interval=0.02)]
        elapsed = time.monotonic() - started
    await producer
    assert got == list(range(1, 3501))
    assert ticks.count >= max(10, 0.2 * elapsed / 0.01), (
        "the loop kept running other tasks while following"
    )
    queries = fake.calls("GetTrainingLogs")
    assert queries[0].metadata.get("dlaas-follow") == "1"
    assert "dlaas-follow" not in queries[-1].metadata


async def test_follow_several_learners(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job(learners=2)
    fake.append_logs(training_id, 600, learners=2)
    producer = asyncio.create_task(grow_then_finish(fake, training_id, [3, 700], learners=2))
    got = [
        (r.meta.subid, r.meta.rindex)
        async for r in client.follow_logs(training_id, poll_interval=0.02)
    ]
    await producer
    assert got == [(r.meta.subid, r.meta.rindex) for r in fake.logs[training_id]]
    assert len(got) == 2 * 1303


async def test_follow_emetrics_and_stop_early(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_metrics(training_id, 20)
    follow = client.follow_emetrics(training_id, poll_interval=0.02)
    first = [await anext(follow) for _ in range(5)]
    assert [m.meta.rindex for m in first] == [1, 2, 3, 4, 5]
    await follow.aclose()  # type: ignore[attr-defined]
    fake.set_status(training_id, pb.COMPLETED)
    rest = [m.meta.rindex async for m in client.follow_emetrics(training_id)]
    assert rest == list(range(1, 21))


async def test_downloads(client: AsyncTrainerClient, fake: FakeFfDL, tmp_path: Path) -> None:
    content = os.urandom(120 * CHUNK + 1)
    training_id = fake.add_job(content=content)
    dest = await client.download_definition(training_id, tmp_path)
    assert dest == tmp_path / f"{training_id}-definition.zip" and dest.read_bytes() == content

    fake.models[training_id] = os.urandom(100 * CHUNK)
    fake.break_model_download_after = 60
    with pytest.raises(TrainerError, match="storage went away"):
        await client.download_trained_model(training_id, tmp_path / "model.zip")
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


async def test_trained_model_logs(client: AsyncTrainerClient, fake: FakeFfDL) -> None:
    training_id = fake.add_job()
    fake.append_logs(training_id, 2)
    chunks = [c async for c in client.trained_model_logs(training_id, is_metrics=True)]
    assert chunks == [b"learner-1 says 1\n", b"learner-1 says 2\n"]
    assert fake.calls("GetTrainedModelLogs")[0].request.is_metrics


async def test_embedded_trainer_is_started_off_the_loop(
    tmp_path: Path, fake_trainer_package: Path
) -> None:
    config = TrainerConfig.resolve(data_dir=tmp_path, user=USER, environ={})
    client = AsyncTrainerClient(config)
    assert not (tmp_path / "trainer.log").exists(), "creating the client does no I/O"
    with pytest.raises(RuntimeError, match="await connect"):
        _ = client.address
    async with LoopTicks() as ticks:
        await client.connect()
    try:
        assert client.address == "grpc://127.0.0.1:5555"
        assert ticks.count >= 10, "the fake Trainer takes 0.5 s to start; the loop ran meanwhile"
    finally:
        await client.close()
        psutil.Process(json.loads((tmp_path / "trainer.json").read_text())["pid"]).kill()


async def test_real_trainer_follow_and_embedded_start(
    tmp_path: Path, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start the real embedded Trainer from the loop, run a job, follow it live."""
    monkeypatch.chdir(tmp_path)
    config = TrainerConfig.resolve(data_dir=tmp_path / "data", user=user, environ={})
    client = AsyncTrainerClient(config)
    try:
        async with client:
            request = job_request("python main.py", {"main.py": STAMPED}, cpus=SMALL_CPUS)
            training_id = await client.create(request)
            lines = [r.line async for r in client.follow_logs(training_id, poll_interval=30)]
            assert [line.split()[3] for line in lines if line.startswith("stamp ")] == [
                str(i) for i in range(8)
            ]
            assert await client.status(training_id) == pb.COMPLETED
            assert [j.training_id for j in await client.list()] == [training_id]
    finally:
        info = json.loads((tmp_path / "data" / "trainer.json").read_text())
        process = psutil.Process(info["pid"])
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
