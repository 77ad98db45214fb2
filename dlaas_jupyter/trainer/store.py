"""The embedded Trainer's durable state: jobs, status history, log lines, metrics.

One SQLite file in WAL mode with synchronous=NORMAL: a crash of the Trainer
process loses nothing already committed, and readers never wait for the writer.
All writes go through one connection guarded by a lock; every reading thread
gets its own connection, so the gRPC event loop is never blocked behind a
log append.

Log lines and metric records are stored in chunk rows, one per appended run of
one learner's records, because a row per record costs several microseconds
each in SQLite alone. A job's time is strictly increasing across all its
learners, so its chunks never overlap in time: the time order of chunks is the
order of their last_time, and time is a unique cursor for live tails. In a log
chunk both rindex and time are consecutive (line i has min_rindex + i and
first_time + i), so it holds just the lines joined by newlines; a metrics chunk
keeps the times, rindexes and record ends as packed int64 arrays beside the
concatenated serialized records.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from dlaas_jupyter.proto import trainer_pb2 as pb

DEFAULT_PAGESIZE = 10


def _chunk_table(name: str, payload: str) -> tuple[str, ...]:
    """A chunk table and the indexes every paging query seeks on."""
    return (
        f"""CREATE TABLE {name} (
            training_id TEXT NOT NULL,
            subid       TEXT NOT NULL,
            first_time  INTEGER NOT NULL,
            last_time   INTEGER NOT NULL,
            min_rindex  INTEGER NOT NULL,
            max_rindex  INTEGER NOT NULL,
            count       INTEGER NOT NULL,
            {payload}
        )""",
        f"CREATE INDEX {name}_by_time ON {name} (training_id, last_time)",
        f"CREATE INDEX {name}_by_subid_time ON {name} (training_id, subid, last_time)",
        f"CREATE INDEX {name}_by_subid_rindex ON {name} (training_id, subid, max_rindex, min_rindex)",
    )


# Migrations by index: _MIGRATIONS[v] holds the statements that take the schema
# from version v to v + 1. They run in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            training_id  TEXT PRIMARY KEY,
            user_id      TEXT NOT NULL,
            status       INTEGER NOT NULL,
            submitted_ms INTEGER NOT NULL,
            job          BLOB NOT NULL,  -- serialized pb.Job without the zip
            runtime      TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX jobs_by_user ON jobs (user_id, submitted_ms)",
        "CREATE INDEX jobs_by_status ON jobs (status, submitted_ms)",
        """CREATE TABLE status_history (
            id          INTEGER PRIMARY KEY,
            training_id TEXT NOT NULL,
            status      INTEGER NOT NULL,
            at_ms       INTEGER NOT NULL,
            message     TEXT NOT NULL
        )""",
        "CREATE INDEX status_history_by_job ON status_history (training_id, id)",
        *_chunk_table(
            "log_chunks",
            "user_id TEXT NOT NULL, lines TEXT NOT NULL  -- joined by newlines",
        ),
        *_chunk_table(
            "emetrics_chunks",
            "times BLOB NOT NULL, rindexes BLOB NOT NULL, ends BLOB NOT NULL, "
            "records BLOB NOT NULL  -- serialized pb.EMetrics, meta filled in",
        ),
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# The TrainingStatus timestamp each status stamps when a job enters it.
_STAMPS: dict[int, str] = {
    pb.DOWNLOADING: "download_start_timestamp",
    pb.PROCESSING: "process_start_timestamp",
    pb.STORING: "store_start_timestamp",
    pb.COMPLETED: "completion_timestamp",
    pb.FAILED: "completion_timestamp",
    pb.HALTED: "completion_timestamp",
}

_DECIMAL = re.compile(r"[0-9]+")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pack(values: Sequence[int]) -> bytes:
    """int64 little-endian, whatever the machine."""
    packed = array("q", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes) -> array[int]:
    values = array("q")
    values.frombytes(blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _framed(blob: bytes) -> bytes:
    """A serialized Job framed as one element of GetAllResponse.jobs (field 1),
    so that many jobs parse in one call instead of one call each."""
    size = len(blob)
    head = bytearray(b"\x0a")
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + blob


def _parse_jobs(rows: list[tuple[bytes]]) -> list[pb.Job]:
    return list(pb.GetAllResponse.FromString(b"".join(_framed(blob) for (blob,) in rows)).jobs)


# -- chunks -------------------------------------------------------------------

R_co = TypeVar("R_co", covariant=True)


class _Chunk(Protocol[R_co]):
    """One stored run of a learner's records, decoded lazily."""

    subid: str
    first_time: int
    count: int

    @property
    def times(self) -> Sequence[int]: ...

    @property
    def rindexes(self) -> Sequence[int]: ...

    def record(self, i: int) -> R_co: ...


