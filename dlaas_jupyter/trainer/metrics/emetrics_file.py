"""Records from the JSON-lines metrics file a job writes (FfDL's emetrics_file collector).

A job appends one JSON object per line to LOG_DIR/evaluation-metrics.txt (for
instance through :func:`dlaas_jupyter.emit`). As in FfDL, the file directly under
the logs root and the one in each folder one level below (a learner's LOG_DIR)
are read; that folder's name is the subid of records that name none. The watcher
keeps a byte offset per file, so each poll parses only what was appended since.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from dlaas_jupyter.emit import METRICS_FILE
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.base import LogNote

# A job writing garbage gets a few notes in its log, not thousands.
MAX_NOTES_PER_FILE = 20
# A line still being written is buffered; beyond this it is dropped, so a job
# writing without newlines cannot grow the Trainer's memory.
MAX_LINE_BYTES = 1 << 20

# A type may be given by number or by name, in either case.
_TYPES: dict[int | str, pb.Any.DataType.ValueType] = {
    key: number for name, number in pb.Any.DataType.items() for key in (number, name, name.lower())
}
# Looked up once: an attribute of a generated class costs a lookup per use.
_STRING, _JSONSTRING, _INT, _FLOAT = pb.Any.STRING, pb.Any.JSONSTRING, pb.Any.INT, pb.Any.FLOAT
_INTEGER = re.compile(r"[-+]?[0-9]+")
_TYPE_NAMES = ", ".join(f"{name} {number}" for name, number in pb.Any.DataType.items())


class _BadLine(Exception):
    """Why one line of the metrics file cannot become a record."""


@dataclass
class _File:
    """Where reading one metrics file has got to."""

    path: Path
    subid: str  # for records that name no subid
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) when last read
    offset: int = 0  # bytes read so far, including ``partial``
    partial: bytes = b""  # start of a line not complete yet
    skipping_long_line: bool = False  # inside an over-long line: drop up to its newline
    line_no: int = 0  # complete lines consumed
    notes: int = 0

    def restart(self) -> None:
        self.offset, self.partial, self.skipping_long_line, self.line_no = 0, b"", False, 0


class MetricsFileWatcher:
    """Reads new records from ``logs_root``'s metrics files each time it is polled.

    Lines that are not valid records are reported through ``note`` and skipped; a
    job's mistakes in its metrics file never stop collection.
    """

    def __init__(self, logs_root: Path, note: LogNote, *, file_name: str = METRICS_FILE) -> None:
        self._root = Path(logs_root)
        self._note = note
        self._file_name = file_name
        self._files: dict[Path, _File] = {}

    def poll(self, final: bool = False) -> list[pb.EMetrics]:
        """Records appended since the last poll: by file (top level first, then
        learner folders in natural order), then by line.

        A last line without its newline is normally still being written and waits
        for the next poll; with ``final=True`` (the job has ended) it is read too.
        """
        records: list[pb.EMetrics] = []
        for state in self._discover():
            records.extend(self._read(state, final))
        return records

    def _discover(self) -> list[_File]:
        candidates = [(self._root / self._file_name, "")]
        try:
            with os.scandir(self._root) as entries:
                folders = sorted((e.name for e in entries if e.is_dir()), key=_natural_key)
        except (FileNotFoundError, NotADirectoryError):
            folders = []
        candidates += [(self._root / name / self._file_name, name) for name in folders]
        found = []
        for path, subid in candidates:
            state = self._files.get(path)
            if state is None:
                if not path.is_file():
                    continue
                state = self._files[path] = _File(path, subid)
            found.append(state)
        return found

    def _read(self, state: _File, final: bool) -> list[pb.EMetrics]:
        try:
            with open(state.path, "rb") as f:
                info = os.fstat(f.fileno())
                identity = (info.st_dev, info.st_ino)
                if state.identity is not None and (
                    identity != state.identity or info.st_size < state.offset
                ):
                    message = f"dlaas: {self._file_name} was replaced or truncated; read again"
                    self._note(state.subid, message)
                    state.restart()
                state.identity = identity
                f.seek(state.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        state.offset += len(data)
        if state.skipping_long_line:  # drop the rest of a line reported as too long
            newline = data.find(b"\n")
            if newline < 0:
                return []
            data, state.skipping_long_line = data[newline + 1 :], False
            state.line_no += 1
        data = state.partial + data if state.partial else data
        end = data.rfind(b"\n") + 1
        complete, state.partial = data[:end], data[end:]
        if final and state.partial:
            complete, state.partial = complete + state.partial + b"\n", b""
        try:  # one decode for the whole chunk; per line only if some line is not UTF-8
            lines: list[str] | list[bytes] = complete.decode().split("\n")
        except UnicodeDecodeError:
            lines = complete.split(b"\n")
        lines.pop()  # what followed the last newline, now in state.partial
        records = []
        for line in lines:
            state.line_no += 1
            if not line or line.isspace():
                continue
            try:
                records.append(_record(line, state.subid))
            except _BadLine as why:
                self._bad_line(state, state.line_no, str(why))
        if len(state.partial) > MAX_LINE_BYTES:
            self._bad_line(state, state.line_no + 1, f"longer than {MAX_LINE_BYTES} bytes")
            state.partial, state.skipping_long_line = b"", True
        return records

    def _bad_line(self, state: _File, line_no: int, why: str) -> None:
        state.notes += 1
        if state.notes <= MAX_NOTES_PER_FILE:
            self._note(state.subid, f"dlaas: {self._file_name} line {line_no} skipped: {why}")
        elif state.notes == MAX_NOTES_PER_FILE + 1:
            message = f"dlaas: {self._file_name}: further bad lines are not reported"
            self._note(state.subid, message)


def _record(line: str | bytes, default_subid: str) -> pb.EMetrics:
    """One line as a record; raises _BadLine saying what is wrong with it.

    This runs once per record and is most of a poll's cost, hence the inlined
    checks; JSON yields exact built-in types, so ``type(x) is`` stands for
    isinstance.
    """
    try:
        obj = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise _BadLine(f"not JSON ({e})") from None
    if type(obj) is not dict:
        raise _BadLine(f"not a JSON object but {_json_kind(obj)}")
    meta = obj.get("meta")
    if type(meta) is not dict:
        raise _BadLine("no meta object (meta.rindex is required)")
    rindex = meta.get("rindex")
    if type(rindex) is not int:
        if rindex is None:
            raise _BadLine("meta.rindex is missing")
        rindex = _integer(rindex, "meta.rindex")
    if rindex < 1:
        raise _BadLine(f"meta.rindex is {rindex}; it counts from 1")
    ms = meta.get("time")
    if type(ms) is not int:
        ms = time.time_ns() // 1_000_000 if ms is None else _integer(ms, "meta.time")
    subid = meta.get("subid")
    if type(subid) is not str:
        subid = _string(subid, "meta.subid")
    training_id = meta.get("training_id")
    if type(training_id) is not str:
        training_id = _string(training_id, "meta.training_id")
    group = obj.get("grouplabel")
    if type(group) is not str:
        group = _string(group, "grouplabel")
    record = pb.EMetrics(grouplabel=group)
    info = record.meta
    info.rindex = rindex
    info.time = ms
    info.subid = subid or default_subid
    info.training_id = training_id
    etimes = obj.get("etimes")
    if etimes is not None:
        _fill(record.etimes, etimes, "etimes")
    values = obj.get("values")
    if values is not None:
        _fill(record.values, values, "values")
    return record


def _fill(target: MutableMapping[str, pb.Any], entries: object, where: str) -> None:
    if type(entries) is not dict:
        raise _BadLine(f"{where} is {_json_kind(entries)}, not an object")
    for key, entry in entries.items():
        if type(entry) is not dict or "value" not in entry:
            raise _BadLine(f'{where}.{key} is not an object {{"type": ..., "value": ...}}')
        raw = entry.get("type", _STRING)  # FfDL takes a missing type as STRING
        raw_type = type(raw)
        kind = _TYPES.get(raw) if raw_type is int or raw_type is str else None
        if kind is None:
            raise _BadLine(f"{where}.{key} has unknown type {raw!r:.40} (use {_TYPE_NAMES})")
        try:
            text = _text(kind, entry["value"])
        except _BadLine as why:
            raise _BadLine(f"{where}.{key} {why}") from None
        item = target[key]
        item.type = kind
        item.value = text


def _text(kind: int, value: object) -> str:
    """The value as the string an Any holds, checked against its type."""
    if isinstance(value, str):
        if kind == _FLOAT:
            try:
                float(value)
            except ValueError:
                raise _BadLine(f"is FLOAT but its value {value!r:.40} is not a number") from None
        elif kind == _INT:
            if not _INTEGER.fullmatch(value):
                raise _BadLine(f"is INT but its value {value!r:.40} is not an integer")
        elif kind == _JSONSTRING:
            try:
                json.loads(value)
            except ValueError:
                raise _BadLine("is JSONSTRING but its value is not JSON") from None
        return value
    if isinstance(value, float):
        if kind == _INT:
            if not value.is_integer():
                raise _BadLine(f"is INT but its value {value!r:.40} is not an integer")
            return str(int(value))
        return json.dumps(value) if kind == _JSONSTRING else repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == _JSONSTRING and isinstance(value, (dict, list)):
        return json.dumps(value)
    raise _BadLine(f"value is {_json_kind(value)}; give a string or a number")


def _integer(value: object, where: str) -> int:
    # Protobuf's JSON mapping writes int64 fields as strings, so "7" is accepted too.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _BadLine(f"{where} is {value!r:.40}, not an integer")


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadLine(f"{where} is {_json_kind(value)}, not a string")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _natural_key(name: str) -> list[object]:
    """learner-2 before learner-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
