"""How jobs and their records read for people, and what their values are.

Shared by the command line, the magics, the Job object and the server
extension, so a job looks the same wherever it is shown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dlaas_jupyter.proto import trainer_pb2 as pb


def describe_error(error: BaseException) -> str:
    """An error in one line; for a file error, the file and what went wrong."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def millis(text: str) -> int | None:
    """A decimal-milliseconds string as a number; None when it is not one."""
    try:
        return int(text)
    except ValueError:
        return None


def local_time(stamp: str) -> str:
    """A decimal-milliseconds timestamp as local ISO time; '' when unset."""
    value = millis(stamp)
    if not value:
        return ""
    try:
        return datetime.fromtimestamp(value / 1000).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # beyond what the platform can represent
        return stamp


def status_name(status: pb.Status.ValueType) -> str:
    """The status name; the number for a status this protocol version does not know."""
    return pb.Status.Name(status) if status in pb.Status.values() else str(status)


def framework_label(framework: pb.Framework) -> str:
    return ":".join(part for part in (framework.name, framework.version) if part)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, one line (ending in a newline) per row."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in [header, *rows]
    )


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(format_table(header, rows), end="")


def log_line_text(record: pb.LogLine, *, learners: int) -> str:
    """A log line as shown: prefixed with its learner when the job has several."""
    if learners > 1 and record.meta.subid:
        return f"[{record.meta.subid}] {record.line}"
    return record.line


def metric_value(value: pb.Any) -> Any:
    """A metric value as the Python value its type names; text a Trainer tagged
    wrongly (FfDL does, now and then) stays text rather than failing the read."""
    try:
        if value.type == pb.Any.INT:
            return int(value.value)
        if value.type == pb.Any.FLOAT:
            return float(value.value)
        if value.type == pb.Any.JSONSTRING:
            return json.loads(value.value)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return value.value
    return value.value


def emetrics_dict(record: pb.EMetrics) -> dict[str, Any]:
    """A metric record as plain values (see :func:`metric_value`), keys sorted."""
    meta = record.meta
    return {
        "group": record.grouplabel,
        "subid": meta.subid,
        "rindex": meta.rindex,
        "time": meta.time,
        "etimes": {key: metric_value(record.etimes[key]) for key in sorted(record.etimes)},
        "values": {key: metric_value(record.values[key]) for key in sorted(record.values)},
    }
