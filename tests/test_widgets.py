"""The job monitor's widget models driven by real jobs on a real embedded Trainer.

No browser: the widgets are plain Python objects here (their comms have no
front end), so these tests check what the models hold and how often they
change, which is what a front end would be sent.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import re
import shlex
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CPUS, RunningTrainer, job_request, start_trainer, stop_trainer

from dlaas_jupyter.client import AsyncTrainerClient, JobNotFound, TrainerConfig
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.widgets import JobMonitor, LogView, MetricCurves, follow_as_text
from dlaas_jupyter.widgets.curves import TIME_AXIS, decimate
from dlaas_jupyter.widgets.logview import MAX_LINE_CHARS, PAGE_LINES
from dlaas_jupyter.widgets.monitor import duration, timeline

WAIT = 60.0


async def submit(client: AsyncTrainerClient, command: str, files: dict | None = None) -> str:
    return await client.create(job_request(command, files, cpus=SMALL_CPUS))


def gated(gate: Path, before: str, after: str) -> str:
    """A command printing ``before``, waiting until ``gate`` exists, then printing ``after``."""
    path = shlex.quote(str(gate))
    return f"echo {before}; while [ ! -e {path} ]; do sleep 0.05; done; echo {after}"


async def eventually(
    predicate: Callable[[], object], what: str, timeout: float = WAIT
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def finished(monitor: JobMonitor) -> dict:
    await asyncio.wait_for(monitor.wait(), WAIT)
    return monitor.snapshot()


def shown(widget_html: str) -> list[str]:
    """The lines inside a log view's <pre>."""
    text = re.search(r"<pre[^>]*>(.*)</pre>", widget_html, re.S)
    assert text is not None, widget_html
    return text.group(1).split("\n") if text.group(1) else []


def visible(widget) -> bool:
    return widget.layout.display != "none"


@pytest.fixture
async def watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Callable[..., JobMonitor]]:
    """Start monitors; afterwards close them and check nothing escaped: no
    unhandled task error on the loop, no failed widget callback logged."""
    loop = asyncio.get_running_loop()
    escaped: list[dict] = []
    loop.set_exception_handler(lambda _, context: escaped.append(context))
    caplog.set_level(logging.WARNING)
    made: list[JobMonitor] = []

    def make(training_id: str, client: AsyncTrainerClient, **kwargs) -> JobMonitor:
        kwargs.setdefault("download_dir", tmp_path / "downloads")
        monitor = JobMonitor(training_id, client, **kwargs)
        made.append(monitor)
        monitor.start()
        return monitor

    yield make
    for monitor in made:
        monitor.close()
        await monitor.wait()
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert escaped == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


# -- status ------------------------------------------------------------------------


async def test_badge_follows_each_of_two_jobs_to_completed(aclient, watch, tmp_path):
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    ids = [
        await submit(aclient, gated(gates[0], "start-a", "done-a")),
        await submit(aclient, gated(gates[1], "start-b", "done-b")),
    ]
    first, second = watch(ids[0], aclient), watch(ids[1], aclient)
    badges: list[str] = []
    first.badge.observe(lambda change: badges.append(change["new"]), names="value")

    for monitor, line in ((first, "start-a"), (second, "start-b")):
        await eventually(
            lambda m=monitor, text=line: m.snapshot()["status"] == "PROCESSING"
            and m.snapshot()["log_tail"] == [text],
            f"{line} while processing",
        )
    assert "PROCESSING" in first.badge.value
    assert ids[0] in first.header.value and "python 3" in first.header.value
    assert "Queued" in first.timeline.value and "Processing" in first.timeline.value
    assert first.elapsed.value.startswith("elapsed ")
    assert not first.halt_button.disabled

    gates[0].touch()
    snap = await finished(first)
    assert snap["status"] == "COMPLETED" and snap["error"] is None
    assert snap["log_tail"] == ["start-a", "done-a"]
    assert shown(first.logview.view.value) == ["start-a", "done-a"]
    assert "COMPLETED" in first.badge.value and "COMPLETED" in first.timeline.value
    assert first.halt_button.disabled
    statuses = [s for b in badges for s in re.findall(r">(\w+)</span>", b)]
    assert statuses.index("PROCESSING") < statuses.index("COMPLETED")

    # The other monitor is untouched by the first one's job ending.
    assert second.running and second.snapshot()["log_tail"] == ["start-b"]
    gates[1].touch()
    snap = await finished(second)
    assert snap["status"] == "COMPLETED" and snap["log_tail"] == ["start-b", "done-b"]


# -- the log -----------------------------------------------------------------------


