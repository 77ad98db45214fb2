"""Find the embedded Trainer of a data directory, starting it when none runs.

The Trainer runs as its own detached process so jobs survive restarts of the
kernel or the Jupyter server; ``D/trainer.json`` is how clients find it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from dlaas_jupyter.client.errors import TrainerUnavailable
from dlaas_jupyter.paths import LOG_FILE, TrainerInfo, read_info

LOG_TAIL_LINES = 20
_TAIL_BYTES = 16384
# How often to look for trainer.json while the Trainer starts.
_POLL_SECONDS = 0.05
_RESPAWN_FIRST_DELAY = 0.5
_RESPAWN_MAX_DELAY = 4.0

# Trainers this process spawned: kept so they are reaped when they exit (a
# Trainer that lost the start race exits at once) instead of lingering as zombies.
_spawned: list[subprocess.Popen[bytes]] = []
# One start at a time within this process; other processes race via the lock file.
_starting = threading.Lock()


def ensure_running(data_dir: Path, *, timeout: float = 30.0) -> TrainerInfo:
    """Return the live Trainer of ``data_dir``, starting one if needed.

    Safe to call from several processes at once: each may spawn a server, but
    the server holds an exclusive lock on ``D/trainer.lock`` and a loser exits,
    so all callers end up reading the same ``trainer.json``. A spawned server
    that exited without one running (it crashed, or lost the race to one that
    was stopping) is started again until ``timeout``.
    """
    data_dir = Path(data_dir).absolute()
    info = read_info(data_dir)
    if info is not None:
        return info
    with _starting:
        _reap()
        return read_info(data_dir) or _start(data_dir, timeout)


def _start(data_dir: Path, timeout: float) -> TrainerInfo:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    deadline = time.monotonic() + timeout
    child = _spawn(data_dir)
    respawn_delay = _RESPAWN_FIRST_DELAY
    respawn_at: float | None = None
    while True:
        info = read_info(data_dir)
        if info is not None:
            return info
        now = time.monotonic()
        if now >= deadline:
            break
        if child.poll() is not None:
            # Lost the lock to a Trainer still starting, or crashed: try again
            # later, backing off so losers do not keep a starting Trainer busy.
            if respawn_at is None:
                respawn_at = now + respawn_delay
                respawn_delay = min(respawn_delay * 2, _RESPAWN_MAX_DELAY)
            elif now >= respawn_at:
                child, respawn_at = _spawn(data_dir), None
        time.sleep(_POLL_SECONDS)
    log = data_dir / LOG_FILE
    raise TrainerUnavailable(
        str(data_dir),
        f"the embedded Trainer did not start within {timeout:g} s; see {log}, "
        f"which ends with:\n{_tail(log)}",
    )


def _spawn(data_dir: Path) -> subprocess.Popen[bytes]:
    with open(data_dir / LOG_FILE, "ab") as log:
        child = subprocess.Popen(
            # -P: the data dir (the working directory) must not shadow packages.
            [
                sys.executable,
                "-P",
                "-m",
                "dlaas_jupyter.trainer",
                "serve",
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=data_dir,
        )
    _spawned.append(child)
    return child


def _reap() -> None:
    _spawned[:] = [child for child in _spawned if child.poll() is None]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log that may be large (only its end is read)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError as err:
        return f"(cannot read it: {err.strerror or err})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
