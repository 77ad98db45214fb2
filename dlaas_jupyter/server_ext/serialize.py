"""Trainer records as the JSON the REST and WebSocket API send.

Shapes are described in openapi.yaml. Timestamps are integer milliseconds
since the epoch (null when unset); statuses are names ("PROCESSING").
Non-finite metric values become the strings "NaN", "Infinity" and
"-Infinity" (what JavaScript's ``Number()`` reads back): JSON has no such
numbers, and a diverged loss is worth showing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dlaas_jupyter.client import TERMINAL
from dlaas_jupyter.formatting import emetrics_dict, status_name
from dlaas_jupyter.proto import trainer_pb2 as pb

__all__ = ["emetrics_json", "job_json", "jobs_json", "log_json", "versions_json"]

TIMESTAMPS = ("submission", "download_start", "process_start", "store_start", "completion")


def job_json(job: pb.Job) -> dict[str, Any]:
    """A job without its zip: what the side panel lists and shows."""
    status = job.status
    definition = job.model_definition
    resources = job.training.resources
    unit = resources.memory_unit
    return {
        "training_id": job.training_id,
        "user_id": job.user_id,
        "name": definition.name,
        "description": definition.description,
        "framework": {"name": definition.framework.name, "version": definition.framework.version},
        "command": job.training.command,
        "resources": {
            "cpus": _float32(resources.cpus),
            "gpus": _float32(resources.gpus),
            "memory": _float32(resources.memory),
            "memory_unit": pb.SizeUnit.Name(unit) if unit in pb.SizeUnit.values() else str(unit),
            "learners": resources.learners,
        },
        "status": status_name(status.status),
        "terminal": status.status in TERMINAL,
        "status_message": status.status_message,
        "error_code": status.error_code,
        "timestamps": {name: millis(getattr(status, f"{name}_timestamp")) for name in TIMESTAMPS},
    }


def jobs_json(jobs: Iterable[pb.Job]) -> list[dict[str, Any]]:
    """Jobs newest first (by submission time, then id, so the order is stable)."""
    listed = [job_json(job) for job in jobs]
    listed.sort(
        key=lambda job: (job["timestamps"]["submission"] or 0, job["training_id"]), reverse=True
    )
    return listed


def log_json(line: pb.LogLine) -> dict[str, Any]:
    meta = line.meta
    return {"subid": meta.subid, "rindex": meta.rindex, "time": meta.time, "line": line.line}


def emetrics_json(record: pb.EMetrics) -> dict[str, Any]:
    return _finite(emetrics_dict(record))


def versions_json(versions: dict[str, list[pb.FrameworkDetails]]) -> dict[str, Any]:
    return {
        "frameworks": {
            name: [{"version": d.version, "external": d.external} for d in details]
            for name, details in sorted(versions.items())
        }
    }


def millis(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _float32(value: float) -> float:
    """A proto float32 as the decimal it was written as (0.1, not 0.10000000149011612)."""
    return float(f"{value:.7g}")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (nested in JSON values too) as its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value
