"""The Trainer's SQLite store, on real SQLite files."""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.store import SCHEMA_VERSION, Store

USER = "alice"

# A record as the tests compare it: (time, subid, rindex, payload).
Rec = tuple[int, str, int, str]


def make_job(training_id: str, submitted: int, user: str = USER) -> pb.Job:
    return pb.Job(
        training_id=training_id,
        user_id=user,
        model_definition=pb.ModelDefinition(
            name=f"model of {training_id}",
            framework=pb.Framework(name="sklearn", version="1.5"),
        ),
        training=pb.Training(command="python train.py", input_data=["in"]),
        status=pb.TrainingStatus(status=pb.QUEUED, submission_timestamp=str(submitted)),
    )


def metric(step: int, subid: str = "learner-1", *, rindex: int = 0, at: int = 0) -> pb.EMetrics:
    return pb.EMetrics(
        meta=pb.MetaInfo(subid=subid, rindex=rindex, time=at),
        grouplabel="train",
        etimes={"iteration": pb.Any(type=pb.Any.INT, value=str(step))},
        values={"loss": pb.Any(type=pb.Any.FLOAT, value=f"{1 / (step + 1):.4f}")},
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "trainer.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()


@pytest.fixture
def job(store: Store) -> str:
    store.insert_job(make_job("training-abc123456", 1_700_000_000_000))
    return "training-abc123456"


def log_recs(lines: list[pb.LogLine]) -> list[Rec]:
    return [(x.meta.time, x.meta.subid, x.meta.rindex, x.line) for x in lines]


def em_recs(records: list[pb.EMetrics]) -> list[Rec]:
    return [
        (r.meta.time, r.meta.subid, r.meta.rindex, r.etimes["iteration"].value) for r in records
    ]


def reference_page(
    records: list[Rec], *, subid: str = "", pos: int = 0, pagesize: int = 0, since: str = ""
) -> list[Rec]:
    """FfDL's Query semantics, by brute force over every record in time order."""
    n = pagesize or 10
    kept = [
        r for r in records if (not subid or r[1] == subid) and (not since or r[0] >= int(since))
    ]
    if pos > 0:
        return [r for r in kept if pos <= r[2] < pos + n][:n]
    if pos < 0:
        end = len(kept) - (-pos - 1)
        return kept[max(0, end - n) : max(0, end)]
    return kept[:n]


def queries(
    subid: str, pagesizes: tuple[int, ...], positions: tuple[int, ...], sinces: list[str]
) -> Iterator[dict[str, Any]]:
    """Every combination of the given Query arguments, as keyword arguments."""
    for pagesize, pos, since in itertools.product(pagesizes, positions, sinces):
        yield {"subid": subid, "pos": pos, "pagesize": pagesize, "since": since}


# -- schema -------------------------------------------------------------------


def test_schema_version_is_recorded_and_a_newer_one_is_refused(db: Path) -> None:
    Store(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        Store(db)


def test_closed_store_refuses_reads_from_new_threads(db: Path) -> None:
    store = Store(db)
    store.close()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            store.get_job("training-x")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    t.join()
    assert len(errors) == 1 and "closed" in str(errors[0])


# -- jobs ---------------------------------------------------------------------


def test_insert_get_and_list_oldest_first(store: Store) -> None:
    store.insert_job(make_job("training-c", 300))
    store.insert_job(make_job("training-a", 100))
    store.insert_job(make_job("training-b", 200))
    store.insert_job(make_job("training-b2", 200))  # same ms: insertion order
    store.insert_job(make_job("training-bob", 50, user="bob"))

    got = store.get_job("training-a")
    assert got == make_job("training-a", 100)
    assert store.get_job("training-missing") is None
    assert [j.training_id for j in store.list_jobs(USER)] == [
        "training-a",
        "training-b",
        "training-b2",
        "training-c",
    ]
    assert [j.training_id for j in store.list_jobs("bob")] == ["training-bob"]
    assert store.list_jobs("nobody") == []
    # The jobs list is a real list of independent, mutable jobs.
    jobs = store.list_jobs(USER)
    jobs[0].status.status = pb.FAILED
    assert store.get_job("training-a") == make_job("training-a", 100)


def test_insert_rejects_bad_jobs(store: Store) -> None:
    store.insert_job(make_job("training-a", 100))
    with pytest.raises(ValueError, match="already exists"):
        store.insert_job(make_job("training-a", 200))
    with_zip = make_job("training-z", 100)
    with_zip.model_definition.content = b"PK\x03\x04"
    with pytest.raises(ValueError, match="content must be cleared"):
        store.insert_job(with_zip)
    with pytest.raises(ValueError, match="submission_timestamp .* got ''"):
        store.insert_job(pb.Job(training_id="training-n", user_id=USER))
    with pytest.raises(ValueError, match="training_id is empty"):
        store.insert_job(make_job("", 100))
    assert [j.training_id for j in store.list_jobs(USER)] == ["training-a"]


def test_jobs_with_status(store: Store) -> None:
    for i, tid in enumerate(["training-1", "training-2", "training-3", "training-4"]):
        store.insert_job(make_job(tid, 1000 - i))  # later ids are older
    store.update_status("training-2", pb.PROCESSING)
    store.update_status("training-3", pb.COMPLETED)
    assert [j.training_id for j in store.jobs_with_status([pb.QUEUED, pb.PROCESSING])] == [
        "training-4",
        "training-2",
        "training-1",
    ]
    assert [j.training_id for j in store.jobs_with_status({pb.COMPLETED})] == ["training-3"]
    assert store.jobs_with_status([]) == []
    assert store.jobs_with_status([pb.HALTED]) == []


@pytest.mark.parametrize(
    ("status", "stamp"),
    [
        (pb.DOWNLOADING, "download_start_timestamp"),
        (pb.PROCESSING, "process_start_timestamp"),
        (pb.STORING, "store_start_timestamp"),
        (pb.COMPLETED, "completion_timestamp"),
        (pb.FAILED, "completion_timestamp"),
        (pb.HALTED, "completion_timestamp"),
        (pb.PENDING, None),
        (pb.QUEUED, None),
    ],
)
def test_update_status_stamps_its_timestamp(
    store: Store, job: str, status: int, stamp: str | None
) -> None:
    updated = store.update_status(job, status, at_ms=1_700_000_123_456)
    assert updated.status.status == status
    stamps = {
        name: getattr(updated.status, name)
        for name in (
            "download_start_timestamp",
            "process_start_timestamp",
            "store_start_timestamp",
            "completion_timestamp",
        )
    }
    assert stamps == {name: ("1700000123456" if name == stamp else "") for name in stamps}
    assert updated.status.submission_timestamp == "1700000000000"
    assert store.get_job(job) == updated


def test_update_status_message_error_code_and_history(store: Store, job: str) -> None:
    before = time.time_ns() // 1_000_000
    store.update_status(job, pb.PENDING)
    store.update_status(job, pb.PROCESSING, at_ms=1_700_000_000_500)
    failed = store.update_status(
        job, pb.FAILED, message="exit code 3", error_code="C201", at_ms=1_700_000_000_900
    )
    after = time.time_ns() // 1_000_000
    assert failed.status.status_message == "exit code 3"
    assert failed.status.error_code == "C201"
    assert failed.status.process_start_timestamp == "1700000000500"
    assert failed.status.completion_timestamp == "1700000000900"
    # Without message/error_code the earlier ones stay.
    again = store.update_status(job, pb.HALTED, at_ms=1_700_000_001_000)
    assert (again.status.status_message, again.status.error_code) == ("exit code 3", "C201")

    history = store.status_history(job)
    assert [h[0] for h in history] == [pb.QUEUED, pb.PENDING, pb.PROCESSING, pb.FAILED, pb.HALTED]
    assert history[0] == (pb.QUEUED, 1_700_000_000_000, "")
    assert before <= history[1][1] <= after  # stamped "now" when at_ms is not given
    assert history[2:] == [
        (pb.PROCESSING, 1_700_000_000_500, ""),
        (pb.FAILED, 1_700_000_000_900, "exit code 3"),
        (pb.HALTED, 1_700_000_001_000, ""),
    ]
    assert store.status_history("training-missing") == []


def test_update_status_errors(store: Store, job: str) -> None:
    with pytest.raises(KeyError):
        store.update_status("training-missing", pb.PROCESSING)
    with pytest.raises(ValueError, match="42"):
        store.update_status(job, 42)
    assert store.status_history(job) == [(pb.QUEUED, 1_700_000_000_000, "")]


def test_runtime(store: Store, job: str) -> None:
    assert store.get_runtime(job) == {}
    info = {"backend": "local", "learners": [{"pid": 4242, "create_time": 1.5, "pgid": 4242}]}
    store.set_runtime(job, info)
    assert store.get_runtime(job) == info
    store.set_runtime(job, {})
    assert store.get_runtime(job) == {}
    with pytest.raises(KeyError):
        store.set_runtime("training-missing", info)
    with pytest.raises(KeyError):
        store.get_runtime("training-missing")


def test_delete_removes_everything(store: Store, db: Path, job: str) -> None:
    other = "training-other0001"
    store.insert_job(make_job(other, 5))
    for tid in (job, other):
        store.update_status(tid, pb.PROCESSING)
        store.set_runtime(tid, {"pid": 1})
        store.append_log_lines(tid, USER, "learner-1", ["a", "b"])
        store.append_emetrics(tid, USER, [metric(1), metric(2)])

    store.delete_job(job)
    store.delete_job("training-missing")  # no-op

    assert store.get_job(job) is None
    assert store.status_history(job) == []
    assert store.log_page(job) == [] and store.log_count(job) == 0
    assert store.emetrics_page(job) == []
    with pytest.raises(KeyError):
        store.get_runtime(job)
    with pytest.raises(KeyError):
        store.append_log_lines(job, USER, "learner-1", ["late line"])
    with pytest.raises(KeyError):
        store.append_emetrics(job, USER, [metric(3)])
    with sqlite3.connect(db) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'schema_version'"
            )
        ]
        assert len(tables) >= 4
        for table in tables:
            assert conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE training_id = ?", (job,)
            ).fetchone() == (0,), table
    conn.close()
    # The other job is untouched.
    assert store.log_count(other) == 2 and len(store.emetrics_page(other)) == 2
    # A job re-created under the same id starts afresh.
    store.insert_job(make_job(job, 7))
    store.append_log_lines(job, USER, "learner-1", ["new"])
    store.append_emetrics(job, USER, [metric(1)])
    assert [x.meta.rindex for x in store.log_page(job)] == [1]
    assert [r.meta.rindex for r in store.emetrics_page(job)] == [1]


