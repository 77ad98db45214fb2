"""The embedded Trainer's durable state: jobs, status history, log lines, metrics.

One SQLite file in WAL mode with synchronous=NORMAL: a crash of the Trainer
process loses nothing already committed, and readers never wait for the writer.
All writes go through one connection guarded by a lock; every reading thread
gets its own connection, so the gRPC event loop is never blocked behind a
log append.

Log lines are the hot path and are stored in chunk rows, one per appended batch:
within a batch both rindex and time are consecutive, so a row holds
(first_rindex, first_time) and the lines joined by newlines, and line i of the
row has rindex first_rindex + i and time first_time + i. Time is strictly
increasing per job across all its learners, which makes it a unique cursor for
live tails (``log_records_after``).
"""

from __future__ import annotations

import heapq
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dlaas_jupyter.proto import trainer_pb2 as pb

DEFAULT_PAGESIZE = 10

# Migrations by index: _MIGRATIONS[v] holds the statements that take the schema
# from version v to v + 1. All of them run in one transaction.
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
        """CREATE TABLE log_chunks (
            training_id  TEXT NOT NULL,
            subid        TEXT NOT NULL,
            user_id      TEXT NOT NULL,
            first_rindex INTEGER NOT NULL,
            last_rindex  INTEGER NOT NULL,
            first_time   INTEGER NOT NULL,
            last_time    INTEGER NOT NULL,
            lines        TEXT NOT NULL  -- the batch's lines joined by newlines
        )""",
        "CREATE INDEX log_chunks_by_time ON log_chunks (training_id, last_time)",
        "CREATE INDEX log_chunks_by_subid_time ON log_chunks (training_id, subid, last_time)",
        "CREATE INDEX log_chunks_by_subid_rindex ON log_chunks (training_id, subid, last_rindex)",
        """CREATE TABLE emetrics (
            training_id TEXT NOT NULL,
            time        INTEGER NOT NULL,
            subid       TEXT NOT NULL,
            rindex      INTEGER NOT NULL,
            record      BLOB NOT NULL,  -- serialized pb.EMetrics, meta filled in
            PRIMARY KEY (training_id, time)
        ) WITHOUT ROWID""",
        # One secondary index only (each costs about a third of the append time):
        # rindex queries filter it without reading records.
        "CREATE INDEX emetrics_by_subid ON emetrics (training_id, subid, time, rindex)",
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

# A log record before it becomes a pb.LogLine: (time, subid, rindex, user_id, line).
_Line = tuple[int, str, int, str, str]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Counters:
    """Where one job's log or metrics stream continues: its last time and the
    last rindex of each learner (loaded from the database on first use)."""

    last_time: int
    last_rindex: dict[str, int] = field(default_factory=dict)


