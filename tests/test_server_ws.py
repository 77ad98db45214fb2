"""The server extension's WebSockets, in a real Jupyter server over the session's
real embedded Trainer: a job's events until it ends, and the live job list."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_CPUS, closed_port_url, job_request
from pytest_jupyter.jupyter_server import *  # noqa: F403 - the fixtures; see test_server_ext.py
from test_server_ext import (  # the shared server fixtures and helpers
    Api,
    api,
    jp_asyncio_loop,
    jp_server_config,
    trainer_url,
)
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from benchmarks.kernel import write_notebook
from dlaas_jupyter.client import AsyncTrainerClient, TrainerConfig
from dlaas_jupyter.server_ext.websockets import (
    BATCH,
    LIST_COST_FACTOR,
    MIN_INTERVAL,
    JobListWatcher,
    Outbox,
)

__all__ = ["api", "jp_asyncio_loop", "jp_server_config", "trainer_url"]  # fixtures used by name

GATE_CELL = """\
import os, time
gate = os.path.join(os.environ["DATA_DIR"], "release")
while not os.path.exists(gate):
    time.sleep(0.02)
"""
LINES = 20_000
FLOOD_CELL = f"""\
for i in range(1, {LINES + 1}):
    print(f"line {{i}}")
    if i % 1000 == 0:
        print(f"step {{i // 1000}} loss {{1000 / i}}", flush=True)
