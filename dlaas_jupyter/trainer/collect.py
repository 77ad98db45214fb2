"""Reading a learner's output into the log file and the store, live.

One thread per learner reads the pipe in large chunks, keeps the raw bytes in
LOG_DIR/training-log.txt and stores decoded lines in batches: a batch is what
is already in the pipe, so a quiet job's line is stored within a millisecond or
two, and a chatty job's lines go in a few large transactions.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

READ_SIZE = 1 << 16
# Lines longer than this are stored in pieces, so one record always fits in a
# gRPC message; a 1 MB line is kept whole.
MAX_LINE = 2 << 20
BATCH_LINES = 20_000
BATCH_SECONDS = 0.02

LineSink = Callable[[list[str]], None]


def decode_line(raw: bytes) -> str:
    """Text of one line: invalid UTF-8 becomes U+FFFD, a trailing CR goes."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class OutputCollector(threading.Thread):
    """Drains one learner's output pipe until it closes."""

    def __init__(self, fd: int, log_file: Path, sink: LineSink, name: str) -> None:
        super().__init__(name=f"collect-{name}", daemon=True)
        self._fd = fd
        self._log_file = log_file
        self._sink = sink
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self._log_file, "ab", buffering=0) as raw_log:
                self._drain(raw_log)
        except BaseException as exc:  # reported by the runner, never silently lost
            self.error = exc
        finally:
            os.close(self._fd)

    def _drain(self, raw_log) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLHUP)
        partial = b""
        lines: list[str] = []
        started = 0.0
        while True:
            chunk = os.read(self._fd, READ_SIZE)
            if not chunk:
                break
            raw_log.write(chunk)
            if not lines:
                started = time.monotonic()
            partial = self._split(partial + chunk, lines)
            # Keep reading while more is waiting, up to a batch's size or age.
            if (
                len(lines) < BATCH_LINES
                and time.monotonic() - started < BATCH_SECONDS
                and poller.poll(0)
            ):
                continue
            if lines:
                self._sink(lines)
                lines = []
        if partial:
            lines.append(decode_line(partial))
        if lines:
            self._sink(lines)

    @staticmethod
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
