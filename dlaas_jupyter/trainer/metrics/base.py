"""What the collectors share with the runner that drives them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dlaas_jupyter.proto import trainer_pb2 as pb

# Where a collector reports a problem the user should see: (subid, message)
# becomes a line in that learner's log (an empty subid means learner-1).
LogNote = Callable[[str, str], None]


class LineExtractor(Protocol):
    """Turns a learner's log lines into records as they are collected."""

    def feed(self, subid: str, lines: list[str]) -> list[pb.EMetrics]:
        """Records completed by these new lines of learner ``subid``."""
        ...


class FileWatcher(Protocol):
    """Finds records in files the job writes; polled while it runs, then once more."""

    def poll(self, final: bool = False) -> list[pb.EMetrics]:
        """Records written since the last poll, in the order to store them;
        ``final``: the job has ended, so nothing is held back for more data."""
        ...
