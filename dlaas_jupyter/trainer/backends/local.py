"""Learners as local processes, each in its own process group.

A learner's command runs through `/bin/sh -c` (as FfDL runs it) in a new
session, so a stop or an orphan clean-up can signal everything the command
started, grandchildren included, with one killpg.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

__all__ = ["LocalProcess", "LocalProcessBackend"]

_POLL_INTERVAL = 0.05
# psutil derives create_time from boot time and clock ticks (1/100 s), so the
# same process reads the same value; allow for float noise only.
_CREATE_TIME_TOLERANCE = 0.01


def _exit_code(returncode: int) -> int:
    """Popen's -N for a death by signal N becomes the shell's 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class LocalProcess:
    """A learner started by LocalProcessBackend (see base.LearnerProcess)."""

    def __init__(self, popen: subprocess.Popen[bytes], training_id: str) -> None:
        self._popen = popen
        self._pgid = popen.pid  # start_new_session: the shell leads its own group
        self._process = psutil.Process(popen.pid)  # unreaped, so the pid cannot be reused
        self._group_gone = False
        self.handle: dict[str, Any] = {
            "pid": popen.pid,
            "pgid": self._pgid,
            "create_time": self._process.create_time(),
            "training_id": training_id,
        }

    def poll(self) -> int | None:
        code = self._popen.poll()
        return None if code is None else _exit_code(code)

    def wait(self, timeout: float | None = None) -> int:
        return _exit_code(self._popen.wait(timeout))

    def stop(self, grace: float) -> int:
        """SIGTERM the group, wait up to `grace` s for all of it to go, then SIGKILL the group.

        Waits for the whole group, not just the shell, so a grandchild that
        ignores SIGTERM is still killed when the grace runs out.
        """
        if self._signal_group(signal.SIGTERM):
            deadline = time.monotonic() + grace
            while not self._group_ended() and time.monotonic() < deadline:
                time.sleep(_POLL_INTERVAL)
            self._signal_group(signal.SIGKILL)
        return self.wait()

    def memory_bytes(self) -> int:
        if self.poll() is not None:
            return 0
        try:
            tree = [self._process, *self._process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in tree:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _group_ended(self) -> bool:
        """True once the shell is reaped and no process of its group is left."""
        if self.poll() is None:
            return False
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            self._group_gone = True
        return self._group_gone

    def _signal_group(self, signum: int) -> bool:
        """Signal the group unless it is known to be gone; return whether it was signalled.

        Once the shell is reaped and the group found empty the pgid may be
        reused, so from then on the group is never signalled again.
        """
        if self._group_gone or self._group_ended():
            return False
        try:
            os.killpg(self._pgid, signum)
        except ProcessLookupError:
            return False
        return True


class LocalProcessBackend:
    """Runs each learner as `/bin/sh -c command` on this machine."""

    name = "local"

    def launch(
        self, command: str, *, cwd: Path, env: Mapping[str, str], output: Path
    ) -> LocalProcess:
        """Start the command with stdout and stderr appended to `output`.

        For live Python logs the caller should put PYTHONUNBUFFERED=1 in `env`.
        """
        out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(out_fd)
        return LocalProcess(popen, env.get("TRAINING_ID", ""))

    def kill_orphan(self, handle: dict[str, Any]) -> bool:
        """SIGKILL what is left of a learner from before a Trainer restart.

        While its shell still runs (same pid and create_time, so a reused pid is
        never hit) the whole group goes. Once the shell is gone the pgid alone
        proves nothing, so only members of that group whose environment names
        the same TRAINING_ID are killed.
        """
        try:
            pid, pgid = int(handle["pid"]), int(handle["pgid"])
            created = float(handle["create_time"])
            training_id = str(handle.get("training_id", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a local learner handle: {handle!r}") from exc
        try:
            proc = psutil.Process(pid)
            if (
                abs(proc.create_time() - created) <= _CREATE_TIME_TOLERANCE
                and os.getpgid(pid) == pgid
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                os.killpg(pgid, signal.SIGKILL)
                return True
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
        return bool(training_id) and _kill_leftovers(pgid, training_id)


def _kill_leftovers(pgid: int, training_id: str) -> bool:
    killed = False
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("TRAINING_ID") != training_id:
                continue
            proc.kill()
            killed = True
        except (psutil.Error, ProcessLookupError):
            continue
    return killed
