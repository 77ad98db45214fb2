"""Live tails of a job's log lines or metric records, over a Trainer that may
only answer pages (FfDL) or may push records as they are stored (embedded).

The decisions (which query next, when a page is full, when to poll, when the
job is over, how to retry) live in :func:`plan`, free of I/O; :func:`follow`
and :func:`afollow` are thin sync and asyncio drivers of the same plan.

Each query asks for server-side follow; a Trainer that honours it keeps the
stream open, one that does not answers one page. Either way, when a stream
ends the plan queries again at once after a full page, otherwise checks the
job: finished -> drain what is left and stop; still running -> poll later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
)
from contextlib import aclosing, closing
from dataclasses import dataclass
from typing import TypeVar

from dlaas_jupyter.client.channel import page_query
from dlaas_jupyter.client.errors import DlaasError, TrainerUnavailable
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto.semantics import TERMINAL

PAGE_SIZE = 1000

Record = TypeVar("Record", pb.LogLine, pb.EMetrics)


class Cursor:
    """How far a follow has got, as the next query and a filter for records
    already seen.

    One learner: by rindex (``pos = last rindex + 1``). Several learners: rindex
    restarts per learner, so by time instead. The time query is inclusive
    (``since = last time``) and records at that time already seen are dropped by
    (subid, rindex): no record is skipped even if a Trainer (FfDL) stamps two
    learners' records with the same millisecond across a page boundary.
    """

    def __init__(self, training_id: str, user: str, *, by_time: bool) -> None:
        self.training_id = training_id
        self.user = user
        self.by_time = by_time
        self._next_rindex = 1
        self._last_time: int | None = None
        self._seen_at_last_time: set[tuple[str, int]] = set()
        self.accepted = 0

    @classmethod
    def for_job(cls, job: pb.Job, user: str) -> Cursor:
        return cls(job.training_id, user, by_time=job.training.resources.learners > 1)

    def query(self, pagesize: int = PAGE_SIZE) -> pb.Query:
        if self.by_time:
            since = str(self._last_time) if self._last_time is not None else "0"
            return page_query(self.training_id, self.user, pagesize=pagesize, since=since)
        return page_query(self.training_id, self.user, pagesize=pagesize, pos=self._next_rindex)

    def tail_query(self, count: int) -> pb.Query:
        """The last ``count`` records stored so far (FfDL's negative pos)."""
        return page_query(self.training_id, self.user, pagesize=count, pos=-1)

    def accept(self, record: pb.LogLine | pb.EMetrics) -> bool:
        """Advance past ``record``; False if it was already delivered."""
        meta = record.meta
        if self.by_time:
            key = (meta.subid, meta.rindex)
            if self._last_time is not None and (
                meta.time < self._last_time
                or (meta.time == self._last_time and key in self._seen_at_last_time)
            ):
                return False
            if meta.time != self._last_time:
                self._last_time = meta.time
                self._seen_at_last_time.clear()
            self._seen_at_last_time.add(key)
        else:
            if meta.rindex < self._next_rindex:
                return False
            self._next_rindex = meta.rindex + 1
        self.accepted += 1
        return True


@dataclass(frozen=True)
class Retry:
    """Backoff for a Trainer that is briefly unreachable mid-follow (about 30 s
    in all by default), after which the error is raised."""

    attempts: int = 10
    first_delay: float = 0.25
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.first_delay * 2.0**attempt, self.max_delay)


@dataclass(frozen=True)
class Fetch:
    """Run this query (with the follow metadata when ``follow``), feed each
    record to ``Cursor.accept``, then send back how many records came."""

    query: pb.Query
    follow: bool


@dataclass(frozen=True)
class CheckStatus:
    """Send back the job's status (GetTrainingStatusID)."""


@dataclass(frozen=True)
class Wait:
    """Sleep, then send back None."""

    seconds: float


Step = Fetch | CheckStatus | Wait
# What a driver sends back: a record count, a status, None after Wait, or the
# DlaasError the step raised.
Outcome = int | DlaasError | None