class Store:
    """The Trainer's SQLite store. Safe to call from any thread."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()  # guards the writer and the counters
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._closed = False
        self._log_counters: dict[str, _Counters] = {}
        self._em_counters: dict[str, _Counters] = {}
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
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
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
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

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
                    (job.training_id, job.user_id, job.status.status, int(submitted),
                     job.SerializeToString()),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"job {job.training_id!r} already exists") from None
            conn.execute(
                "INSERT INTO status_history (training_id, status, at_ms, message) "
                "VALUES (?, ?, ?, ?)",
                (job.training_id, job.status.status, int(submitted), job.status.status_message),
            )

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
        return [pb.Job.FromString(blob) for (blob,) in rows]

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
        return [pb.Job.FromString(blob) for (blob,) in rows]

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
        pb.Status.Name(status)  # ValueError naming the number if it is not a Status
        at = _now_ms() if at_ms is None else at_ms
        with self._lock, self._transaction() as conn:
            row = conn.execute(
                "SELECT job FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
            if row is None:
                raise KeyError(training_id)
            job = pb.Job.FromString(row[0])
            job.status.status = status  # type: ignore[assignment]
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

    def set_runtime(self, training_id: str, info: dict) -> None:
        """Record what a restarted Trainer needs to find the job's processes."""
        blob = json.dumps(info)
        with self._lock, self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET runtime = ? WHERE training_id = ?", (blob, training_id)
            )
            if cur.rowcount == 0:
                raise KeyError(training_id)

    def get_runtime(self, training_id: str) -> dict:
        """The last ``set_runtime`` info, ``{}`` if none was set."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT runtime FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
        if row is None:
            raise KeyError(training_id)
        return json.loads(row[0])

    def delete_job(self, training_id: str) -> None:
        """Remove the job with its history, runtime, log lines and metrics.
        Deleting an unknown job does nothing."""
        with self._lock:
            with self._transaction() as conn:
                for table in ("jobs", "status_history", "log_chunks", "emetrics"):
                    conn.execute(f"DELETE FROM {table} WHERE training_id = ?", (training_id,))
            self._log_counters.pop(training_id, None)
            self._em_counters.pop(training_id, None)

    def _require_job(self, conn: sqlite3.Connection, training_id: str) -> None:
        if conn.execute("SELECT 1 FROM jobs WHERE training_id = ?", (training_id,)).fetchone():
            return
        raise KeyError(training_id)

    # -- log lines --------------------------------------------------------

    def _counters(
        self, cache: dict[str, _Counters], table: str, time_column: str, training_id: str
    ) -> _Counters:
        """The job's counters for one stream; the caller holds the lock."""
        counters = cache.get(training_id)
        if counters is None:
            (last,) = self._writer.execute(
                f"SELECT MAX({time_column}) FROM {table} WHERE training_id = ?", (training_id,)
            ).fetchone()
            counters = cache[training_id] = _Counters(last_time=last or 0)
        return counters

    def _last_rindex(
        self, counters: _Counters, table: str, rindex_column: str, training_id: str, subid: str
    ) -> int:
        last = counters.last_rindex.get(subid)
        if last is None:
            (last,) = self._writer.execute(
                f"SELECT MAX({rindex_column}) FROM {table} WHERE training_id = ? AND subid = ?",
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
        with self._lock:
            with self._transaction() as conn:
                self._require_job(conn, training_id)
                counters = self._counters(self._log_counters, "log_chunks", "last_time", training_id)
                first_rindex = 1 + self._last_rindex(
                    counters, "log_chunks", "last_rindex", training_id, subid
                )
                first_time = max(_now_ms(), counters.last_time + 1)
                n = len(lines)
                conn.execute(
                    "INSERT INTO log_chunks (training_id, subid, user_id, first_rindex, "
                    "last_rindex, first_time, last_time, lines) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (training_id, subid, user_id, first_rindex, first_rindex + n - 1,
                     first_time, first_time + n - 1, text),
                )
            counters.last_rindex[subid] = first_rindex + n - 1
            counters.last_time = first_time + n - 1

    def log_count(self, training_id: str) -> int:
        """Number of log lines of the job (rindex runs from 1 without gaps per learner)."""
        with self._read() as conn:
            return sum(
                conn.execute(
                    "SELECT MAX(last_rindex) FROM log_chunks WHERE training_id = ? AND subid = ?",
                    (training_id, subid),
                ).fetchone()[0]
                for subid in _subids(conn, "log_chunks", training_id)
            )

    def log_page(
        self, training_id: str, *, subid: str = "", pos: int = 0, pagesize: int = 0,
        since: str = "",
    ) -> list[pb.LogLine]:
        """One page of log lines with FfDL's Query semantics (see ``_page_args``)."""
        n, min_time = _page_args(pagesize, since)
        with self._read() as conn:
            if pos > 0:
                found = _lines_by_rindex(conn, training_id, subid, pos, n, min_time)
            elif pos < 0:
                found = _lines_backward(conn, training_id, subid, -pos - 1, n, min_time)
            else:
                found = _lines_forward(conn, training_id, subid, min_time, n)
        return [_log_line(training_id, rec) for rec in found]

    def log_records_after(
        self, training_id: str, *, after_time: int, limit: int
    ) -> list[pb.LogLine]:
        """Up to ``limit`` lines with time > after_time, in time order: the live
        tail's cursor is the time of the last line it got."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        with self._read() as conn:
            found = _lines_forward(conn, training_id, "", after_time + 1, limit)
        return [_log_line(training_id, rec) for rec in found]

    # -- evaluation metrics -----------------------------------------------

    def append_emetrics(
        self, training_id: str, user_id: str, records: Sequence[pb.EMetrics]
    ) -> None:
        """Append metric records in one transaction. A record keeps its
        meta.rindex if > 0 (else gets its learner's next) and its meta.time if > 0
        (else now), bumped so time strictly increases per job. The caller's
        records are not modified. KeyError if the job is unknown."""
        if not records:
            return
        now = _now_ms()
        with self._lock:
            with self._transaction() as conn:
                self._require_job(conn, training_id)
                counters = self._counters(self._em_counters, "emetrics", "time", training_id)
                last_time = counters.last_time
                last_rindex: dict[str, int] = {}
                rows = []
                for given in records:
                    record = pb.EMetrics()
                    record.CopyFrom(given)
                    meta = record.meta
                    sub = meta.subid
                    last = last_rindex.get(sub)
                    if last is None:
                        last = self._last_rindex(counters, "emetrics", "rindex", training_id, sub)
                    if meta.rindex <= 0:
                        meta.rindex = last + 1
                    last_rindex[sub] = max(last, meta.rindex)
                    last_time = meta.time = max(meta.time if meta.time > 0 else now, last_time + 1)
                    meta.training_id = training_id
                    meta.user_id = user_id
                    rows.append(
                        (training_id, meta.time, sub, meta.rindex, record.SerializeToString())
                    )
                conn.executemany(
                    "INSERT INTO emetrics (training_id, time, subid, rindex, record) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            counters.last_time = last_time
            counters.last_rindex.update(last_rindex)

    def emetrics_page(
        self, training_id: str, *, subid: str = "", pos: int = 0, pagesize: int = 0,
        since: str = "",
    ) -> list[pb.EMetrics]:
        """One page of metric records, with the same semantics as ``log_page``."""
        n, min_time = _page_args(pagesize, since)
        with self._read() as conn:
            if pos > 0:
                per_learner = [
                    conn.execute(
                        "SELECT time, record FROM emetrics INDEXED BY emetrics_by_subid "
                        "WHERE training_id = ? AND subid = ? AND rindex >= ? AND rindex < ? "
                        "AND time >= ? ORDER BY time LIMIT ?",
                        (training_id, sub, pos, pos + n, min_time, n),
                    ).fetchall()
                    for sub in ([subid] if subid else _subids(conn, "emetrics", training_id))
                ]
                rows = [row for row, _ in zip(heapq.merge(*per_learner), range(n))]
            else:
                where, params = "training_id = ? AND time >= ?", [training_id, min_time]
                index = ""  # the primary key (training_id, time)
                if subid:
                    where += " AND subid = ?"
                    params.append(subid)
                    # Without stats the planner may prefer the primary key and filter.
                    index = "INDEXED BY emetrics_by_subid"
                if pos < 0:
                    order, limit = "DESC LIMIT ? OFFSET ?", [n, -pos - 1]
                else:
                    order, limit = "LIMIT ?", [n]
                rows = conn.execute(
                    f"SELECT time, record FROM emetrics {index} WHERE {where} "
                    f"ORDER BY time {order}",
                    [*params, *limit],
                ).fetchall()
                if pos < 0:
                    rows.reverse()
        return [pb.EMetrics.FromString(blob) for _, blob in rows]

    def emetrics_after(
        self, training_id: str, *, after_time: int, limit: int
    ) -> list[pb.EMetrics]:
        """Up to ``limit`` records with time > after_time, in time order."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT record FROM emetrics WHERE training_id = ? AND time > ? "
                "ORDER BY time LIMIT ?",
                (training_id, after_time, limit),
            ).fetchall()
        return [pb.EMetrics.FromString(blob) for (blob,) in rows]


