"""One job's metric collection: the chosen collector, live, drained at the end.

The regex extractor is fed by the log collection threads as lines are stored;
file-based collectors (the metrics file, TensorBoard event files) are polled by
a thread of their own. The metrics file is always watched, whatever the spec,
so `dlaas_jupyter.emit()` works without any configuration.

Records are stored per learner, as a follow reads them: a record that names no
learner (TensorBoard's, whose event files are the job's) is learner-1's, as a
collector's note without one is. When several sources feed a job, each would
number its records on its own (the metrics file by line, the others not at
all), so the store numbers them all instead and rindex stays unique.
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.base import FileWatcher, LogNote
from dlaas_jupyter.trainer.metrics.emetrics_file import MetricsFileWatcher
from dlaas_jupyter.trainer.metrics.regex_extractor import RegexExtractor
from dlaas_jupyter.trainer.metrics.spec import MetricsSpec
from dlaas_jupyter.trainer.workspace import learner_name

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
RecordSink = Callable[[list[pb.EMetrics]], None]


class JobMetrics:
    def __init__(
        self,
        spec: MetricsSpec,
        *,
        logs_root: Path,
        env: Mapping[str, str],
        sink: RecordSink,
        note: LogNote,
    ) -> None:
        self._sink = sink
        self._extractor = RegexExtractor(spec, note) if spec.kind == "regex" else None
        self._watchers: list[FileWatcher] = [MetricsFileWatcher(logs_root, note)]
        folder = _expand(spec.folder, env) if spec.folder else logs_root
        # The logs are always watched; a folder inside them needs no second watcher.
        if spec.kind == "file" and not folder.resolve().is_relative_to(logs_root.resolve()):
            self._watchers.append(MetricsFileWatcher(folder, note))
        if spec.kind == "tensorboard":
            from dlaas_jupyter.trainer.metrics.tensorboard import TensorBoardWatcher

            self._watchers.append(TensorBoardWatcher(folder, note))
        self._renumber = self._extractor is not None or len(self._watchers) > 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="metrics-poll", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def feed(self, subid: str, lines: list[str]) -> None:
        """New log lines of one learner (called from its collection thread)."""
        if self._extractor is not None:
            records = self._extractor.feed(subid, lines)
            if records:
                self._store(records)

    def finish(self) -> None:
        """The job's processes are gone: collect what is left, then stop."""
        self._stop.set()
        self._thread.join()
        self._poll(final=True)

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._poll(final=False)
            except Exception as exc:  # reported by the runner once the job ends
                log.exception("metric collection failed")
                self.error = exc
                return

    def _poll(self, final: bool) -> None:
        for watcher in self._watchers:
            records = watcher.poll(final=final)
            if records:
                self._store(records)

    def _store(self, records: list[pb.EMetrics]) -> None:
        for record in records:
            meta = record.meta
            if not meta.subid:
                meta.subid = learner_name(1)
            if self._renumber:
                meta.rindex = 0  # the store gives the learner's next
        self._sink(records)


def _expand(folder: str, env: Mapping[str, str]) -> Path:
    """$JOB_STATE_DIR and friends, as the learner sees them."""
    return Path(string.Template(folder).safe_substitute(env))