@dataclass
class _Attempts:
    """Consecutive failures; progress made by a stream that then failed counts
    as a success, so a flaky but advancing follow is never given up."""

    retry: Retry
    cursor: Cursor
    failures: int = 0
    mark: int = 0


def plan(
    cursor: Cursor,
    *,
    poll_interval: float = 1.0,
    page_size: int = PAGE_SIZE,
    retry: Retry = Retry(),
    tail: int = 0,
) -> Generator[Step, Outcome, None]:
    """The follow loop as steps; drivers run each step and send its outcome.
    With ``tail``, records stored before the follow starts are skipped but
    for the last ``tail`` of them (a long finished log is not replayed)."""
    if tail < 0:
        raise ValueError(f"tail must not be negative, got {tail}")
    attempts = _Attempts(retry, cursor)
    if tail:
        yield from _attempt(lambda: Fetch(cursor.tail_query(tail), False), attempts)

    def fetch(follow: bool) -> Generator[Step, Outcome, tuple[int, int]]:
        """Returns (records received, new records accepted)."""
        before = cursor.accepted
        count = yield from _attempt(lambda: Fetch(cursor.query(page_size), follow), attempts)
        assert isinstance(count, int)
        return count, cursor.accepted - before

    while True:
        received, new = yield from fetch(follow=True)
        if received >= page_size and new:
            continue
        status = yield from _attempt(CheckStatus, attempts)
        if status in TERMINAL:
            # Records stored just before the job ended may not have been
            # returned yet: page through until nothing new comes.
            while (yield from fetch(follow=False))[1]:
                pass
            return
        yield Wait(poll_interval)


def _attempt(
    make_step: Callable[[], Step], attempts: _Attempts
) -> Generator[Step, Outcome, Outcome]:
    """Yield the step until it succeeds, backing off on TrainerUnavailable."""
    while True:
        outcome = yield make_step()
        if attempts.cursor.accepted != attempts.mark:
            attempts.mark = attempts.cursor.accepted
            attempts.failures = 0
        if not isinstance(outcome, DlaasError):
            attempts.failures = 0
            return outcome
        if (
            not isinstance(outcome, TrainerUnavailable)
            or attempts.failures >= attempts.retry.attempts
        ):
            raise outcome
        yield Wait(attempts.retry.delay(attempts.failures))
        attempts.failures += 1


def follow(
    steps: Generator[Step, Outcome, None],
    cursor: Cursor,
    *,
    fetch: Callable[[pb.Query, bool], Generator[Record, None, None]],
    status: Callable[[], int],
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Record]:
    """Drive ``steps`` with blocking calls, yielding each new record."""
    step = next(steps)
    while True:
        outcome: Outcome
        try:
            if isinstance(step, Fetch):
                outcome = 0
                # Closed at once if the caller stops early: that cancels the call.
                with closing(fetch(step.query, step.follow)) as records:
                    for record in records:
                        outcome += 1
                        if cursor.accept(record):
                            yield record
            elif isinstance(step, CheckStatus):
                outcome = status()
            else:
                sleep(step.seconds)
                outcome = None
        except DlaasError as err:
            outcome = err
        try:
            step = steps.send(outcome)
        except StopIteration:
            return


async def afollow(
    steps: Generator[Step, Outcome, None],
    cursor: Cursor,
    *,
    fetch: Callable[[pb.Query, bool], AsyncGenerator[Record, None]],
    status: Callable[[], Awaitable[int]],
) -> AsyncGenerator[Record, None]:
    """Drive ``steps`` on the event loop, yielding each new record."""
    step = next(steps)
    while True:
        outcome: Outcome
        try:
            if isinstance(step, Fetch):
                outcome = 0
                async with aclosing(fetch(step.query, step.follow)) as records:
                    async for record in records:
                        outcome += 1
                        if cursor.accept(record):
                            yield record
            elif isinstance(step, CheckStatus):
                outcome = await status()
            else:
                await asyncio.sleep(step.seconds)
                outcome = None
        except DlaasError as err:
            outcome = err
        try:
            step = steps.send(outcome)
        except StopIteration:
            return
