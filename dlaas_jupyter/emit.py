"""Record evaluation metrics from training code running as a dlaas training job.

Records go to $LOG_DIR/evaluation-metrics.txt in FfDL's JSON-lines format, which
the Trainer's emetrics_file collector reads while the job runs. This module needs
only the standard library, so importing it costs training code nothing.
"""

from __future__ import annotations

import json
import numbers
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "evaluation-metrics.txt"
# Keys that locate a record in training time (the x axis) rather than measure it.
ETIME_KEYS = frozenset({"iteration", "epoch", "step", "tick", "time", "timestamp"})
OUTSIDE_JOB_NOTICE = (
    "dlaas_jupyter.emit: not running inside a dlaas training job; "
    "metrics are not recorded (this message is shown once)"
)

Value = float | int | str | bool | dict[str, Any] | list[Any] | tuple[Any, ...]
# {key: {"type": name, "value": text}}, as a line of the metrics file holds them
_Fields = dict[str, dict[str, str]]


def emit(group: str, /, **values: Value) -> None:
    """Append one record of ``group`` (e.g. "train", "test") to the job's metrics.

    Keyword arguments named iteration, epoch, step, tick, time or timestamp say
    when (they become the record's etimes); all others are the measured values.
    Types are kept: int -> INT, float -> FLOAT, str -> STRING, dict/list ->
    JSONSTRING, and bool -> JSONSTRING "true"/"false" (a flag, not a number to
    plot). Numpy numbers count as int or float.

    Each call appends one complete line at once, so records show up live and
    several processes may emit into the same file. Outside a training job (no
    LOG_DIR or TRAINING_ID) nothing is written and a notice is printed once.

    Raises TypeError for a group that is not a string or a value of another type.

    Example::

        from dlaas_jupyter import emit

        for epoch in range(10):
            loss = train_one_epoch()
            emit("train", epoch=epoch, loss=loss)
            emit("test", epoch=epoch, accuracy=evaluate(), confusion=matrix.tolist())
    """
    if not isinstance(group, str):
        raise TypeError(
            f"emit(): the group must be a string such as 'train' or 'test', "
            f"not {type(group).__name__}"
        )
    if not values:
        raise TypeError("emit() got no values to record, e.g. emit('train', epoch=1, loss=0.5)")
    etimes: _Fields = {}
    measured: _Fields = {}
    for key, value in values.items():
        if key in ETIME_KEYS:
            etimes[key] = _typed(key, value, etime=True)
        else:
            measured[key] = _typed(key, value, etime=False)
    writer = _job_writer()
    if writer is not None:
        writer.append(group, etimes, measured)


def _typed(key: str, value: object, *, etime: bool) -> dict[str, str]:
    """The {type, value} pair of the metrics file for one argument."""
    if isinstance(value, bool) and not etime:
        return {"type": "JSONSTRING", "value": "true" if value else "false"}
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return {"type": "INT", "value": str(int(value))}
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return {"type": "FLOAT", "value": repr(float(value))}
    if isinstance(value, str):
        return {"type": "STRING", "value": value}
    if isinstance(value, (dict, list, tuple)) and not etime:
        try:
            return {"type": "JSONSTRING", "value": json.dumps(value)}
        except (TypeError, ValueError) as e:
            raise TypeError(f"emit(): {key} cannot be written as JSON: {e}") from None
    allowed = "int, float or str" if etime else "int, float, str, bool, dict or list"
    raise TypeError(
        f"emit(): {key}={value!r:.60} has type {type(value).__name__}; {key} must be {allowed} "
        "(for a tensor or an array, pass .item() or .tolist())"
    )


class _Writer:
    """Appends records to one metrics file, numbering them by line.

    rindex is the record's line number in the file, so it continues after lines
    an earlier run left and stays unique when several processes write: the file
    is locked from counting to writing, and lines others wrote since our last
    write are counted first.
    """

    def __init__(self, path: Path, training_id: str, subid: str) -> None:
        # Imported here: learners run on POSIX systems, but `import dlaas_jupyter`
        # (which imports this module) must work on Windows too.
        import fcntl

        self._fcntl = fcntl
        self.path, self.training_id, self.subid = path, training_id, subid
        self.lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0  # the file's size after our last write
        self._lines = 0  # lines in the file up to _size
        self._failed = False

    def append(self, group: str, etimes: _Fields, values: _Fields) -> None:
        with self.lock:
            try:
                self._append(group, etimes, values)
            except OSError as e:  # metrics must never end a training run
                if not self._failed:
                    self._failed = True
                    print(
                        f"dlaas_jupyter.emit: cannot write metrics to {self.path}: {e}; "
                        "metrics are not recorded",
                        file=sys.stderr,
                    )

    def _append(self, group: str, etimes: _Fields, values: _Fields) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        fd, fcntl = self._fd, self._fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            prefix = b""
            if size != self._size:  # others wrote since our last line, or this is our first
                if size < self._size:  # truncated: count afresh
                    self._size = self._lines = 0
                self._lines += _newlines(fd, self._size, size)
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    prefix = b"\n"  # end a line left unfinished, e.g. by a killed writer
                    self._lines += 1
            meta: dict[str, object] = {
                "training_id": self.training_id,
                "rindex": self._lines + 1,
                "time": time.time_ns() // 1_000_000,
            }
            if self.subid:
                meta["subid"] = self.subid
            record = {"meta": meta, "grouplabel": group, "etimes": etimes, "values": values}
            line = prefix + json.dumps(record, separators=(",", ":")).encode() + b"\n"
            written = os.write(fd, line)  # one write of a whole line on an O_APPEND file
            while written < len(line):  # only if the disk fills or a signal interrupts
                written += os.write(fd, line[written:])
            self._lines += 1
            self._size = size + len(line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _newlines(fd: int, start: int, end: int) -> int:
    count = 0
    while start < end:
        chunk = os.pread(fd, min(1 << 20, end - start), start)
        if not chunk:
            break
        count += chunk.count(b"\n")
        start += len(chunk)
    return count


def _subid(learner_id: str) -> str:
    """The Trainer sets LEARNER_ID to the learner's number; records name "learner-N"."""
    return f"learner-{learner_id}" if learner_id.isdigit() else learner_id


_state_lock = threading.Lock()
_writer: _Writer | None = None
_noticed = False


def _job_writer() -> _Writer | None:
    """The writer for the job this process runs in, or None (with a notice) outside one."""
    global _writer, _noticed
    log_dir, training_id = os.environ.get("LOG_DIR"), os.environ.get("TRAINING_ID")
    with _state_lock:
        if not log_dir or not training_id:
            if not _noticed:
                _noticed = True
                print(OUTSIDE_JOB_NOTICE, file=sys.stderr)
            return None
        path = Path(log_dir) / METRICS_FILE
        subid = _subid(os.environ.get("LEARNER_ID", ""))
        current = _writer
        if current is None or (current.path, current.training_id, current.subid) != (
            path,
            training_id,
            subid,
        ):
            if current is not None:
                with current.lock:
                    current.close()
            current = _writer = _Writer(path, training_id, subid)
        return current


def _forget_parent_writer() -> None:
    """A forked child shares its parent's open file, and so its lock: start afresh."""
    global _writer, _state_lock
    _state_lock = threading.Lock()
    if _writer is not None:
        _writer.close()
        _writer = None


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_forget_parent_writer)