"""
LIFECYCLE = ["QUEUED", "PENDING", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED"]


async def receive(ws: WebSocketClientConnection, timeout: float = 60) -> dict[str, Any] | None:
    """The next message, decoded; None once the server closed the socket."""
    text = await asyncio.wait_for(ws.read_message(), timeout)
    return None if text is None else json.loads(text)


async def until_end(ws: WebSocketClientConnection) -> tuple[list[dict], list[float]]:
    """Every message up to and including "end", with the loop time each arrived."""
    loop = asyncio.get_running_loop()
    messages, arrivals = [], []
    while True:
        message = await receive(ws)
        assert message is not None, f"closed without end after {messages[-3:]}"
        messages.append(message)
        arrivals.append(loop.time())
        if message["type"] in ("end", "error"):
            return messages, arrivals


def logged(messages: list[dict]) -> list[dict]:
    """The log lines the "log" messages carried, in order."""
    return [line for m in messages if m["type"] == "log" for line in m["lines"]]


async def all_lines(api: Api, training_id: str) -> list[dict]:
    lines: list[dict] = []
    while page := (
        await api.get(
            f"jobs/{training_id}/logs", params={"pos": str(len(lines) + 1), "pagesize": "1000"}
        )
    )["lines"]:
        lines.extend(page)
    return lines


async def test_a_jobs_events_from_submission_to_end(
    api: Api, jp_ws_fetch, jp_root_dir: Path
) -> None:
    write_notebook(jp_root_dir / "flood.ipynb", [GATE_CELL, FLOOD_CELL])
    code, submitted = await api.call(
        "POST",
        "jobs",
        {
            "path": "flood.ipynb",
            "cpus": SMALL_CPUS,
            "metric_regex": "step %{INT:step} loss %{FLOAT:loss}",
        },
    )
    assert code == 201, submitted
    training_id = submitted["training_id"]
    await api.wait(training_id, {"PROCESSING"})

    ws = await jp_ws_fetch("dlaas", "api", "jobs", training_id, "events")
    first = await receive(ws)
    assert first is not None and first["type"] == "status"
    assert first["job"]["training_id"] == training_id and first["job"]["status"] == "PROCESSING"
    (jp_root_dir / "release").touch()  # the job prints its flood now, while we watch
    messages, arrivals = await until_end(ws)
    assert await receive(ws) is None  # the server closes the socket after "end"

    assert messages[-1] == {"type": "end"}
    statuses = [m["job"]["status"] for m in [first, *messages] if m["type"] == "status"]
    assert statuses[-1] == "COMPLETED" and statuses == sorted(set(statuses), key=LIFECYCLE.index)

    lines = logged(messages)
    assert lines == await all_lines(api, training_id)  # each line once, in order
    printed = [line["line"] for line in lines if line["line"].startswith("line ")]
    assert printed == [f"line {i}" for i in range(1, LINES + 1)]
    records = [r for m in messages if m["type"] == "metrics" for r in m["records"]]
    assert [(r["etimes"]["step"], r["values"]["loss"]) for r in records] == [
        (n, pytest.approx(1 / n)) for n in range(1, LINES // 1000 + 1)
    ]

    batches = [len(m["lines"]) for m in messages if m["type"] == "log"]
    assert max(batches) <= BATCH and len(batches) < len(lines) / 100  # batched, not line by line
    # At most ten messages a second: any eleven span a second (less scheduling jitter).
    assert len(arrivals) > 11
    spans = [later - earlier for earlier, later in zip(arrivals, arrivals[10:], strict=False)]
    assert min(spans) > 0.8


async def test_a_finished_jobs_events_replay_it_and_end(api: Api, aclient, jp_ws_fetch) -> None:
    training_id = await aclient.create(
        job_request("for i in 1 2 3; do echo line $i; done", cpus=SMALL_CPUS)
    )
    finished = await api.wait(training_id)
    ws = await jp_ws_fetch("dlaas", "api", "jobs", training_id, "events")
    messages, _ = await until_end(ws)
    assert messages[0] == {"type": "status", "job": finished}
    assert [line["line"] for line in logged(messages)][-3:] == ["line 1", "line 2", "line 3"]
    assert [m["type"] for m in messages].count("status") == 1 and messages[-1] == {"type": "end"}


async def test_a_finished_jobs_events_with_a_tail_send_only_its_last_lines(
    api: Api, aclient, jp_ws_fetch
) -> None:
    training_id = await aclient.create(
        job_request("for i in $(seq 1 1000); do echo line $i; done", cpus=SMALL_CPUS)
    )
    await api.wait(training_id)
    ws = await jp_ws_fetch(
        "dlaas", "api", "jobs", training_id, "events", params={"tail": "5"}
    )
    messages, _ = await until_end(ws)
    lines = [line["line"] for line in logged(messages)]
    assert lines == [f"line {i}" for i in range(996, 1001)]
    for tail in ("-1", "many"):
        with pytest.raises(HTTPClientError) as refused:
            await jp_ws_fetch(
                "dlaas", "api", "jobs", training_id, "events", params={"tail": tail}
            )
        assert refused.value.code == 400, tail


async def test_job_events_are_refused_before_the_handshake(
    jp_ws_fetch, aclient, trainer, user: str
) -> None:
    config = TrainerConfig.resolve(
        url=trainer.url, token=trainer.token, user=f"{user}-other", environ={}
    )
    async with AsyncTrainerClient(config) as other:
        foreign = await other.create(job_request("true", cpus=SMALL_CPUS))
    mine = await aclient.create(job_request("true", cpus=SMALL_CPUS))
    for training_id, headers, status in [
        ("training-nosuchjob", {}, 404),
        (foreign, {}, 403),
        (mine, {"Authorization": "token wrong"}, 403),
    ]:
        with pytest.raises(HTTPClientError) as refused:
            await jp_ws_fetch("dlaas", "api", "jobs", training_id, "events", headers=headers)
        assert refused.value.code == status, (training_id, headers)
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch(
            "dlaas", "api", "jobs", "events", headers={"Authorization": "token wrong"}
        )
    assert refused.value.code == 403


async def test_the_job_list_socket_sees_a_new_job_and_its_changes_only(
    api: Api, aclient, jp_ws_fetch
) -> None:
    first_socket = await jp_ws_fetch("dlaas", "api", "jobs", "events")
    assert await receive(first_socket) == {"type": "jobs", "jobs": []}
    training_id = await aclient.create(job_request("echo hi", name="listed", cpus=SMALL_CPUS))

    seen: list[str] = []
    while not seen or seen[-1] != "COMPLETED":
        message = await receive(first_socket)
        assert message is not None and message["type"] == "jobs"
        [job] = message["jobs"]
        assert (job["training_id"], job["name"]) == (training_id, "listed")
        seen.append(job["status"])
    assert seen == sorted(set(seen), key=LIFECYCLE.index)  # one message per change

    # A second socket gets the current list at once; nothing more comes while nothing changes.
    second_socket = await jp_ws_fetch("dlaas", "api", "jobs", "events")
    assert await receive(second_socket) == message
    with pytest.raises(asyncio.TimeoutError):
        await receive(first_socket, timeout=1.0)

    await api.call("DELETE", f"jobs/{training_id}")
    assert await receive(first_socket) == {"type": "jobs", "jobs": []}
    assert await receive(second_socket) == {"type": "jobs", "jobs": []}
    first_socket.close()
    second_socket.close()


@pytest.mark.parametrize("trainer_url", [closed_port_url()])
async def test_the_job_list_socket_says_when_the_trainer_is_down(
    jp_ws_fetch, trainer_url: str
) -> None:
    ws = await jp_ws_fetch("dlaas", "api", "jobs", "events")
    message = await receive(ws)
    assert message is not None and message["type"] == "error"
    assert trainer_url.removeprefix("grpc://") in message["message"]
    ws.close()


# -- the outbox, on its own -------------------------------------------------------


async def test_the_outbox_batches_in_order_takes_kinds_in_turn_and_holds_producers_back() -> None:
    outbox = Outbox(batch=100)

    async def produce() -> None:
        for n in range(250):
            await outbox.add("log", {"n": n})
        await outbox.add("metrics", {"m": 1})
        await outbox.set_status({"status": "COMPLETED"})
        await outbox.close()

    producer = asyncio.ensure_future(produce())
    await asyncio.sleep(MIN_INTERVAL)
    assert not producer.done()  # a full batch holds the producer back
    messages = []
    while (message := await outbox.next()) is not None:
        messages.append(message)
    await producer
    logs = [item["n"] for m in messages if m["type"] == "log" for item in m["lines"]]
    assert logs == list(range(250))
    assert all(len(m.get("lines", ())) <= 100 for m in messages)
    assert {"type": "metrics", "records": [{"m": 1}]} in messages
    assert {"type": "status", "job": {"status": "COMPLETED"}} in messages


async def test_the_job_list_is_polled_less_often_when_listing_is_slow() -> None:
    class SlowList:
        """Stands in for a Trainer whose GetAllTrainingsJobs takes ``took`` seconds."""

        def __init__(self, took: float) -> None:
            self.took, self.calls = took, 0

        async def list(self) -> list:
            self.calls += 1
            await asyncio.sleep(self.took)
            return []

    counts = {}
    for took in (0.0, 0.1):
        trainer = SlowList(took)
        watcher = JobListWatcher(trainer, interval=0.05)  # type: ignore[arg-type]
        watcher.subscribe()
        await asyncio.sleep(1.5)
        await watcher.stop()
        counts[took] = trainer.calls
    # Fast: every 0.05 s. Slow: each 0.1 s look is followed by a 0.4 s rest.
    assert counts[0.0] >= 10
    assert counts[0.1] <= 1.5 / ((1 + LIST_COST_FACTOR) * 0.1) + 1
