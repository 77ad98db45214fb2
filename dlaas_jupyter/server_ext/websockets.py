"""WebSockets that push what changes, so the side panel does not poll.

``jobs/{id}/events`` sends ``{"type": "status", "job": ...}`` when the job
changes, ``{"type": "log", "lines": [...]}`` and ``{"type": "metrics",
"records": [...]}`` batches as records arrive (``?tail=N``: of the lines logged
before the socket opened only the last N, so reopening a long finished job's
view does not replay its whole log), then ``{"type": "end"}`` once the
job has finished and everything was sent; ``{"type": "error", "message": ...}``
instead when the stream cannot go on. ``jobs/events`` sends ``{"type":
"jobs", "jobs": [...]}`` (newest first) on connect and whenever the list
changes, or ``{"type": "error", ...}`` while the Trainer cannot be asked.

Each socket sends at most one message per :data:`MIN_INTERVAL`; what arrives
meanwhile is batched (up to :data:`BATCH` records a message, after which the
follow waits, and so, through gRPC flow control, does the Trainer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket

from dlaas_jupyter.client import AsyncTrainerClient, DlaasError, TrainerUnavailable
from dlaas_jupyter.server_ext.handlers import API, JOB, DlaasMixin, integer_argument
from dlaas_jupyter.server_ext.serialize import emetrics_json, job_json, jobs_json, log_json

MIN_INTERVAL = 0.1  # seconds between two messages of one socket: at most 10 a second
BATCH = 2000  # log lines or metric records per message at most
DEFAULT_POLL_INTERVAL = 0.25  # seconds between two looks at a job's status or the job list
# The job list is looked at no more often than this many times the last look
# took, so a user with thousands of jobs does not keep the Trainer busy listing.
LIST_COST_FACTOR = 4.0

Message = dict[str, Any]


class Outbox:
    """What one socket still has to send: the job's latest status and the log lines
    and metric records not sent yet, taken in turn, one message at a time."""

    KINDS = ("status", "log", "metrics")

    def __init__(self, batch: int = BATCH) -> None:
        self.batch = batch
        self._status: Message | None = None
        self._pending: dict[str, list[Message]] = {"log": [], "metrics": []}
        self._turn = 0
        self._closed = False
        self._condition = asyncio.Condition()

    async def set_status(self, job: Message) -> None:
        async with self._condition:
            self._status = job
            self._condition.notify_all()

    async def add(self, kind: str, item: Message) -> None:
        """Queue a log line ("log") or metric record ("metrics"); waits while a batch is full."""
        async with self._condition:
            await self._condition.wait_for(lambda: len(self._pending[kind]) < self.batch)
            self._pending[kind].append(item)
            self._condition.notify_all()

    async def close(self) -> None:
        """Nothing more will come: :meth:`next` returns None once all is taken."""
        async with self._condition:
            self._closed = True
            self._condition.notify_all()

    async def next(self) -> Message | None:
        """The next message, waiting for one; None when closed and empty."""
        async with self._condition:
            await self._condition.wait_for(lambda: self._closed or self._ready())
            message = self._take()
            self._condition.notify_all()
            return message

    def _ready(self) -> bool:
        return self._status is not None or any(self._pending.values())

    def _take(self) -> Message | None:
        for step in range(len(self.KINDS)):
            kind = self.KINDS[(self._turn + step) % len(self.KINDS)]
            if kind == "status" and self._status is not None:
                message: Message = {"type": "status", "job": self._status}
                self._status = None
            elif kind != "status" and self._pending[kind]:
                items = self._pending[kind][: self.batch]
                del self._pending[kind][: self.batch]
                message = {"type": kind, "lines" if kind == "log" else "records": items}
            else:
                continue
            self._turn = (self._turn + step + 1) % len(self.KINDS)
            return message
        return None


class Subscription:
    """One socket's view of the job list: the latest message not yet sent."""

    def __init__(self) -> None:
        self._latest: Message | None = None
        self._changed = asyncio.Event()

    def put(self, message: Message) -> None:
        self._latest = message
        self._changed.set()

    async def next(self) -> Message:
        await self._changed.wait()
        self._changed.clear()
        assert self._latest is not None
        return self._latest


