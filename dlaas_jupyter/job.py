"""A training job as a notebook object: what ``%dlaas_train`` and ``%dlaas_status`` return.

Displayed in a kernel with a widget front end it is the live job monitor;
elsewhere (terminal IPython, plain Python) it is a line of text. Its methods
block, for scripts and for notebooks run top to bottom (nbclient, papermill).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dlaas_jupyter.client import TERMINAL, AsyncTrainerClient, DlaasError, TrainerClient
from dlaas_jupyter.client.follow import Cursor
from dlaas_jupyter.formatting import (
    emetrics_dict,
    format_table,
    framework_label,
    local_time,
    log_line_text,
    metric_value,
    millis,
    status_name,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

if TYPE_CHECKING:
    from dlaas_jupyter.widgets import JobMonitor
    from dlaas_jupyter.widgets.curves import MetricCurves

__all__ = ["Job", "JobTable", "metric_value", "widgets_available"]

PAGE = 1000  # records per query when reading a whole log or metric series
POLL_FIRST, POLL_MAX = 0.1, 1.0  # seconds between status checks while waiting

Record = TypeVar("Record", pb.LogLine, pb.EMetrics)


def widgets_available() -> bool:
    """True inside a kernel, where ipywidgets can open comms to a front end."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        import dlaas_jupyter.widgets  # noqa: F401  (ipywidgets, bqplot)
    except ImportError:
        return False
    return True


def _read_all(
    client: TrainerClient, job: pb.Job, page: Callable[..., list[Record]]
) -> list[Record]:
    """Every stored record of a job, paged as a live follow pages (so several
    learners' records, numbered each from 1, are neither lost nor repeated)."""
    cursor = Cursor.for_job(job, client.user)
    records: list[Record] = []
    while True:
        query = cursor.query(PAGE)
        batch = page(job.training_id, pos=query.pos, pagesize=query.pagesize, since=query.since)
        new = [record for record in batch if cursor.accept(record)]
        records.extend(new)
        if len(batch) < PAGE or not new:
            return records