# -- log lines ------------------------------------------------------------------


def all_lines(store: Store, training_id: str) -> list[Rec]:
    return log_recs(store.log_records_after(training_id, after_time=0, limit=10**9))


def test_append_numbers_lines_per_learner_and_times_per_job(store: Store, job: str) -> None:
    # Many small batches from two learners within the same milliseconds.
    for i in range(50):
        store.append_log_lines(job, USER, "learner-1", [f"one {i}a", f"one {i}b"])
        store.append_log_lines(job, USER, "learner-2", [f"two {i}"])
    recs = all_lines(store, job)
    times = [r[0] for r in recs]
    assert len(recs) == 150
    assert all(a < b for a, b in itertools.pairwise(times)), "time strictly increases per job"
    assert [r[2] for r in recs if r[1] == "learner-1"] == list(range(1, 101))
    assert [r[2] for r in recs if r[1] == "learner-2"] == list(range(1, 51))
    assert [r[3] for r in recs[:3]] == ["one 0a", "one 0b", "two 0"]
    assert store.log_count(job) == 150
    meta = store.log_page(job, pagesize=1)[0].meta
    assert (meta.training_id, meta.user_id) == (job, USER)
    now = time.time_ns() // 1_000_000
    assert now - 60_000 < times[0] <= times[-1] < now + 1_000