# -- paging helpers -----------------------------------------------------------


def _page_args(pagesize: int, since: str) -> tuple[int, int]:
    """FfDL's Query rules: pagesize 0 means 10; since is decimal ms since the
    epoch (records with time >= since). Returns (pagesize, minimum time)."""
    if pagesize < 0:
        raise ValueError(f"pagesize must not be negative, got {pagesize}")
    if since and not _DECIMAL.fullmatch(since):
        raise ValueError(f"since must be milliseconds since the epoch, got {since!r}")
    return pagesize or DEFAULT_PAGESIZE, int(since) if since else 0


def _subids(conn: sqlite3.Connection, table: str, training_id: str) -> list[str]:
    """The job's learners, found by hopping along the (training_id, subid, ...)
    index rather than scanning every row of the job."""
    found: list[str] = []
    sql = (f"SELECT subid FROM {table} WHERE training_id = ? AND subid > ? "
           "ORDER BY subid LIMIT 1")
    # "" is a valid subid (a job with one unnamed learner), so start below it.
    row = conn.execute(
        f"SELECT subid FROM {table} WHERE training_id = ? ORDER BY subid LIMIT 1",
        (training_id,),
    ).fetchone()
    while row is not None:
        found.append(row[0])
        row = conn.execute(sql, (training_id, row[0])).fetchone()
    return found