class Job:
    """One training job on the Trainer ``client`` talks to.

    ``folder`` is where downloads go by default (the magics pass the
    notebook's folder); without it, the current directory at download time.
    """

    def __init__(
        self,
        training_id: str,
        client: TrainerClient | None = None,
        *,
        folder: Path | None = None,
    ) -> None:
        self.id = training_id
        self.client = client if client is not None else TrainerClient()
        self.folder = folder
        self._monitor: JobMonitor | None = None

    # -- state ----------------------------------------------------------------

    def info(self) -> pb.Job:
        """The job as the Trainer describes it now (without the submitted zip)."""
        job = self.client.get(self.id)
        job.model_definition.ClearField("content")
        return job

    @property
    def name(self) -> str:
        return self.info().model_definition.name

    @property
    def status(self) -> str:
        """The status name, asked of the Trainer now, e.g. "PROCESSING" or "COMPLETED"."""
        return status_name(pb.Status.ValueType(self.client.status(self.id)))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job is COMPLETED, FAILED or HALTED; returns that status name.

        Raises TimeoutError if it is still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = POLL_FIRST
        while True:
            status = pb.Status.ValueType(self.client.status(self.id))
            if status in TERMINAL:
                return status_name(status)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"training job {self.id} is still {status_name(status)} "
                        f"after {timeout:g} s"
                    )
                delay = min(delay, left)
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    # -- actions --------------------------------------------------------------

    def halt(self) -> str:
        """Stop the job, keeping what it wrote; returns the status it ends in."""
        return status_name(self.client.halt(self.id).status)

    def delete(self) -> None:
        """Delete the job with its logs, metrics and results."""
        self.client.delete(self.id)

    def download(self, path: str | Path | None = None) -> Path:
        """Save the trained-model zip (RESULT_DIR and the logs); returns its path.

        ``path`` is a file or a folder (then ``<id>-trainedmodel.zip`` in it);
        default: that name in the notebook's folder, else the current directory.
        """
        return self.client.download_trained_model(self.id, self._destination(path))

    def download_definition(self, path: str | Path | None = None) -> Path:
        """Save the submitted model-definition zip, as :meth:`download` does the results."""
        return self.client.download_definition(self.id, self._destination(path))

    def _destination(self, path: str | Path | None) -> Path:
        if path is not None:
            return Path(path).expanduser()
        return self.folder if self.folder is not None else Path.cwd()

    # -- logs and metrics -----------------------------------------------------

    def logs(self) -> list[str]:
        """Every log line stored so far; lines of several learners are prefixed
        with the learner (``[learner-2] ...``)."""
        job = self.client.get(self.id)
        learners = job.training.resources.learners
        return [
            log_line_text(record, learners=learners).rstrip("\n")
            for record in _read_all(self.client, job, self.client.logs)
        ]

    def metric_records(self) -> list[pb.EMetrics]:
        """Every evaluation-metric record stored so far, as the Trainer sends them."""
        return _read_all(self.client, self.client.get(self.id), self.client.emetrics)

    def metrics(self) -> list[dict[str, Any]]:
        """Every evaluation-metric record stored so far, as plain values::

            {"group": "train", "subid": "learner-1", "rindex": 1, "time": <ms>,
             "etimes": {"iteration": 1}, "values": {"loss": 2.31}}

        INT values are ints, FLOAT floats, JSONSTRING parsed JSON, STRING str.
        """
        return [emetrics_dict(record) for record in self.metric_records()]

    def metric_curves(self) -> MetricCurves:
        """A figure of the records stored so far (one line per group; pick the value)."""
        from dlaas_jupyter.widgets.curves import MetricCurves

        curves = MetricCurves()
        curves.add(self.metric_records())
        curves.flush()
        return curves

    def metrics_table(self) -> str:
        """The records stored so far as a text table, one row per record."""
        records = self.metrics()
        if not records:
            return f"{self.id} has no metric records yet\n"
        etimes = sorted({key for record in records for key in record["etimes"]})
        values = sorted({key for record in records for key in record["values"]})
        several = len({record["subid"] for record in records}) > 1
        header = ["GROUP", *(["LEARNER"] if several else []), *etimes, *values]
        rows = [
            [
                record["group"],
                *([record["subid"]] if several else []),
                *(_cell(record["etimes"].get(key)) for key in etimes),
                *(_cell(record["values"].get(key)) for key in values),
            ]
            for record in records
        ]
        return format_table(header, rows)

    # -- display --------------------------------------------------------------

    @property
    def monitor(self) -> JobMonitor:
        """The live monitor widget (one per Job object, started on first use).

        Needs the kernel's running event loop, i.e. a notebook cell.
        """
        if self._monitor is None:
            from dlaas_jupyter.widgets import JobMonitor

            aclient = AsyncTrainerClient(self.client.config, timeout=self.client.timeout)
            self._monitor = JobMonitor(self.id, aclient, download_dir=self._destination(None))
            self._monitor.start()
        return self._monitor

    def summary(self) -> str:
        """One line: id, name, status (and why, when it did not complete)."""
        job = self.info()
        status = job.status
        text = f"{self.id}  {job.model_definition.name}  {status_name(status.status)}"
        if status.status in (pb.FAILED, pb.HALTED) and status.status_message:
            text += f" ({status.status_message})"
        return text

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if widgets_available():
            display(self.monitor)
        else:
            display({"text/plain": repr(self)}, raw=True)

    def __repr__(self) -> str:
        try:
            job = self.info()
        except DlaasError as exc:  # a repr must not raise: say why the state is unknown
            return f"Job({self.id!r}, status unknown: {exc})"
        return (
            f"Job({self.id!r}, name={job.model_definition.name!r}, "
            f"status={status_name(job.status.status)!r})"
        )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


class JobTable:
    """The user's jobs, oldest first: an HTML table in Jupyter, text elsewhere."""

    HEADER = ("ID", "NAME", "FRAMEWORK", "STATUS", "SUBMITTED")

    def __init__(self, jobs: Sequence[pb.Job]) -> None:
        ordered = sorted(
            jobs, key=lambda job: (millis(job.status.submission_timestamp) or 0, job.training_id)
        )
        self.rows: list[tuple[str, ...]] = [
            (
                job.training_id,
                job.model_definition.name,
                framework_label(job.model_definition.framework),
                status_name(job.status.status),
                local_time(job.status.submission_timestamp),
            )
            for job in ordered
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return "No training jobs."
        return format_table(self.HEADER, self.rows).rstrip("\n")

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>No training jobs.</p>"
        head = "".join(f"<th>{html.escape(name)}</th>" for name in self.HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
