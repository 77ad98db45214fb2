"""Where the embedded Trainer keeps its state, and how to tell it is running;
shared by the Trainer's command line and its clients."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_data_dir

INFO_FILE = "trainer.json"
LOCK_FILE = "trainer.lock"
LOG_FILE = "trainer.log"
DATA_DIR_ENV = "DLAAS_DATA_DIR"
# The server writes trainer.json after it started; a pid whose process began
# later than that (plus clock slack) belongs to someone else.
_PID_REUSE_SLACK_SECONDS = 1.0


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``DLAAS_DATA_DIR``, else ``<jupyter data dir>/dlaas``."""
    env = os.environ if environ is None else environ
    configured = env.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path(jupyter_data_dir()) / "dlaas"


@dataclass(frozen=True)
class TrainerInfo:
    url: str
    token: str
    pid: int


def read_info(data_dir: Path) -> TrainerInfo | None:
    """The running Trainer of ``data_dir``, or None if there is none (no file,
    a half-written file, or a process that is gone or is not the one that wrote it)."""
    path = Path(data_dir) / INFO_FILE
    try:
        written = path.stat().st_mtime
        raw = json.loads(path.read_text(encoding="utf-8"))
        info = TrainerInfo(
            url=str(raw["url"]), token=str(raw.get("token") or ""), pid=int(raw["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if is_running(info.pid, started_by=written) else None


def is_running(pid: int, *, started_by: float | None = None) -> bool:
    """True while the process runs (an unreaped zombie counts as stopped) and,
    with ``started_by`` (a timestamp), only if it had started by then."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            started_by is None or process.create_time() <= started_by + _PID_REUSE_SLACK_SECONDS
        )
    except (psutil.Error, ValueError):
        return False