def test_append_edge_cases(store: Store, job: str) -> None:
    store.append_log_lines(job, USER, "learner-1", [])
    assert store.log_count(job) == 0
    store.append_log_lines(job, USER, "learner-1", ["", "x", ""])  # empty lines are lines
    assert [r[3] for r in all_lines(store, job)] == ["", "x", ""]
    with pytest.raises(ValueError, match="contains a newline"):
        store.append_log_lines(job, USER, "learner-1", ["a\nb"])
    with pytest.raises(KeyError):
        store.append_log_lines("training-missing", USER, "learner-1", ["x"])
    assert store.log_count(job) == 3


@pytest.fixture
def logged(store: Store, job: str) -> list[Rec]:
    """Two learners' lines in batches of uneven sizes, so pages span chunks."""
    sizes = [3, 5, 1, 7, 2, 4, 6, 1, 1, 8]
    counter = {"learner-1": 0, "learner-2": 0}
    for k, size in enumerate(sizes):
        subid = "learner-1" if k % 3 else "learner-2"
        lines = [f"{subid} line {counter[subid] + i + 1}" for i in range(size)]
        counter[subid] += size
        store.append_log_lines(job, USER, subid, lines)
    recs = all_lines(store, job)
    assert len(recs) == sum(sizes)
    return recs