class JobListWatcher:
    """Polls the user's job list for all open job-list sockets at once, only while
    there are some, and publishes it only when it changed.

    FfDL has no call that pushes list changes, so this polls every ``interval``,
    or :data:`LIST_COST_FACTOR` times as long as the last poll took if that is
    longer (listing 10,000 jobs takes about 0.1 s).
    """

    def __init__(self, client: AsyncTrainerClient, interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self.client = client
        self.interval = interval
        self._subscriptions: set[Subscription] = set()
        self._last: Message | None = None
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        if self._last is not None:
            subscription.put(self._last)
        self._subscriptions.add(subscription)
        if self._task is None:
            self._task = asyncio.ensure_future(self._poll())
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if not self._subscriptions:
            await self.stop()

    async def stop(self) -> None:
        task, self._task, self._last = self._task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                message: Message = {"type": "jobs", "jobs": jobs_json(await self.client.list())}
            except DlaasError as err:
                message = {"type": "error", "message": str(err)}
            if message != self._last:
                self._last = message
                for subscription in self._subscriptions:
                    subscription.put(message)
            took = loop.time() - started
            await asyncio.sleep(max(self.interval, LIST_COST_FACTOR * took))


class _EventSocket(
    DlaasMixin, WebSocketMixin, ExtensionHandlerMixin, JupyterHandler, websocket.WebSocketHandler
):
    """An authenticated socket that sends JSON messages from a task of its own."""

    _task: asyncio.Task[None] | None = None

    @property
    def poll_interval(self) -> float:
        return float(self.settings.get("dlaas_poll_interval", DEFAULT_POLL_INTERVAL))

    async def check(self, client: AsyncTrainerClient, **kwargs: str) -> None:
        """Refuse the handshake with an HTTP status (e.g. a job that is not the user's)."""

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: str) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", self.auth_resource)
        )
        if not allowed:
            raise web.HTTPError(403, f"not authorized to read {self.auth_resource}")
        await self.check(self.trainer, **kwargs)  # 503 when the Trainer is not configured
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        self._task = asyncio.ensure_future(self._run(self.messages(**kwargs)))

    def messages(self, **kwargs: str) -> AsyncGenerator[Message, None]:
        raise NotImplementedError

    async def _run(self, messages: AsyncGenerator[Message, None]) -> None:
        try:
            async with aclosing(messages):
                async for message in messages:
                    await self.write_message(json.dumps(message, allow_nan=False))
                    await asyncio.sleep(MIN_INTERVAL)
        except websocket.WebSocketClosedError:
            return
        except DlaasError as err:
            with contextlib.suppress(websocket.WebSocketClosedError):
                await self.write_message(json.dumps({"type": "error", "message": str(err)}))
        self.close()

    def on_message(self, message: str | bytes) -> None:
        """These sockets only send."""

    def on_close(self) -> None:
        super().on_close()
        if self._task is not None:
            self._task.cancel()


class JobEventsSocket(_EventSocket):
    """One job's status changes, log lines and metric records, until it has finished."""

    _tail = 0

    async def check(self, client: AsyncTrainerClient, **kwargs: str) -> None:
        try:
            self._tail = integer_argument(self, "tail", minimum=0)
        except ValueError as err:
            raise web.HTTPError(400, str(err)) from None
        await client.get(kwargs["training_id"])  # 404, 403... before the handshake

    async def messages(self, **kwargs: str) -> AsyncGenerator[Message, None]:  # type: ignore[override]
        outbox = Outbox()
        producers = asyncio.ensure_future(
            self._produce(kwargs["training_id"], outbox, tail=self._tail)
        )
        try:
            while (message := await outbox.next()) is not None:
                yield message
            await producers  # raises what ended the follow
            yield {"type": "end"}
        finally:
            producers.cancel()
            with contextlib.suppress(asyncio.CancelledError, DlaasError):
                await producers

    async def _produce(self, training_id: str, outbox: Outbox, tail: int) -> None:
        client = self.trainer
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_status(client, training_id, outbox))
                group.create_task(
                    _pump(
                        client.follow_logs(
                            training_id, poll_interval=self.poll_interval, tail=tail
                        ),
                        lambda line: outbox.add("log", log_json(line)),
                    )
                )
                group.create_task(
                    _pump(
                        client.follow_emetrics(training_id, poll_interval=self.poll_interval),
                        lambda record: outbox.add("metrics", emetrics_json(record)),
                    )
                )
        except* DlaasError as errors:
            raise errors.exceptions[0] from None
        finally:
            await outbox.close()

    async def _watch_status(
        self, client: AsyncTrainerClient, training_id: str, outbox: Outbox
    ) -> None:
        """Push the job whenever it changes, until it has finished. A Trainer briefly
        away is waited for (the follows give up if it stays away)."""
        last: Message | None = None
        while True:
            try:
                job = job_json(await client.get(training_id))
            except TrainerUnavailable:
                await asyncio.sleep(self.poll_interval)
                continue
            if job != last:
                await outbox.set_status(job)
                last = job
            if job["terminal"]:
                return
            await asyncio.sleep(self.poll_interval)


class JobListSocket(_EventSocket):
    """The user's job list whenever it changes."""

    async def messages(self, **kwargs: str) -> AsyncGenerator[Message, None]:  # type: ignore[override]
        watcher: JobListWatcher = self.settings["dlaas_job_list"]
        subscription = watcher.subscribe()
        try:
            while True:
                yield await subscription.next()
        finally:
            await watcher.unsubscribe(subscription)


async def _pump(records: AsyncIterator[Any], put: Callable[[Any], Awaitable[None]]) -> None:
    async with aclosing(records):  # type: ignore[type-var]
        async for record in records:
            await put(record)


routes = [
    (rf"{API}/jobs/events", JobListSocket),
    (rf"{JOB}/events", JobEventsSocket),
]
