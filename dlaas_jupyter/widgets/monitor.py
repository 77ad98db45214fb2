"""The live monitor of one training job in a notebook cell.

Everything runs as asyncio tasks on the kernel's own event loop, so the
notebook stays usable while jobs run and several monitors work side by side
(each owns its tasks; nothing is shared). Records are gathered as they
arrive and sent to the front end by one timer, a few times a second.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from IPython.display import FileLink

from dlaas_jupyter.client import (
    TERMINAL,
    AsyncTrainerClient,
    DlaasError,
    JobNotFound,
    TrainerUnavailable,
)
from dlaas_jupyter.formatting import log_line_text
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.widgets.curves import MetricCurves
from dlaas_jupyter.widgets.logview import TAIL_LINES, LogView, read_full_log

STATUS_COLOURS = {
    pb.NOT_STARTED: "#6b7280",
    pb.QUEUED: "#6b7280",
    pb.PENDING: "#6b7280",
    pb.DEPLOY: "#6b7280",
    pb.DOWNLOADING: "#2563eb",
    pb.PROCESSING: "#2563eb",
    pb.STORING: "#0891b2",
    pb.COMPLETED: "#16a34a",
    pb.FAILED: "#dc2626",
    pb.HALTED: "#d97706",
}
DELETED_COLOUR = "#374151"
ERROR_COLOUR = "#b91c1c"


def _ms(stamp: str) -> int | None:
    """A TrainingStatus timestamp (decimal milliseconds), None if unset."""
    return int(stamp) if stamp.isdecimal() else None


def duration(seconds: float) -> str:
    """A short human duration: 0.4 s, 42 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def timeline(status: pb.TrainingStatus, now_ms: int) -> list[tuple[str, str, str]]:
    """The job's phases as (label, duration, state), state being done, current,
    pending or skipped; the last entry is the outcome once the job has ended.

    Queued runs from submission to the start of processing (so it includes
    PENDING and DOWNLOADING); times come from the Trainer's timestamps.
    """
    submitted = _ms(status.submission_timestamp)
    starts = [submitted, _ms(status.process_start_timestamp), _ms(status.store_start_timestamp)]
    finished = _ms(status.completion_timestamp)
    ended = status.status in TERMINAL
    phases = []
    for i, label in enumerate(("Queued", "Processing", "Storing")):
        start = starts[i]
        if start is None:
            phases.append((label, "", "skipped" if ended else "pending"))
            continue
        later = [s for s in starts[i + 1 :] if s is not None]
        end = later[0] if later else finished
        state = "done" if end is not None or ended else "current"
        phases.append((label, duration(((end or now_ms) - start) / 1000), state))
    if ended:
        total = (finished or now_ms) - submitted if submitted is not None else None
        outcome = pb.Status.Name(status.status)
        phases.append((outcome, duration(total / 1000) if total is not None else "", "outcome"))
    return phases


def _badge(text: str, colour: str) -> str:
    return (
        f'<span style="background:{colour};color:white;border-radius:4px;'
        f'padding:2px 8px;font-weight:600">{html.escape(text)}</span>'
    )


def _timeline_html(status: pb.TrainingStatus, now_ms: int) -> str:
    colour = STATUS_COLOURS.get(status.status, "#6b7280")
    styles = {
        "done": "color:#374151",
        "current": f"color:{colour};font-weight:600",
        "pending": "color:#9ca3af",
        "skipped": "color:#9ca3af;text-decoration:line-through",
        "outcome": f"color:{colour};font-weight:600",
    }
    parts = [
        f'<span style="{styles[state]}">{html.escape(label)}'
        + (f" {html.escape(took)}" if took else "")
        + "</span>"
        for label, took, state in timeline(status, now_ms)
    ]
    return " &rarr; ".join(parts)