def test_log_page_documented_cases(store: Store, job: str, logged: list[Rec]) -> None:
    # pagesize 0 means 10; pos 0: the first page in time order.
    assert log_recs(store.log_page(job)) == logged[:10]
    # pos -1, pagesize 20: the last 20, in time order.
    assert log_recs(store.log_page(job, pos=-1, pagesize=20)) == logged[-20:]
    # pos -3: skip the last 2.
    assert log_recs(store.log_page(job, pos=-3, pagesize=4)) == logged[-6:-2]
    # pos > 0 with a learner: rindex in [pos, pos + pagesize).
    page = log_recs(store.log_page(job, subid="learner-1", pos=4, pagesize=6))
    assert [(r[1], r[2]) for r in page] == [("learner-1", i) for i in range(4, 10)]
    assert [r[3] for r in page] == [f"learner-1 line {i}" for i in range(4, 10)]
    # pos > 0 across learners: both learners' rindex 2..3, time order, at most pagesize.
    page = log_recs(store.log_page(job, pos=2, pagesize=2))
    assert sorted((r[1], r[2]) for r in page) == [("learner-2", 2), ("learner-2", 3)]
    both = log_recs(store.log_page(job, pos=2, pagesize=10))
    assert len(both) == 10 and both == sorted(both)
    # since: records with time >= since.
    cut = logged[17][0]
    assert log_recs(store.log_page(job, since=str(cut), pagesize=5)) == logged[17:22]
    # Beyond the end.
    assert store.log_page(job, pos=1000) == []
    assert store.log_page(job, pos=-1000) == []
    assert store.log_page(job, since=str(logged[-1][0] + 1)) == []
    assert store.log_page("training-missing") == []


@pytest.mark.parametrize("subid", ["", "learner-1", "learner-2", "learner-9"])
def test_log_page_matches_reference(store: Store, job: str, logged: list[Rec], subid: str) -> None:
    sinces = ["", str(logged[0][0]), str(logged[11][0]), str(logged[25][0] + 1)]
    positions = (-40, -12, -5, -2, -1, 0, 1, 2, 5, 9, 17, 30)
    for args in queries(subid, (0, 1, 3, 7, 50), positions, sinces):
        assert log_recs(store.log_page(job, **args)) == reference_page(logged, **args), args