class _LogChunk:
    def __init__(self, training_id: str, row: tuple[Any, ...]) -> None:
        self.training_id = training_id
        self.subid: str = row[0]
        self.first_time: int = row[1]
        self.min_rindex: int = row[2]
        self.count: int = row[3]
        self.user_id: str = row[4]
        self._text: str = row[5]

    @property
    def times(self) -> Sequence[int]:
        return range(self.first_time, self.first_time + self.count)

    @property
    def rindexes(self) -> Sequence[int]:
        return range(self.min_rindex, self.min_rindex + self.count)

    @cached_property
    def _lines(self) -> list[str]:
        return self._text.split("\n")

    def record(self, i: int) -> pb.LogLine:
        return pb.LogLine(
            meta=pb.MetaInfo(
                training_id=self.training_id,
                user_id=self.user_id,
                time=self.first_time + i,
                rindex=self.min_rindex + i,
                subid=self.subid,
            ),
            line=self._lines[i],
        )


class _MetricsChunk:
    def __init__(self, training_id: str, row: tuple[Any, ...]) -> None:
        self.subid: str = row[0]
        self.first_time: int = row[1]
        self.count: int = row[3]
        self._times: bytes = row[4]
        self._rindexes: bytes = row[5]
        self._ends: bytes = row[6]
        self._records: bytes = row[7]

    @cached_property
    def times(self) -> Sequence[int]:
        return _unpack(self._times)

    @cached_property
    def rindexes(self) -> Sequence[int]:
        return _unpack(self._rindexes)

    @cached_property
    def _bounds(self) -> array[int]:
        return _unpack(self._ends)

    def record(self, i: int) -> pb.EMetrics:
        ends = self._bounds
        return pb.EMetrics.FromString(self._records[ends[i - 1] if i else 0 : ends[i]])


@dataclass(frozen=True)
class _Stream(Generic[R_co]):
    """Where one kind of record is stored and how its chunk rows decode."""

    table: str
    columns: str  # what decode() gets as its row, in this order
    decode: Callable[[str, tuple[Any, ...]], _Chunk[R_co]]


_LOGS: _Stream[pb.LogLine] = _Stream(
    "log_chunks", "subid, first_time, min_rindex, count, user_id, lines", _LogChunk
)
_METRICS: _Stream[pb.EMetrics] = _Stream(
    "emetrics_chunks",
    "subid, first_time, min_rindex, count, times, rindexes, ends, records",
    _MetricsChunk,
)


@dataclass
class _Counters:
    """Where one job's log or metrics stream continues: its last time and the
    last rindex of each learner (loaded from the database on first use)."""

    last_time: int
    last_rindex: dict[str, int] = field(default_factory=dict)


