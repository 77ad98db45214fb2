"""The follow cursor and plan, driven against in-memory pages with FfDL's rules.

No gRPC here: the page rules are those of reference/ffdl-behaviour.md, and the
log grows between polls, so page boundaries fall at awkward places.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator

import pytest

from dlaas_jupyter.client.errors import JobNotFound, TrainerUnavailable
from dlaas_jupyter.client.follow import (
    PAGE_SIZE,
    Cursor,
    Retry,
    afollow,
    follow,
    plan,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

JOB = "training-abcdefghi"
NO_WAIT = Retry(attempts=3, first_delay=0.0, max_delay=0.0)


def line(rindex: int, time: int, subid: str = "learner-1") -> pb.LogLine:
    return pb.LogLine(
        meta=pb.MetaInfo(training_id=JOB, user_id="ada", time=time, rindex=rindex, subid=subid),
        line=f"{subid} line {rindex}",
    )


class PagedTrainer:
    """Answers one page per query from a log that grows when the follower sleeps."""

    def __init__(self) -> None:
        self.records: list[pb.LogLine] = []
        self.rindex: dict[str, int] = {}
        self.status_value = pb.PROCESSING
        self.queries: list[tuple[pb.Query, bool]] = []
        self.sleeps: list[float] = []
        # Called on each sleep, in turn: how the job makes progress.
        self.on_sleep: list[Callable[[], None]] = []
        self.on_status: Callable[[], None] | None = None
        self.fail_next = 0
        self.closed_streams = 0

    def append(self, n: int, *, learners: int = 1, same_time: bool = False) -> None:
        """n more lines per learner, each learner counting rindex from 1. Time
        strictly increases, unless same_time: then the learners' lines of one
        step share a millisecond (as FfDL may stamp them)."""
        time = self.records[-1].meta.time + 1 if self.records else 1000
        for _ in range(n):
            for learner in range(1, learners + 1):
                subid = f"learner-{learner}"
                self.rindex[subid] = self.rindex.get(subid, 0) + 1
                self.records.append(line(self.rindex[subid], time, subid))
                if not same_time:
                    time += 1
            if same_time:
                time += 1

    def page(self, query: pb.Query) -> list[pb.LogLine]:
        n = query.pagesize or 10
        ordered = sorted(self.records, key=lambda r: r.meta.time)
        if query.pos > 0:
            return [r for r in ordered if query.pos <= r.meta.rindex < query.pos + n]
        since = int(query.since) if query.since else 0
        return [r for r in ordered if r.meta.time >= since][:n]

    def fetch(self, query: pb.Query, follow_: bool) -> Generator[pb.LogLine, None, None]:
        self.queries.append((query, follow_))
        try:
            if self.fail_next:
                self.fail_next -= 1
                raise TrainerUnavailable("grpc://test:1", "connection refused")
            yield from self.page(query)
        finally:
            self.closed_streams += 1

    def status(self) -> int:
        if self.on_status is not None:
            self.on_status()
        return self.status_value

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep:
            self.on_sleep.pop(0)()

    def finish(self) -> None:
        self.status_value = pb.COMPLETED


def job_cursor(learners: int = 1) -> Cursor:
    """The cursor a client following JOB, of ``learners`` learners, starts with."""
    job = pb.Job(
        training_id=JOB, training=pb.Training(resources=pb.ResourceRequirements(learners=learners))
    )
    return Cursor.for_job(job, "ada")


def run(
    trainer: PagedTrainer, *, learners: int = 1, page_size: int = PAGE_SIZE, retry: Retry = NO_WAIT
) -> list[pb.LogLine]:
    cursor = job_cursor(learners)
    steps = plan(cursor, poll_interval=0.5, page_size=page_size, retry=retry)
    return list(
        follow(steps, cursor, fetch=trainer.fetch, status=trainer.status, sleep=trainer.sleep)
    )


def keys(records: list[pb.LogLine]) -> list[tuple[str, int]]:
    return [(r.meta.subid, r.meta.rindex) for r in records]


def test_one_learner_follows_by_rindex_across_pages() -> None:
    trainer = PagedTrainer()
    trainer.append(1500)
    trainer.on_sleep = [
        lambda: trainer.append(999),
        lambda: (trainer.append(1001), trainer.finish()),
    ]
    got = run(trainer)
    assert keys(got) == [("learner-1", i) for i in range(1, 3501)]
    first, _ = trainer.queries[0]
    assert (first.pos, first.since, first.pagesize) == (1, "", PAGE_SIZE)
    assert first.meta.training_id == JOB and first.meta.user_id == "ada"
    # Full pages are followed at once; only a short page leads to a poll.
    assert [q.pos for q, _ in trainer.queries[:3]] == [1, 1001, 1501]
    assert trainer.sleeps == [0.5, 0.5]


def test_every_query_asks_for_server_side_follow_except_the_drain() -> None:
    trainer = PagedTrainer()
    trainer.append(3)
    trainer.finish()
    assert len(run(trainer)) == 3
    assert [f for _, f in trainer.queries] == [True, False]


def test_records_stored_as_the_job_ends_are_drained() -> None:
    trainer = PagedTrainer()
    trainer.append(10)

    def ends_with_a_burst() -> None:
        trainer.append(2500)
        trainer.finish()

    trainer.on_status = ends_with_a_burst
    got = run(trainer)
    assert keys(got) == [("learner-1", i) for i in range(1, 2511)]
    assert trainer.sleeps == []


def test_several_learners_follow_by_time() -> None:
    trainer = PagedTrainer()
    trainer.append(700, learners=3)
    trainer.on_sleep = [lambda: (trainer.append(400, learners=3), trainer.finish())]
    got = run(trainer, learners=3)
    assert sorted(keys(got)) == sorted(keys(trainer.records))
    assert len(got) == len(set(keys(got))) == 3300
    assert [r.meta.time for r in got] == sorted(r.meta.time for r in got)
    first, _ = trainer.queries[0]
    assert (first.pos, first.since) == (0, "0")
    assert all(q.pos == 0 and q.since for q, _ in trainer.queries)


def test_time_cursor_keeps_records_sharing_a_millisecond_across_pages() -> None:
    # FfDL may stamp two learners' lines with the same time; a page boundary
    # inside such a group must neither skip nor repeat any of them.
    trainer = PagedTrainer()
    trainer.append(9, learners=2, same_time=True)
    trainer.finish()
    got = run(trainer, learners=2, page_size=3)  # boundaries split every other pair
    assert sorted(keys(got)) == sorted(keys(trainer.records))
    assert len(got) == len(trainer.records) == 18


def test_unreachable_trainer_is_retried_with_backoff() -> None:
    trainer = PagedTrainer()
    trainer.append(5)
    trainer.fail_next = 3
    trainer.on_sleep = [lambda: None] * 3 + [lambda: (trainer.append(5), trainer.finish())]
    got = run(trainer, retry=Retry(attempts=3, first_delay=0.1, max_delay=0.3))
    assert keys(got) == [("learner-1", i) for i in range(1, 11)]
    assert trainer.sleeps[:3] == [0.1, 0.2, 0.3]


def test_unreachable_trainer_is_given_up_after_the_retry_limit() -> None:
    trainer = PagedTrainer()
    trainer.fail_next = 100
    with pytest.raises(TrainerUnavailable, match="connection refused"):
        run(trainer, retry=Retry(attempts=4, first_delay=0.0))
    assert len(trainer.queries) == 5


def test_stream_breaking_midway_resumes_after_the_last_record() -> None:
    trainer = PagedTrainer()
    trainer.append(30)
    broken = {"done": False}
    page_fetch = trainer.fetch

    def breaks_once(query: pb.Query, follow_: bool) -> Generator[pb.LogLine, None, None]:
        records = page_fetch(query, follow_)
        for i, record in enumerate(records):
            if i == 12 and not broken["done"]:
                broken["done"] = True
                raise TrainerUnavailable("grpc://test:1", "stream reset")
            yield record

    trainer.fetch = breaks_once  # type: ignore[method-assign]
    trainer.finish()
    got = run(trainer)
    assert keys(got) == [("learner-1", i) for i in range(1, 31)]
    assert [q.pos for q, _ in trainer.queries[:2]] == [1, 13]


def test_other_errors_are_not_retried() -> None:
    trainer = PagedTrainer()

    def gone() -> int:
        raise JobNotFound(JOB)

    trainer.status = gone  # type: ignore[method-assign]
    with pytest.raises(JobNotFound):
        run(trainer)
    assert len(trainer.queries) == 1


def test_server_side_follow_stream_longer_than_a_page() -> None:
    """An embedded Trainer keeps the stream open past a page and ends it when
    the job is over: the follower then only confirms and drains."""
    trainer = PagedTrainer()
    trainer.append(2345)
    trainer.finish()

    def pushes_everything(query: pb.Query, follow_: bool) -> Generator[pb.LogLine, None, None]:
        trainer.queries.append((query, follow_))
        yield from (r for r in trainer.records if r.meta.rindex >= query.pos)

    trainer.fetch = pushes_everything  # type: ignore[method-assign]
    got = run(trainer)
    assert keys(got) == [("learner-1", i) for i in range(1, 2346)]
    assert len(trainer.queries) == 3


def test_stopping_early_closes_the_stream() -> None:
    trainer = PagedTrainer()
    trainer.append(50)
    cursor = job_cursor()
    records = follow(
        plan(cursor), cursor, fetch=trainer.fetch, status=trainer.status, sleep=trainer.sleep
    )
    assert next(records).meta.rindex == 1
    records.close()
    assert trainer.closed_streams == 1


def test_cursor_drops_replayed_records() -> None:
    by_rindex = Cursor(JOB, "ada", by_time=False)
    assert [by_rindex.accept(line(i, 100 + i)) for i in (1, 2, 2, 1, 3)] == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert by_rindex.query().pos == 4
    by_time = Cursor(JOB, "ada", by_time=True)
    records = [
        line(1, 10, "a"),
        line(1, 10, "b"),
        line(1, 10, "a"),
        line(2, 11, "a"),
        line(1, 10, "c"),
    ]
    assert [by_time.accept(r) for r in records] == [True, True, False, True, False]
    assert (by_time.query().since, by_time.query().pos) == ("11", 0)


async def test_async_driver_follows_the_same_plan() -> None:
    trainer = PagedTrainer()
    trainer.append(1200, learners=2)
    polls = 0

    async def fetch(query: pb.Query, follow_: bool) -> AsyncGenerator[pb.LogLine, None]:
        for record in trainer.fetch(query, follow_):
            yield record

    async def status() -> int:
        nonlocal polls
        polls += 1
        if polls == 2:
            trainer.append(300, learners=2)
            trainer.finish()
        return trainer.status_value

    cursor = job_cursor(learners=2)
    steps = plan(cursor, poll_interval=0.01, retry=NO_WAIT)
    got = [r async for r in afollow(steps, cursor, fetch=fetch, status=status)]
    assert sorted(keys(got)) == sorted(keys(trainer.records))
    assert len(got) == 3000
    await asyncio.sleep(0)