def test_log_page_rejects_bad_arguments(store: Store, job: str) -> None:
    with pytest.raises(ValueError) as err:
        store.log_page(job, since="x")
    assert str(err.value) == "since must be milliseconds since the epoch, got 'x'"
    with pytest.raises(ValueError, match="since must be milliseconds"):
        store.emetrics_page(job, since="2024-01-01")
    with pytest.raises(ValueError, match="pagesize"):
        store.log_page(job, pagesize=-1)
    with pytest.raises(ValueError, match="limit"):
        store.log_records_after(job, after_time=0, limit=0)


def test_log_records_after_follows_with_time_cursor(
    store: Store, job: str, logged: list[Rec]
) -> None:
    got: list[Rec] = []
    cursor = 0
    while page := log_recs(store.log_records_after(job, after_time=cursor, limit=4)):
        assert len(page) <= 4
        got += page
        cursor = page[-1][0]
    assert got == logged
    store.append_log_lines(job, USER, "learner-3", ["late"])
    assert [r[3] for r in log_recs(store.log_records_after(job, after_time=cursor, limit=4))] == [
        "late"
    ]
    assert log_recs(store.log_records_after(job, after_time=logged[9][0], limit=3)) == logged[10:13]


def test_counters_survive_reopen(db: Path) -> None:
    store = Store(db)
    store.insert_job(make_job("training-p", 1))
    store.append_log_lines("training-p", USER, "learner-1", ["a", "b"])
    store.append_log_lines("training-p", USER, "learner-2", ["c"])
    store.append_emetrics("training-p", USER, [metric(1), metric(2, "learner-2")])
    store.close()

    store = Store(db)
    store.append_log_lines("training-p", USER, "learner-1", ["d"])
    store.append_log_lines("training-p", USER, "learner-2", ["e", "f"])
    store.append_emetrics("training-p", USER, [metric(3), metric(4, "learner-2")])
    recs = all_lines(store, "training-p")
    assert [(r[1], r[2], r[3]) for r in recs] == [
        ("learner-1", 1, "a"),
        ("learner-1", 2, "b"),
        ("learner-2", 1, "c"),
        ("learner-1", 3, "d"),
        ("learner-2", 2, "e"),
        ("learner-2", 3, "f"),
    ]
    times = [r[0] for r in recs]
    assert times == sorted(set(times))
    metrics = em_recs(store.emetrics_page("training-p"))
    assert [(r[1], r[2]) for r in metrics] == [
        ("learner-1", 1),
        ("learner-2", 1),
        ("learner-1", 2),
        ("learner-2", 2),
    ]
    assert [r[0] for r in metrics] == sorted({r[0] for r in metrics})
    store.close()


