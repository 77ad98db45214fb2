"""What the executor needs from whatever runs learner processes.

Job state, log and metric collection and the RPC layer talk only to these two
protocols, so a cluster engine can later replace local processes without
touching them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Backend", "LearnerProcess"]


class LearnerProcess(Protocol):
    """One running learner: its output, its identity, and control over it.

    Exit codes follow the shell convention: a normal exit gives its status, a
    death by signal N gives 128 + N (SIGKILL -> 137, SIGTERM -> 143), so one
    integer is enough for FfDL's "exit code in status_message".
    """

    handle: dict[str, Any]
    """JSON-serialisable identity (pid, pgid, create_time, training_id): how a
    restarted Trainer finds it."""

    def poll(self) -> int | None:
        """The exit code if the learner has exited, else None."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Block until the learner exits; its exit code, or subprocess.TimeoutExpired."""
        ...

    def stop(self, grace: float) -> int:
        """SIGTERM the process group, SIGKILL it after `grace` s; the exit code. Idempotent."""
        ...

    def memory_bytes(self) -> int:
        """Resident memory summed over the learner's process tree; 0 once it has exited."""
        ...


class Backend(Protocol):
    """Launches learners, and cleans up after a Trainer that died while they ran."""

    name: str

    def launch(self, command: str, *, cwd: Path, env: Mapping[str, str], output: Path) -> LearnerProcess:
        """Run `command` through a shell in `cwd` with exactly `env` as its
        environment, its stdout and stderr both appended to `output`.

        A file rather than a pipe: the learner then writes at disk-cache speed
        however far behind the log collection is, and keeps its output if the
        Trainer dies."""
        ...

    def kill_orphan(self, handle: dict[str, Any]) -> bool:
        """Kill what is left of the learner `handle` names (never another process); whether it did."""
        ...