class Store:
    """The Trainer's SQLite store. Safe to call from any thread.

    ``on_change(training_id)`` runs in the writing thread after every committed
    change to a job's status, log or metrics (not its runtime info), so live
    followers are woken by the one place that writes rather than by each caller.
    """

    def __init__(self, path: Path, on_change: Callable[[str], None] | None = None) -> None:
        self._path = Path(path)
        self._on_change = on_change or (lambda training_id: None)
        self._lock = threading.Lock()  # guards the writer and the counters
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._closed = False
        self._counters: dict[tuple[str, str], _Counters] = {}  # (table, training_id)
        self._writer = self._connect()
        mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{self._path}: SQLite refused WAL mode (got {mode!r})")
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(
            self._path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _migrate(self) -> None:
        with self._lock, self._transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else row[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path} has schema version {version}, newer than this "
                    f"code's {SCHEMA_VERSION}: upgrade dlaas-jupyter"
                )
            for migration in _MIGRATIONS[version:]:
                for statement in migration:
                    conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        with self._lock, self._readers_lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()

    # -- connections and transactions ------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the writer connection; the caller holds the lock."""
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """This thread's reader connection, inside one read transaction so that a
        multi-query read sees one snapshot."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._readers_lock:
                if self._closed:
                    raise RuntimeError(f"store {self._path} is closed")
                conn = self._connect()
                self._readers.append(conn)
            self._local.conn = conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- jobs -------------------------------------------------------------

    def insert_job(self, job: pb.Job) -> None:
        """Store a new job. Its status (normally QUEUED) and submission_timestamp
        are the caller's; the zip must already live elsewhere."""
        if not job.training_id:
            raise ValueError("job.training_id is empty")
        if job.model_definition.content:
            raise ValueError(
                "job.model_definition.content must be cleared before storing: "
                "the zip is kept in a file"
            )
        submitted = job.status.submission_timestamp
        if not _DECIMAL.fullmatch(submitted):
            raise ValueError(
                "job.status.submission_timestamp must be milliseconds since the epoch, "
                f"got {submitted!r}"
            )
        with self._lock, self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (training_id, user_id, status, submitted_ms, job) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        job.training_id,
                        job.user_id,
                        job.status.status,
                        int(submitted),
                        job.SerializeToString(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"job {job.training_id!r} already exists") from None
            conn.execute(
                "INSERT INTO status_history (training_id, status, at_ms, message) "
                "VALUES (?, ?, ?, ?)",
                (job.training_id, job.status.status, int(submitted), job.status.status_message),
            )
        self._on_change(job.training_id)

    def get_job(self, training_id: str) -> pb.Job | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT job FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
        return None if row is None else pb.Job.FromString(row[0])

    def list_jobs(self, user_id: str) -> list[pb.Job]:
        """The user's jobs, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT job FROM jobs WHERE user_id = ? ORDER BY submitted_ms, rowid",
                (user_id,),
            ).fetchall()
        return _parse_jobs(rows)

    def jobs_with_status(self, statuses: Iterable[int]) -> list[pb.Job]:
        """Jobs in any of these statuses, oldest first."""
        wanted = sorted({int(s) for s in statuses})
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT job FROM jobs WHERE status IN ({marks}) ORDER BY submitted_ms, rowid",
                wanted,
            ).fetchall()
        return _parse_jobs(rows)

    def update_status(
        self,
        training_id: str,
        status: int,
        *,
        message: str | None = None,
        error_code: str | None = None,
        at_ms: int | None = None,
    ) -> pb.Job:
        """Move a job to ``status``, stamp the timestamp that belongs to it, record
        the change in the history, and return the updated job."""
        if status not in pb.Status.values():
            raise ValueError(f"{status} is not a training Status")
        at = now_ms() if at_ms is None else at_ms
        with self._lock, self._transaction() as conn:
            row = conn.execute(
                "SELECT job FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
            if row is None:
                raise KeyError(training_id)
            job = pb.Job.FromString(row[0])
            job.status.status = pb.Status.ValueType(status)
            if message is not None:
                job.status.status_message = message
            if error_code is not None:
                job.status.error_code = error_code
            stamp = _STAMPS.get(status)
            if stamp is not None:
                setattr(job.status, stamp, str(at))
            conn.execute(
                "UPDATE jobs SET status = ?, job = ? WHERE training_id = ?",
                (status, job.SerializeToString(), training_id),
            )
            conn.execute(
                "INSERT INTO status_history (training_id, status, at_ms, message) "
                "VALUES (?, ?, ?, ?)",
                (training_id, status, at, message or ""),
            )
        self._on_change(training_id)
        return job

    def status_history(self, training_id: str) -> list[tuple[int, int, str]]:
        """(status, at_ms, message) of every status the job entered, in order,
        starting with the one it was inserted with."""
        with self._read() as conn:
            return conn.execute(
                "SELECT status, at_ms, message FROM status_history "
                "WHERE training_id = ? ORDER BY id",
                (training_id,),
            ).fetchall()

    def set_runtime(self, training_id: str, info: dict[str, Any]) -> None:
        """Record what a restarted Trainer needs to find the job's processes."""
        blob = json.dumps(info)
        with self._lock, self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET runtime = ? WHERE training_id = ?", (blob, training_id)
            )
            if cur.rowcount == 0:
                raise KeyError(training_id)

    def get_runtime(self, training_id: str) -> dict[str, Any]:
        """The last ``set_runtime`` info, ``{}`` if none was set."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT runtime FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
        if row is None:
            raise KeyError(training_id)
        info: dict[str, Any] = json.loads(row[0])
        return info

    def delete_job(self, training_id: str) -> None:
        """Remove the job with its history, runtime, log lines and metrics.
        Deleting an unknown job does nothing."""
        with self._lock:
            with self._transaction() as conn:
                for table in ("jobs", "status_history", _LOGS.table, _METRICS.table):
                    conn.execute(f"DELETE FROM {table} WHERE training_id = ?", (training_id,))
            for stream in (_LOGS, _METRICS):
                self._counters.pop((stream.table, training_id), None)
        self._on_change(training_id)

    # -- appending records ------------------------------------------------

    def _stream_counters(self, table: str, training_id: str) -> _Counters:
        """The job's counters for one stream, checking that the job exists. The
        caller holds the lock and has a transaction open."""
        counters = self._counters.get((table, training_id))
        if counters is None:
            if not self._writer.execute(
                "SELECT 1 FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone():
                raise KeyError(training_id)
            (last,) = self._writer.execute(
                f"SELECT MAX(last_time) FROM {table} WHERE training_id = ?", (training_id,)
            ).fetchone()
            counters = self._counters[(table, training_id)] = _Counters(last_time=last or 0)
        return counters

    def _last_rindex(self, table: str, counters: _Counters, training_id: str, subid: str) -> int:
        last = counters.last_rindex.get(subid)
        if last is None:
            (last,) = self._writer.execute(
                f"SELECT MAX(max_rindex) FROM {table} WHERE training_id = ? AND subid = ?",
                (training_id, subid),
            ).fetchone()
            last = counters.last_rindex[subid] = last or 0
        return last

    def append_log_lines(
        self, training_id: str, user_id: str, subid: str, lines: Sequence[str]
    ) -> None:
        """Append one learner's lines to a job's log in one transaction.
        KeyError if the job is unknown (e.g. deleted while its log was read)."""
        if not lines:
            return
        text = "\n".join(lines)
        if text.count("\n") != len(lines) - 1:
            raise ValueError("a log line contains a newline; split lines before appending")
        n = len(lines)
        with self._lock:
            with self._transaction() as conn:
                counters = self._stream_counters(_LOGS.table, training_id)
                first_rindex = 1 + self._last_rindex(_LOGS.table, counters, training_id, subid)
                first_time = max(now_ms(), counters.last_time + 1)
                conn.execute(
                    "INSERT INTO log_chunks (training_id, subid, first_time, last_time, "
                    "min_rindex, max_rindex, count, user_id, lines) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        training_id,
                        subid,
                        first_time,
                        first_time + n - 1,
                        first_rindex,
                        first_rindex + n - 1,
                        n,
                        user_id,
                        text,
                    ),
                )
            counters.last_rindex[subid] = first_rindex + n - 1
            counters.last_time = first_time + n - 1
        self._on_change(training_id)

    def append_emetrics(
        self, training_id: str, user_id: str, records: Sequence[pb.EMetrics]
    ) -> None:
        """Append metric records in one transaction, filling in each record's meta
        in place: meta.rindex is kept if > 0, else the learner's next; meta.time
        is kept if > 0, else now, then bumped so that time strictly increases per
        job; training_id and user_id are set. KeyError if the job is unknown."""
        if not records:
            return
        now = now_ms()
        table = _METRICS.table
        with self._lock:
            with self._transaction() as conn:
                counters = self._stream_counters(table, training_id)
                last_time = counters.last_time
                last_rindex: dict[str, int] = {}
                # Runs of consecutive records of one learner: one chunk row each.
                runs: list[tuple[str, list[int], list[int], list[bytes]]] = []
                run_subid: str | None = None
                # The per-record loop is most of the append time: keep it lean.
                for record in records:
                    meta = record.meta
                    sub = meta.subid
                    if sub != run_subid:
                        run_subid = sub
                        times: list[int] = []
                        rindexes: list[int] = []
                        blobs: list[bytes] = []
                        runs.append((sub, times, rindexes, blobs))
                        if sub not in last_rindex:
                            last_rindex[sub] = self._last_rindex(table, counters, training_id, sub)
                    rindex = meta.rindex
                    if rindex <= 0:
                        rindex = meta.rindex = last_rindex[sub] + 1
                    last_rindex[sub] = max(last_rindex[sub], rindex)
                    at = meta.time
                    if at <= 0:
                        at = now
                    if at <= last_time:
                        at = last_time + 1
                    meta.time = last_time = at
                    meta.training_id = training_id
                    meta.user_id = user_id
                    times.append(at)
                    rindexes.append(rindex)
                    blobs.append(record.SerializeToString())
                conn.executemany(
                    "INSERT INTO emetrics_chunks (training_id, subid, first_time, last_time, "
                    "min_rindex, max_rindex, count, times, rindexes, ends, records) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            training_id,
                            sub,
                            times[0],
                            times[-1],
                            min(rindexes),
                            max(rindexes),
                            len(times),
                            _pack(times),
                            _pack(rindexes),
                            _pack(list(accumulate(map(len, blobs)))),
                            b"".join(blobs),
                        )
                        for sub, times, rindexes, blobs in runs
                    ],
                )
            counters.last_time = last_time
            counters.last_rindex.update(last_rindex)
        self._on_change(training_id)

    # -- reading records --------------------------------------------------

    def log_count(self, training_id: str) -> int:
        """Number of log lines of the job (rindex runs from 1 without gaps per learner)."""
        with self._read() as conn:
            return sum(
                conn.execute(
                    "SELECT MAX(max_rindex) FROM log_chunks WHERE training_id = ? AND subid = ?",
                    (training_id, subid),
                ).fetchone()[0]
                for subid in _subids(conn, _LOGS.table, training_id)
            )

    def log_page(
        self,
        training_id: str,
        *,
        subid: str = "",
        pos: int = 0,
        pagesize: int = 0,
        since: str = "",
    ) -> list[pb.LogLine]:
        """One page of log lines with FfDL's Query semantics (see ``_page``)."""
        with self._read() as conn:
            return _page(conn, _LOGS, training_id, subid, pos, pagesize, since)

    def log_records_after(
        self, training_id: str, *, after_time: int, limit: int
    ) -> list[pb.LogLine]:
        """Up to ``limit`` lines with time > after_time, in time order: the live
        tail's cursor is the time of the last line it got."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        with self._read() as conn:
            return _forward(conn, _LOGS, training_id, "", after_time + 1, limit)

    def emetrics_page(
        self,
        training_id: str,
        *,
        subid: str = "",
        pos: int = 0,
        pagesize: int = 0,
        since: str = "",
    ) -> list[pb.EMetrics]:
        """One page of metric records, with the same semantics as ``log_page``."""
        with self._read() as conn:
            return _page(conn, _METRICS, training_id, subid, pos, pagesize, since)

    def emetrics_after(self, training_id: str, *, after_time: int, limit: int) -> list[pb.EMetrics]:
        """Up to ``limit`` records with time > after_time, in time order."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        with self._read() as conn:
            return _forward(conn, _METRICS, training_id, "", after_time + 1, limit)