def test_concurrent_appends_lose_nothing(store: Store) -> None:
    jobs = ["training-t1", "training-t2"]
    for tid in jobs:
        store.insert_job(make_job(tid, 1))
    writers = [(jobs[k % 2], f"learner-{k // 2 + 1}") for k in range(4)]
    batches, size = 60, 50
    start = threading.Barrier(len(writers) + 1)
    errors: list[BaseException] = []
    seen_counts: list[int] = []

    def write(tid: str, subid: str) -> None:
        try:
            start.wait()
            for b in range(batches):
                store.append_log_lines(
                    tid, USER, subid, [f"{subid} {b * size + i + 1}" for i in range(size)]
                )
                store.append_emetrics(tid, USER, [metric(b, subid)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        start.wait()
        while any(t.is_alive() for t in threads):
            seen_counts.append(store.log_count(jobs[0]))
            store.log_page(jobs[0], pos=-1, pagesize=20)

    threads = [threading.Thread(target=write, args=w) for w in writers]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in [*threads, reader]:
        t.join()
    assert errors == []
    assert seen_counts == sorted(seen_counts)  # a reader never sees lines vanish
    for tid in jobs:
        recs = all_lines(store, tid)
        assert len(recs) == 2 * batches * size == store.log_count(tid)
        times = [r[0] for r in recs]
        assert all(a < b for a, b in itertools.pairwise(times))
        for subid in {s for t, s in writers if t == tid}:
            mine = [r for r in recs if r[1] == subid]
            assert [r[2] for r in mine] == list(range(1, batches * size + 1))
            assert [r[3] for r in mine] == [f"{subid} {i}" for i in range(1, batches * size + 1)]
        metrics = store.emetrics_after(tid, after_time=0, limit=10_000)
        assert len(metrics) == 2 * batches
        assert sorted((m.meta.subid, m.meta.rindex) for m in metrics) == sorted(
            (s, i) for t, s in writers if t == tid for i in range(1, batches + 1)
        )


def test_committed_data_survives_sigkill(db: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from dlaas_jupyter.proto import trainer_pb2 as pb
        from dlaas_jupyter.trainer.store import Store
        store = Store(Path({str(db)!r}))
        store.insert_job(pb.Job(training_id="training-k", user_id="alice",
            status=pb.TrainingStatus(status=pb.QUEUED, submission_timestamp="1")))
        store.update_status("training-k", pb.PROCESSING, at_ms=5)
        store.set_runtime("training-k", {{"pid": 99}})
        for b in range(20):
            store.append_log_lines("training-k", "alice", "learner-1",
                                   [f"line {{b * 100 + i + 1}}" for i in range(100)])
        store.append_emetrics("training-k", "alice", [pb.EMetrics(grouplabel="train")])
        print("committed", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    store = Store(db)
    try:
        job = store.get_job("training-k")
        assert job is not None and job.status.process_start_timestamp == "5"
        assert store.get_runtime("training-k") == {"pid": 99}
        assert store.log_count("training-k") == 2000
        assert log_recs(store.log_page("training-k", pos=-1, pagesize=1))[0][2:] == (
            2000,
            "line 2000",
        )
        store.append_log_lines("training-k", USER, "learner-1", ["after restart"])
        assert log_recs(store.log_page("training-k", pos=2001))[0][2:] == (2001, "after restart")
        assert len(store.emetrics_page("training-k")) == 1
    finally:
        store.close()


# -- evaluation metrics ---------------------------------------------------------


def test_append_emetrics_fills_meta(store: Store, job: str) -> None:
    before = time.time_ns() // 1_000_000
    batch = [
        metric(0),  # rindex 1, time now
        metric(1, rindex=7, at=1_000),  # rindex kept; time bumped past now
        metric(2),  # next after 7 is 8
        metric(3, "learner-2", rindex=3, at=10**13),  # both kept (time far ahead)
        metric(4, "learner-2"),  # rindex 4; time bumped past 10**13
    ]
    store.append_emetrics(job, "bob", batch)
    assert batch[0].meta.training_id == job and batch[0].meta.user_id == "bob"
    got = store.emetrics_page(job)
    assert [(r.meta.subid, r.meta.rindex) for r in got] == [
        ("learner-1", 1),
        ("learner-1", 7),
        ("learner-1", 8),
        ("learner-2", 3),
        ("learner-2", 4),
    ]
    times = [r.meta.time for r in got]
    assert before <= times[0] and times[1] == times[0] + 1 and times[2] == times[0] + 2
    assert times[3:] == [10**13, 10**13 + 1]
    assert all((r.meta.training_id, r.meta.user_id) == (job, "bob") for r in got)
    assert got == batch  # the stored records are what the caller's now hold
    assert got[0].values["loss"] == pb.Any(type=pb.Any.FLOAT, value="1.0000")
    # The next record of the job comes after all of them in time.
    store.append_emetrics(job, USER, [metric(5, at=2_000)])
    assert store.emetrics_page(job, pos=-1, pagesize=1)[0].meta.time == 10**13 + 2
    store.append_emetrics(job, USER, [])
    with pytest.raises(KeyError):
        store.append_emetrics("training-missing", USER, [metric(1)])


@pytest.fixture
def measured(store: Store, job: str) -> list[Rec]:
    """Metric records in batches of uneven sizes, learners mixed inside batches,
    one learner's rindexes given out of order (as a restarted collector might)."""
    step = 0
    for k, size in enumerate([4, 1, 6, 3, 9, 2]):
        batch = []
        for i in range(size):
            subid = "learner-2" if (k + i) % 4 == 0 else "learner-1"
            batch.append(metric(step, subid))
            step += 1
        store.append_emetrics(job, USER, batch)
    store.append_emetrics(
        job, USER, [metric(step + i, "learner-3", rindex=r) for i, r in enumerate([5, 2, 9, 1])]
    )
    recs = em_recs(store.emetrics_after(job, after_time=0, limit=1000))
    assert len(recs) == 29
    return recs


@pytest.mark.parametrize("subid", ["", "learner-1", "learner-2", "learner-3"])
def test_emetrics_page_matches_reference(
    store: Store, job: str, measured: list[Rec], subid: str
) -> None:
    sinces = ["", str(measured[5][0]), str(measured[20][0] + 1)]
    positions = (-30, -7, -2, -1, 0, 1, 2, 5, 9, 20)
    for args in queries(subid, (0, 1, 4, 50), positions, sinces):
        assert em_recs(store.emetrics_page(job, **args)) == reference_page(measured, **args), args


def test_emetrics_after_follows_with_time_cursor(
    store: Store, job: str, measured: list[Rec]
) -> None:
    got: list[Rec] = []
    cursor = 0
    while page := em_recs(store.emetrics_after(job, after_time=cursor, limit=5)):
        got += page
        cursor = page[-1][0]
    assert got == measured
    assert [r[2] for r in got if r[1] == "learner-3"] == [5, 2, 9, 1]
    with pytest.raises(ValueError, match="limit"):
        store.emetrics_after(job, after_time=0, limit=-1)


# -- measured figures (printed with -s; correctness asserted) -----------------


@pytest.mark.slow
def test_large_volumes(store: Store) -> None:
    for i in range(10_000):
        store.insert_job(make_job(f"training-{i:09d}", 1_700_000_000_000 + i))
    for i in range(1_000):
        store.insert_job(make_job(f"training-b{i:08d}", 1_600_000_000_000, user="bob"))
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        jobs = store.list_jobs(USER)
        timings.append(time.perf_counter() - t)
    assert [j.training_id for j in jobs] == [f"training-{i:09d}" for i in range(10_000)]

    tid = "training-000000000"
    batch = [f"epoch 3 step {i:05d} loss=0.{i:04d} acc=0.9{i:03d}" for i in range(2_000)]
    t = time.perf_counter()
    for _ in range(250):
        store.append_log_lines(tid, USER, "learner-1", batch)
    lines_per_s = 500_000 / (time.perf_counter() - t)
    assert store.log_count(tid) == 500_000
    last = log_recs(store.log_page(tid, pos=-1, pagesize=3))
    assert [r[2] for r in last] == [499_998, 499_999, 500_000]

    batches = [[metric(b * 1_000 + i) for i in range(1_000)] for b in range(100)]
    t = time.perf_counter()
    for records in batches:
        store.append_emetrics(tid, USER, records)
    metrics_s = time.perf_counter() - t
    assert [r.meta.rindex for r in store.emetrics_page(tid, pos=99_999, pagesize=5)] == [
        99_999,
        100_000,
    ]
    print(
        f"\nlist_jobs of 10,000 jobs: best {min(timings) * 1e3:.1f} ms, "
        f"worst {max(timings) * 1e3:.1f} ms; append_log_lines: {lines_per_s:,.0f} lines/s "
        f"({len(batch[0])}-char lines, 2,000 per batch); append_emetrics: 100,000 records "
        f"in {metrics_s * 1e3:.0f} ms"
    )