async def test_log_tail_is_bounded_and_sent_in_batches(aclient, watch):
    lines = 5000
    tid = await submit(aclient, f"python -c 'for i in range({lines}): print(i)'")
    monitor = watch(tid, aclient)
    updates: list[str] = []
    monitor.logview.view.observe(lambda change: updates.append(change["new"]), names="value")

    snap = await finished(monitor)
    assert snap["status"] == "COMPLETED", snap
    expected = [str(i) for i in range(lines - 200, lines)]
    assert snap["log_tail"] == expected
    assert shown(monitor.logview.view.value) == expected
    assert 1 <= len(updates) < lines // 50, len(updates)

    # The full log, on demand, a page at a time.
    log = monitor.logview
    assert visible(log.full_button)
    log.full_button.click()
    await eventually(lambda: f"of {lines}" in log.full_status.value, "the full log")
    assert log.pages == -(-lines // PAGE_LINES)
    assert shown(log.full_view.value) == [str(i) for i in range(PAGE_LINES)]
    assert log.previous_page.disabled and not log.next_page.disabled
    log.next_page.click()
    assert shown(log.full_view.value) == [str(i) for i in range(PAGE_LINES, 2 * PAGE_LINES)]
    assert f"lines {PAGE_LINES + 1}–{2 * PAGE_LINES} of {lines}" in log.full_status.value
    log.full_button.click()  # hides it again
    assert not visible(log._full_box) and log.full_button.description == "Show full log"


async def test_follow_off_holds_the_view_still(aclient, watch, tmp_path):
    gate = tmp_path / "gate"
    tid = await submit(aclient, gated(gate, "first", "second"))
    monitor = watch(tid, aclient)
    await eventually(lambda: monitor.snapshot()["log_tail"] == ["first"], "the first line")
    await eventually(lambda: shown(monitor.logview.view.value) == ["first"], "it shown")
    monitor.logview.follow.value = False
    gate.touch()
    await finished(monitor)
    assert monitor.snapshot()["log_tail"] == ["first", "second"]
    assert shown(monitor.logview.view.value) == ["first"]
    monitor.logview.follow.value = True
    assert shown(monitor.logview.view.value) == ["first", "second"]


def test_log_view_escapes_cuts_and_bounds_lines():
    view = LogView(tail=3)
    updates: list[str] = []
    view.view.observe(lambda change: updates.append(change["new"]), names="value")
    view.append(["<b>one</b>", "x" * 10_000])
    view.append([])
    view.flush()
    view.flush()
    assert len(updates) == 1
    assert shown(view.view.value) == ["&lt;b&gt;one&lt;/b&gt;", "x" * MAX_LINE_CHARS + " [cut]"]
    assert view.lines[1] == "x" * 10_000  # cut only where shown
    view.append(["a", "b", "c", "d"])
    view.flush()
    assert view.lines == shown(view.view.value) == ["b", "c", "d"]
    assert not visible(view.full_button)  # nothing to load the full log from
    with pytest.raises(ValueError, match="tail must be at least 1"):
        LogView(tail=0)


# -- metrics -----------------------------------------------------------------------

EMITTER = """\
from dlaas_jupyter import emit
for i in range(50):
    emit("train", iteration=i, loss=1.0 / (i + 1))
    if i % 10 == 0:
        emit("test", iteration=i, loss=2.0 / (i + 1), accuracy=i / 50)
"""


async def test_emitted_metrics_reach_the_marks(aclient, watch):
    tid = await submit(aclient, "python main.py", {"main.py": EMITTER})
    monitor = watch(tid, aclient)
    snap = await finished(monitor)
    assert snap["status"] == "COMPLETED", snap
    assert snap["metrics"] == {"train": 50, "test": 5}

    curves = monitor.curves
    assert visible(curves)
    assert list(curves.selector.options) == ["loss", "accuracy"]
    assert curves.selector.value == "loss"
    marks = {mark.labels[0]: mark for mark in curves.figure.marks}
    assert set(marks) == {"train", "test"}
    assert marks["train"].colors != marks["test"].colors
    iterations = np.arange(50)
    np.testing.assert_array_equal(marks["train"].x, iterations)
    np.testing.assert_allclose(marks["train"].y, 1.0 / (iterations + 1), rtol=1e-6)
    np.testing.assert_array_equal(marks["test"].x, [0, 10, 20, 30, 40])
    np.testing.assert_allclose(marks["test"].y, 2.0 / (np.arange(0, 50, 10) + 1), rtol=1e-6)
    assert curves.figure.axes[0].label == "iteration"

    curves.selector.value = "accuracy"
    assert [mark.labels for mark in curves.figure.marks] == [["test"]]
    np.testing.assert_allclose(curves.figure.marks[0].y, np.arange(0, 50, 10) / 50, rtol=1e-6)
    assert curves.figure.axes[1].label == "accuracy"


def metric(group: str, values: dict[str, float], *, time_ms: int = 0, **etimes: int) -> pb.EMetrics:
    record = pb.EMetrics(grouplabel=group)
    record.meta.time = time_ms
    for key, value in etimes.items():
        record.etimes[key].CopyFrom(pb.Any(type=pb.Any.INT, value=str(value)))
    for key, value in values.items():
        record.values[key].CopyFrom(pb.Any(type=pb.Any.FLOAT, value=repr(float(value))))
    return record


def test_100000_points_are_decimated_for_display_and_kept_whole():
    curves = MetricCurves()
    n, spike, dip = 100_000, 54_321, 77_777
    ys = np.sin(np.arange(n) / 1000.0)
    ys[spike], ys[dip] = 1e6, -1e6
    redraws = []
    for start in range(0, n, 10_000):  # arriving live, drawn after each batch
        part = range(start, start + 10_000)
        batch = [metric("train", {"loss": ys[i]}, iteration=i) for i in part]
        batch += [metric("test", {"loss": 0.5}, iteration=i) for i in range(start, start + 1_000)]
        curves.add(batch)
        curves.flush()
        redraws.append(len(curves.figure.marks[0].x))

    assert all(points <= curves.display_points for points in redraws)
    for mark in curves.figure.marks:
        assert len(mark.x) == len(mark.y) <= curves.display_points
    train = next(m for m in curves.figure.marks if m.labels == ["train"])
    assert train.y.max() == 1e6 and train.y.min() == -1e6  # spikes survive decimation
    assert train.x[-1] == n - 1 and np.all(np.diff(train.x) > 0)
    xs, kept = curves.data("loss", "train")
    np.testing.assert_array_equal(xs, np.arange(n))
    np.testing.assert_array_equal(kept, ys)
    assert len(curves.data("loss", "test")[0]) == 10 * 1000
    assert curves.counts() == {"train": n, "test": 10 * 1000}


def test_decimate_passes_short_series_through_and_bounds_long_ones():
    xs = np.arange(10.0)
    assert decimate(xs, xs * 2, 10)[1].tolist() == (xs * 2).tolist()
    for n in (11, 2001, 4000, 4001, 99_999):
        x = np.arange(float(n))
        dx, dy = decimate(x, -x, 2000)
        assert len(dx) <= 2000 and dx[0] == 0 and dx[-1] == n - 1
    with pytest.raises(ValueError, match="at least 3"):
        decimate(np.arange(10.0), np.arange(10.0), 2)


def test_records_without_an_iteration_are_placed_by_time_and_text_is_skipped():
    curves = MetricCurves()
    stamps = ((1000, 3.0), (1500, 2.0), (4000, 1.0))
    records = [metric("train", {"loss": v}, time_ms=t) for t, v in stamps]
    flag = metric("train", {}, time_ms=5000)
    flag.values["best"].CopyFrom(pb.Any(type=pb.Any.JSONSTRING, value="true"))
    curves.add([*records, flag])
    curves.flush()
    assert curves.value_keys == ["loss"] and curves.counts() == {"train": 4}
    np.testing.assert_allclose(curves.figure.marks[0].x, [0.0, 0.5, 3.0])
    assert curves.figure.axes[0].label == TIME_AXIS


def test_timeline_phases_and_durations():
    running = pb.TrainingStatus(
        status=pb.PROCESSING, submission_timestamp="1000", process_start_timestamp="3000"
    )
    assert timeline(running, now_ms=8000) == [
        ("Queued", "2.0 s", "done"),
        ("Processing", "5.0 s", "current"),
        ("Storing", "", "pending"),
    ]
    failed_in_queue = pb.TrainingStatus(
        status=pb.FAILED, submission_timestamp="1000", completion_timestamp="2500"
    )
    assert timeline(failed_in_queue, now_ms=9000) == [
        ("Queued", "1.5 s", "done"),
        ("Processing", "", "skipped"),
        ("Storing", "", "skipped"),
        ("FAILED", "1.5 s", "outcome"),
    ]
    assert [duration(s) for s in (0.42, 42.9, 185, 7625, -1)] == [
        "0.4 s", "42 s", "3 min 05 s", "2 h 07 min", "0.0 s"
    ]


# -- buttons -----------------------------------------------------------------------

TICKER = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"


async def test_halt_asks_first_then_halts_the_running_job(aclient, watch):
    tid = await submit(aclient, "python ticker.py", {"ticker.py": TICKER})
    monitor = watch(tid, aclient)
    await eventually(
        lambda: monitor.snapshot()["status"] == "PROCESSING" and monitor.snapshot()["log_tail"],
        "the job to tick",
    )
    monitor.halt_button.click()
    assert visible(monitor._confirm_row) and "Really halt?" in monitor.confirm_label.value
    monitor.confirm_no.click()
    assert not visible(monitor._confirm_row)
    await asyncio.sleep(0.5)
    assert await aclient.status(tid) == pb.PROCESSING

    monitor.halt_button.click()
    monitor.confirm_yes.click()
    snap = await finished(monitor)
    assert snap["status"] == "HALTED" and snap["error"] is None
    assert await aclient.status(tid) == pb.HALTED
    assert "HALTED" in monitor.badge.value and monitor.halt_button.disabled


async def test_delete_asks_first_then_deletes(aclient, watch):
    tid = await submit(aclient, "echo bye")
    monitor = watch(tid, aclient)
    await finished(monitor)
    monitor.delete_button.click()
    assert "Really delete?" in monitor.confirm_label.value
    monitor.confirm_yes.click()
    await eventually(lambda: monitor.snapshot()["deleted"], "the deletion")
    with pytest.raises(JobNotFound):
        await aclient.get(tid)
    assert "DELETED" in monitor.badge.value and "deleted" in monitor.message.value
    assert monitor.delete_button.disabled and monitor.download_button.disabled
    assert monitor.snapshot()["error"] is None


async def test_download_saves_the_trained_model_and_links_it(aclient, watch, tmp_path, monkeypatch):
    tid = await submit(aclient, 'echo weights > "$RESULT_DIR/model.txt"; echo saved')
    monkeypatch.chdir(tmp_path)  # the notebook's folder
    monitor = watch(tid, aclient, download_dir=tmp_path / "downloads")
    await finished(monitor)
    monitor.download_button.click()
    await eventually(lambda: "href" in monitor.message.value, "the download link")
    saved = tmp_path / "downloads" / f"{tid}-trainedmodel.zip"
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        assert any(name.endswith("model.txt") for name in archive.namelist())
    href = re.search(r"href='([^']+)'", monitor.message.value).group(1)
    assert href == f"downloads/{tid}-trainedmodel.zip"
    assert not monitor.download_button.disabled


# -- errors ------------------------------------------------------------------------


async def test_a_stopped_trainer_is_shown_with_a_retry(tmp_path, user, watch):
    private: RunningTrainer = start_trainer(tmp_path / "private")
    try:
        config = TrainerConfig.resolve(url=private.url, token=private.token, user=user)
        client = AsyncTrainerClient(config, timeout=5.0)
        tid = await submit(client, "echo hello")
    finally:
        stop_trainer(private)
    try:
        monitor = watch(tid, client)
        snap = await finished(monitor)
        assert snap["error"] is not None and snap["error"].startswith("Trainer unavailable")
        assert "unreachable" in monitor.message.value
        assert visible(monitor.retry_button)
        monitor.retry_button.click()
        assert monitor.running and not visible(monitor.retry_button)
        snap = await finished(monitor)
        assert snap["error"].startswith("Trainer unavailable") and visible(monitor.retry_button)
    finally:
        await client.close()


async def test_a_job_deleted_elsewhere_is_shown_with_a_retry(aclient, watch, tmp_path):
    tid = await submit(aclient, gated(tmp_path / "never", "waiting", "never"))
    monitor = watch(tid, aclient)
    await eventually(lambda: monitor.snapshot()["log_tail"] == ["waiting"], "the job to run")
    await aclient.delete(tid)
    snap = await finished(monitor)
    assert "not found" in snap["error"], snap
    assert visible(monitor.retry_button)


def test_monitor_refuses_bad_arguments(tmp_path):
    client = AsyncTrainerClient(TrainerConfig.resolve(url="grpc://127.0.0.1:1", user="u"))
    with pytest.raises(ValueError, match="refresh must be a positive"):
        JobMonitor("training-x", client, download_dir=tmp_path, refresh=0)
    with pytest.raises(ValueError, match="training_id is empty"):
        JobMonitor("", client, download_dir=tmp_path)
    with pytest.raises(RuntimeError, match="needs a running asyncio event loop"):
        JobMonitor("training-x", client, download_dir=tmp_path).start()


# -- without widgets ---------------------------------------------------------------


def test_follow_as_text_streams_the_log_then_the_status(client):
    tid = client.create(job_request("echo one; echo two; exit 3", cpus=SMALL_CPUS))
    out = io.StringIO()
    assert follow_as_text(tid, client, out) == "FAILED"
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["one", "two"]
    assert lines[2].startswith(f"{tid}: FAILED (C201") and len(lines) == 3
    assert client.get(tid).status.status == pb.FAILED


def test_widget_state_reaches_the_front_end() -> None:
    """A widget attribute named like an ipywidgets internal (``keys``) once
    emptied the state sent to the browser; nothing could be drawn."""
    state = MetricCurves().get_state()
    assert state["_model_module"] == "@jupyter-widgets/controls"
    assert state["children"]
