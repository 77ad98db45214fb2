"""Reading a learner's log file into the store, live.

Learners write straight into LOG_DIR/training-log.txt (no pipe), so a chatty
job never waits for collection. One thread per learner tails that file: it
reads whatever is new, stores the complete lines as one batch, and when
nothing is new sleeps a few milliseconds, so a quiet job's line is stored
within milliseconds and a chatty job's lines go in a few large transactions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

READ_SIZE = 1 << 20
# Lines longer than this are stored in pieces, so one record always fits in a
# gRPC message; a 1 MB line is kept whole.
MAX_LINE = 2 << 20
BATCH_LINES = 50_000
IDLE_FIRST = 0.002
IDLE_MAX = 0.02

LineSink = Callable[[list[str]], None]


def decode_line(raw: bytes) -> str:
    """Text of one line: invalid UTF-8 becomes U+FFFD, a trailing CR goes."""
    return raw.removesuffix(b"\r").decode("utf-8", errors="replace")


class OutputCollector(threading.Thread):
    """Tails one learner's log file until told the learner is gone."""

    def __init__(self, log_file: Path, sink: LineSink, name: str) -> None:
        super().__init__(name=f"collect-{name}", daemon=True)
        self._log_file = log_file
        self._sink = sink
        self._finished = threading.Event()
        self.error: BaseException | None = None

    def finish(self) -> None:
        """The learner's processes are gone: store what is left, then stop."""
        self._finished.set()

    def run(self) -> None:
        try:
            with open(self._log_file, "rb", buffering=0) as log:
                self._tail(log)
        except BaseException as exc:  # reported by the runner, never silently lost
            self.error = exc

    def _tail(self, log) -> None:
        partial = b""
        idle = IDLE_FIRST
        while True:
            # Checked before reading: everything written before the learner
            # exited is then seen by the reads below.
            finishing = self._finished.is_set()
            lines: list[str] = []
            while len(lines) < BATCH_LINES:
                chunk = log.read(READ_SIZE)
                if not chunk:
                    break
                partial = _split(partial + chunk, lines)
                if len(chunk) < READ_SIZE:
                    break
            if lines:
                self._sink(lines)
                idle = IDLE_FIRST
                continue
            if finishing:
                break
            self._finished.wait(idle)
            idle = min(idle * 2, IDLE_MAX)
        if partial:
            self._sink([decode_line(partial)])


def _split(data: bytes, lines: list[str]) -> bytes:
    """Move complete lines of ``data`` into ``lines``; return the rest."""
    end = data.rfind(b"\n")
    if end >= 0:
        # Decoding the complete lines in one call keeps the hot path in C.
        text = data[:end].decode("utf-8", errors="replace")
        if "\r" in text:
            lines.extend(line.removesuffix("\r") for line in text.split("\n"))
        else:
            lines.extend(text.split("\n"))
        data = data[end + 1 :]
    while len(data) > MAX_LINE:
        lines.append(decode_line(data[:MAX_LINE]))
        data = data[MAX_LINE:]
    return data