# -- paging -------------------------------------------------------------------

T = TypeVar("T")


def _page(
    conn: sqlite3.Connection,
    stream: _Stream[T],
    training_id: str,
    subid: str,
    pos: int,
    pagesize: int,
    since: str,
) -> list[T]:
    """FfDL's Query rules. pagesize 0 means 10; subid, if set, selects one
    learner; since (decimal ms) keeps records with time >= since. pos > 0: the
    records with rindex in [pos, pos + pagesize); pos < 0: the page ending
    -pos - 1 records before the last; pos 0: the first page. Always in time
    order, at most pagesize records."""
    if pagesize < 0:
        raise ValueError(f"pagesize must not be negative, got {pagesize}")
    if since and not _DECIMAL.fullmatch(since):
        raise ValueError(f"since must be milliseconds since the epoch, got {since!r}")
    n = pagesize or DEFAULT_PAGESIZE
    min_time = int(since) if since else 0
    if pos > 0:
        return _by_rindex(conn, stream, training_id, subid, pos, n, min_time)
    if pos < 0:
        return _backward(conn, stream, training_id, subid, -pos - 1, n, min_time)
    return _forward(conn, stream, training_id, subid, min_time, n)


def _subids(conn: sqlite3.Connection, table: str, training_id: str) -> list[str]:
    """The job's learners, found by hopping along the (training_id, subid, ...)
    index rather than reading every chunk of the job."""
    found: list[str] = []
    row = conn.execute(
        f"SELECT subid FROM {table} WHERE training_id = ? ORDER BY subid LIMIT 1",
        (training_id,),
    ).fetchone()
    while row is not None:
        found.append(row[0])
        row = conn.execute(
            f"SELECT subid FROM {table} WHERE training_id = ? AND subid > ? ORDER BY subid LIMIT 1",
            (training_id, row[0]),
        ).fetchone()
    return found