_CHUNK_COLUMNS = "subid, user_id, first_rindex, first_time, lines"


def _chunk_filter(training_id: str, subid: str) -> tuple[str, list[object]]:
    if subid:
        return "training_id = ? AND subid = ?", [training_id, subid]
    return "training_id = ?", [training_id]


def _lines_forward(
    conn: sqlite3.Connection, training_id: str, subid: str, min_time: int, n: int
) -> list[_Line]:
    """The first ``n`` lines with time >= min_time, in time order."""
    where, params = _chunk_filter(training_id, subid)
    out: list[_Line] = []
    with closing(conn.execute(
        f"SELECT {_CHUNK_COLUMNS} FROM log_chunks WHERE {where} AND last_time >= ? "
        "ORDER BY last_time",
        [*params, min_time],
    )) as cur:
        for sub, user, first_rindex, first_time, text in cur:
            lines = text.split("\n")
            start = max(0, min_time - first_time)
            stop = min(len(lines), start + n - len(out))
            out.extend(
                (first_time + i, sub, first_rindex + i, user, lines[i]) for i in range(start, stop)
            )
            if len(out) == n:
                break
    return out


def _lines_backward(
    conn: sqlite3.Connection, training_id: str, subid: str, skip: int, n: int, min_time: int
) -> list[_Line]:
    """Counting back from the last line (time >= min_time), skip ``skip`` lines
    and return the ``n`` before them, in time order."""
    where, params = _chunk_filter(training_id, subid)
    pieces: list[list[_Line]] = []
    wanted = n
    with closing(conn.execute(
        f"SELECT {_CHUNK_COLUMNS}, last_rindex FROM log_chunks WHERE {where} "
        "AND last_time >= ? ORDER BY last_time DESC",
        [*params, min_time],
    )) as cur:
        for sub, user, first_rindex, first_time, text, last_rindex in cur:
            low = max(0, min_time - first_time)  # first usable line of the chunk
            usable = last_rindex - first_rindex + 1 - low
            if skip >= usable:
                skip -= usable
                continue
            lines = text.split("\n")
            stop = len(lines) - skip
            start = max(low, stop - wanted)
            skip = 0
            pieces.append(
                [(first_time + i, sub, first_rindex + i, user, lines[i]) for i in range(start, stop)]
            )
            wanted -= stop - start
            if wanted == 0:
                break
    return [rec for piece in reversed(pieces) for rec in piece]


def _lines_by_rindex(
    conn: sqlite3.Connection, training_id: str, subid: str, pos: int, n: int, min_time: int
) -> list[_Line]:
    """Lines with rindex in [pos, pos + n) and time >= min_time, of one learner
    or of all, the first ``n`` in time order."""
    per_learner: list[list[_Line]] = []
    for sub in [subid] if subid else _subids(conn, "log_chunks", training_id):
        found: list[_Line] = []
        with closing(conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM log_chunks WHERE training_id = ? AND subid = ? "
            "AND last_rindex >= ? ORDER BY last_rindex",
            (training_id, sub, pos),
        )) as cur:
            for _, user, first_rindex, first_time, text in cur:
                if first_rindex >= pos + n:
                    break
                lines = text.split("\n")
                start = max(pos - first_rindex, min_time - first_time, 0)
                stop = min(len(lines), pos + n - first_rindex)
                found.extend(
                    (first_time + i, sub, first_rindex + i, user, lines[i])
                    for i in range(start, stop)
                )
        per_learner.append(found)
    merged = heapq.merge(*per_learner)
    return [rec for rec, _ in zip(merged, range(n))]


def _log_line(training_id: str, rec: _Line) -> pb.LogLine:
    at, subid, rindex, user_id, line = rec
    return pb.LogLine(
        meta=pb.MetaInfo(
            training_id=training_id, user_id=user_id, time=at, rindex=rindex, subid=subid
        ),
        line=line,
    )