def _header_html(job: pb.Job) -> str:
    definition, res = job.model_definition, job.training.resources
    framework = " ".join(p for p in (definition.framework.name, definition.framework.version) if p)
    resources = []
    if res.learners > 1:
        resources.append(f"{res.learners} learners")
    if res.cpus:
        resources.append(f"{res.cpus:g} CPU")
    if res.gpus:
        resources.append(f"{res.gpus:g} GPU" + (f" ({res.gpu_type})" if res.gpu_type else ""))
    if res.memory:
        resources.append(f"{res.memory:g} {pb.SizeUnit.Name(res.memory_unit)}")
    details = " · ".join(html.escape(p) for p in (framework, ", ".join(resources)) if p)
    return (
        f"<b>{html.escape(definition.name or 'training job')}</b> "
        f"<code>{html.escape(job.training_id)}</code>" + (f" · {details}" if details else "")
    )


def _link(path: Path) -> str:
    """A link to a saved file. Links in a notebook resolve against the
    notebook's folder, which is the kernel's working directory."""
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows): no relative path exists
        shown = str(path)
    return FileLink(shown, result_html_prefix="Saved ")._repr_html_()


def _describe(err: BaseException) -> str:
    if isinstance(err, TrainerUnavailable):
        return f"Trainer unavailable: {err}"
    if isinstance(err, JobNotFound):
        return f"Job not found (deleted elsewhere?): {err}"
    if isinstance(err, DlaasError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class JobMonitor(widgets.VBox):
    """Status, timeline, live log, metric curves and Halt/Download/Delete for one job.

    Nothing happens until :meth:`start`, which must be called on a running
    event loop (a notebook cell is). The monitor stops by itself once the job
    has ended and every log line and metric record has been shown, or on
    :meth:`close`. Errors stop it with a message and a Retry button; they are
    never raised into the kernel.
    """

    # ipywidgets calls close() from __del__, also on an instance whose __init__ raised.
    _built = False

    def __init__(
        self,
        training_id: str,
        client: AsyncTrainerClient,
        *,
        download_dir: Path,
        refresh: float = 0.25,
        tail: int = TAIL_LINES,
    ) -> None:
        if not training_id:
            raise ValueError("training_id is empty: pass the id the Trainer gave the job")
        if not refresh > 0:
            raise ValueError(f"refresh must be a positive number of seconds, not {refresh!r}")
        self.training_id = training_id
        self.download_dir = Path(download_dir)
        self.refresh = refresh
        self._client = client
        self._status: pb.TrainingStatus | None = None
        self._learners = 0
        self._pending_metrics: list[pb.EMetrics] = []
        self._run_task: asyncio.Task[None] | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._confirmed: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._error: str | None = None
        self._deleting = False
        self._deleted = False

        self.header = widgets.HTML(f"<code>{html.escape(training_id)}</code>")
        self.badge = widgets.HTML(_badge("…", STATUS_COLOURS[pb.NOT_STARTED]))
        self.elapsed = widgets.HTML()
        self.timeline = widgets.HTML()
        self.halt_button = widgets.Button(description="Halt", icon="stop", disabled=True)
        self.download_button = widgets.Button(
            description="Download model", icon="download", disabled=True
        )
        self.delete_button = widgets.Button(description="Delete", icon="trash", disabled=True)
        self.confirm_label = widgets.HTML()
        self.confirm_yes = widgets.Button(description="Yes", button_style="danger")
        self.confirm_no = widgets.Button(description="No")
        self.message = widgets.HTML()
        self.retry_button = widgets.Button(description="Retry", icon="refresh")
        for button in (self.confirm_yes, self.confirm_no):
            button.layout.width = "5em"
        self.halt_button.on_click(lambda _: self._ask("Really halt?", self._halt))
        self.delete_button.on_click(lambda _: self._ask("Really delete?", self._delete))
        self.download_button.on_click(lambda _: self._spawn(self._act(self._download)))
        self.confirm_yes.on_click(self._on_yes)
        self.confirm_no.on_click(self._on_no)
        self.retry_button.on_click(lambda _: self.start())
        self._confirm_row = widgets.HBox([self.confirm_label, self.confirm_yes, self.confirm_no])
        self._confirm_row.layout.display = "none"
        self.retry_button.layout.display = "none"

        self._tail = tail
        self.logview = LogView(tail=tail, load_full=partial(read_full_log, client, training_id))
        self.curves = MetricCurves()
        self._rows = [
            widgets.HBox([self.header, self.badge, self.elapsed],
                         layout=widgets.Layout(justify_content="space-between")),
            self.timeline,
            widgets.HBox([self.halt_button, self.download_button, self.delete_button,
                          self._confirm_row]),
            widgets.HBox([self.message, self.retry_button]),
        ]
        super().__init__(children=[*self._rows, self.logview, self.curves])
        self._built = True

    # -- lifecycle --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._run_task is not None and not self._run_task.done()

    def start(self) -> None:
        """Follow the job from the start (again, after an error) on the running loop."""
        if self.running or self._deleted:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "JobMonitor.start() needs a running asyncio event loop, as in a Jupyter "
                "kernel; elsewhere use dlaas_jupyter.widgets.follow_as_text()"
            ) from None
        self._error = None
        self.message.value = ""
        self.retry_button.layout.display = "none"
        # A follow restarts at the first record: show each record once.
        self._pending_metrics.clear()
        self.logview.clear()
        self.curves.clear()
        self._run_task = loop.create_task(self._run())

    async def wait(self) -> None:
        """Until the monitor stops: the job ended and all is shown, an error, or close()."""
        while self._run_task is not None and not self._run_task.done():
            await asyncio.wait({self._run_task})

    def close(self) -> None:
        """Stop every task of this monitor and close its widgets."""
        if self._built:
            for task in (self._run_task, *self._actions):
                if task is not None:
                    task.cancel()
            self.logview.close()
            self.curves.close()
            for widget in (self.header, self.badge, self.elapsed, self.timeline,
                           self.halt_button, self.download_button, self.delete_button,
                           self.confirm_label, self.confirm_yes, self.confirm_no, self.message,
                           self.retry_button, self._confirm_row, *self._rows):
                widget.close()
        super().close()

    def snapshot(self) -> dict[str, Any]:
        """What the monitor shows, as plain data."""
        return {
            "training_id": self.training_id,
            "status": pb.Status.Name(self._status.status) if self._status else None,
            "deleted": self._deleted,
            "running": self.running,
            "error": self._error,
            "log_tail": self.logview.lines,
            "metrics": self.curves.counts(),
        }

    async def _run(self) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            job = await self._client.get(self.training_id)
            self.header.value = _header_html(job)
            self._learners = job.training.resources.learners
            self._show_status(job.status)
            self.download_button.disabled = self.delete_button.disabled = False
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poll_status(job.status.status))
                group.create_task(self._follow_logs())
                group.create_task(self._follow_metrics())
        except Exception as err:  # shown in the widget; the kernel never sees it
            while isinstance(err, ExceptionGroup):
                err = err.exceptions[0]
            if not (self._deleted or (self._deleting and isinstance(err, JobNotFound))):
                self._fail(err)
        finally:
            ticker.cancel()
            self._flush()

    async def _poll_status(self, status: int) -> None:
        while status not in TERMINAL:
            await asyncio.sleep(self.refresh)
            if await self._client.status(self.training_id) != status:
                job = await self._client.get(self.training_id)  # for the timestamps
                self._show_status(job.status)
                status = job.status.status

    async def _follow_logs(self) -> None:
        """The log's tail, one page per refresh rather than every line.

        The view shows only the last lines, so a job printing thousands of
        lines a second costs the kernel one small call per tick (streaming
        every line cost half a core at 10,000 lines/s). Paging by time, which
        is unique within a job, works on any FfDL Trainer.
        """
        tid, tail = self.training_id, self._tail
        last_time: int | None = None
        while True:
            finished = self._status is not None and self._status.status in TERMINAL
            if last_time is None:
                page = await self._client.logs(tid, pos=-1, pagesize=tail)
            else:
                page = await self._client.logs(tid, since=str(last_time + 1), pagesize=tail + 1)
                if len(page) > tail:  # more than a view's worth: skip to the newest
                    page = await self._client.logs(tid, pos=-1, pagesize=tail)
            if page:
                self.logview.append(log_line_text(r, learners=self._learners) for r in page)
                last_time = page[-1].meta.time
            elif finished:
                return
            await asyncio.sleep(self.refresh)

    async def _follow_metrics(self) -> None:
        async with aclosing(self._client.follow_emetrics(self.training_id)) as records:
            async for record in records:
                self._pending_metrics.append(record)

    async def _tick(self) -> None:
        while True:
            self._flush()
            await asyncio.sleep(self.refresh)

    def _flush(self) -> None:
        """Send what arrived since the last flush: at most a few messages per widget."""
        if self._pending_metrics:
            self.curves.add(self._pending_metrics)
            self._pending_metrics = []
        self.curves.flush()
        self.logview.flush()
        if self._status is not None and not self._deleted:
            self._show_times(self._status)

    # -- what is shown ----------------------------------------------------------

    def _show_status(self, status: pb.TrainingStatus) -> None:
        self._status = status
        name = pb.Status.Name(status.status)
        if status.status == pb.FAILED and (status.error_code or status.status_message):
            name += f" {status.error_code}".rstrip()
        self.badge.value = _badge(name, STATUS_COLOURS.get(status.status, "#6b7280"))
        self.badge.tooltip = status.status_message or None
        self.halt_button.disabled = status.status in TERMINAL
        self._show_times(status)

    def _show_times(self, status: pb.TrainingStatus) -> None:
        now = time.time_ns() // 1_000_000
        self.timeline.value = _timeline_html(status, now)
        submitted = _ms(status.submission_timestamp)
        if submitted is not None:
            finished = _ms(status.completion_timestamp) if status.status in TERMINAL else None
            self.elapsed.value = f"elapsed {duration(((finished or now) - submitted) / 1000)}"

    def _fail(self, err: BaseException) -> None:
        self._error = _describe(err)
        self.message.value = (
            f'<span style="color:{ERROR_COLOUR}">{html.escape(self._error)}</span>'
        )
        self.retry_button.layout.display = None

    def _note(self, text_html: str) -> None:
        self.message.value = text_html

    # -- buttons ----------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Button clicks are handled on the kernel's event loop, which runs the task.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    def _ask(self, question: str, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._confirmed = action
        self.confirm_label.value = f"<b>{html.escape(question)}</b>"
        self._confirm_row.layout.display = None

    def _on_yes(self, _: widgets.Button) -> None:
        action, self._confirmed = self._confirmed, None
        self._confirm_row.layout.display = "none"
        if action is not None:
            self._spawn(self._act(action))

    def _on_no(self, _: widgets.Button) -> None:
        self._confirmed = None
        self._confirm_row.layout.display = "none"

    async def _act(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await action()
        except Exception as err:  # shown; a failed click must not break the kernel
            self._note(
                f'<span style="color:{ERROR_COLOUR}">{html.escape(_describe(err))}</span>'
            )

    async def _halt(self) -> None:
        self.halt_button.disabled = True
        self._note("Halting…")
        try:
            await self._client.halt(self.training_id)
        except Exception:
            self.halt_button.disabled = self._status is not None and self._status.status in TERMINAL
            raise
        self._note("Halt requested: the job stops shortly.")

    async def _download(self) -> None:
        self.download_button.disabled = True
        self._note("Downloading the trained model…")
        try:
            self.download_dir.mkdir(parents=True, exist_ok=True)
            path = await self._client.download_trained_model(self.training_id, self.download_dir)
        finally:
            self.download_button.disabled = self._deleted
        self._note(_link(path))

    async def _delete(self) -> None:
        self._deleting = True
        self._note("Deleting…")
        try:
            await self._client.delete(self.training_id)
        finally:
            self._deleting = False
        self._deleted = True
        if self._run_task is not None:
            self._run_task.cancel()
        for button in (self.halt_button, self.download_button, self.delete_button):
            button.disabled = True
        self._error = None
        self.retry_button.layout.display = "none"
        self.badge.value = _badge("DELETED", DELETED_COLOUR)
        self._note(f"Job {html.escape(self.training_id)} deleted.")