def _select(stream: _Stream[T], subid: str) -> str:
    where = "training_id = ? AND subid = ?" if subid else "training_id = ?"
    return f"SELECT {stream.columns} FROM {stream.table} WHERE {where}"


def _first_at(chunk: _Chunk[T], min_time: int) -> int:
    """Index of the chunk's first record with time >= min_time."""
    return bisect_left(chunk.times, min_time) if chunk.first_time < min_time else 0


def _forward(
    conn: sqlite3.Connection,
    stream: _Stream[T],
    training_id: str,
    subid: str,
    min_time: int,
    n: int,
) -> list[T]:
    """The first ``n`` records with time >= min_time, in time order."""
    args = (training_id, subid) if subid else (training_id,)
    out: list[T] = []
    with closing(
        conn.execute(
            f"{_select(stream, subid)} AND last_time >= ? ORDER BY last_time", (*args, min_time)
        )
    ) as cur:
        for row in cur:
            chunk = stream.decode(training_id, row)
            start = _first_at(chunk, min_time)
            stop = min(chunk.count, start + n - len(out))
            out.extend(chunk.record(i) for i in range(start, stop))
            if len(out) == n:
                break
    return out


def _backward(
    conn: sqlite3.Connection,
    stream: _Stream[T],
    training_id: str,
    subid: str,
    skip: int,
    n: int,
    min_time: int,
) -> list[T]:
    """Counting back from the last record (of those with time >= min_time), skip
    ``skip`` records and return the ``n`` before them, in time order."""
    args = (training_id, subid) if subid else (training_id,)
    pieces: list[list[T]] = []
    wanted = n
    with closing(
        conn.execute(
            f"{_select(stream, subid)} AND last_time >= ? ORDER BY last_time DESC",
            (*args, min_time),
        )
    ) as cur:
        for row in cur:
            chunk = stream.decode(training_id, row)
            low = _first_at(chunk, min_time)
            if skip >= chunk.count - low:
                skip -= chunk.count - low
                continue
            stop = chunk.count - skip
            start = max(low, stop - wanted)
            skip = 0
            pieces.append([chunk.record(i) for i in range(start, stop)])
            wanted -= stop - start
            if wanted == 0:
                break
    return [record for piece in reversed(pieces) for record in piece]


def _by_rindex(
    conn: sqlite3.Connection,
    stream: _Stream[T],
    training_id: str,
    subid: str,
    pos: int,
    n: int,
    min_time: int,
) -> list[T]:
    """Records with rindex in [pos, pos + n) and time >= min_time, of one
    learner or of all: the first ``n`` in time order."""
    end = pos + n
    hits: list[tuple[int, _Chunk[T], int]] = []
    for sub in [subid] if subid else _subids(conn, stream.table, training_id):
        with closing(
            conn.execute(
                f"SELECT {stream.columns} FROM {stream.table} WHERE training_id = ? AND subid = ? "
                "AND max_rindex >= ? AND min_rindex < ? AND last_time >= ?",
                (training_id, sub, pos, end, min_time),
            )
        ) as cur:
            for row in cur:
                chunk = stream.decode(training_id, row)
                times, rindexes = chunk.times, chunk.rindexes
                hits.extend(
                    (times[i], chunk, i)
                    for i in range(_first_at(chunk, min_time), chunk.count)
                    if pos <= rindexes[i] < end
                )
    hits.sort(key=itemgetter(0))
    return [chunk.record(i) for _, chunk, i in hits[:n]]
