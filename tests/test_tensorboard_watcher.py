"""TensorBoardWatcher over event files written by real TensorBoard writers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Notes, anys

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.tensorboard import TensorBoardWatcher

tensorboardX = pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")


def summary(record: pb.EMetrics) -> tuple[str, int, dict[str, float]]:
    values = {tag: float(a.value) for tag, a in record.values.items()}
    return record.grouplabel, int(record.etimes["iteration"].value), values


def poll_until(
    watcher: TensorBoardWatcher, enough: Callable[[list[pb.EMetrics]], bool], timeout: float = 30
) -> list[pb.EMetrics]:
    """Poll as the runner does until ``enough`` of what came (writers flush on their own thread)."""
    records: list[pb.EMetrics] = []
    deadline = time.monotonic() + timeout
    while not enough(records):
        assert time.monotonic() < deadline, f"only got {[summary(r) for r in records]}"
        records += watcher.poll()
        time.sleep(0.02)
    return records


def test_two_groups_merged_by_step_in_wall_time_order(tmp_path: Path) -> None:
    tb = tmp_path / "logs" / "tb"
    train = tensorboardX.SummaryWriter(str(tb / "train"))
    test = tensorboardX.SummaryWriter(str(tb / "test"))
    t0 = 1_795_000_000.0
    for step in range(3):
        train.add_scalar("loss", 1.0 / (step + 1), step, walltime=t0 + step)
        train.add_scalar("accuracy", 0.5 + step / 10, step, walltime=t0 + step + 0.1)
        test.add_scalar("accuracy", 0.25 * (step + 1), step, walltime=t0 + step + 0.5)
    train.close()
    test.close()

    notes = Notes()
    records = TensorBoardWatcher(tb, notes).poll(final=True)
    assert notes == []
    assert [summary(r) for r in records] == [
        ("train", 0, {"loss": 1.0, "accuracy": 0.5}),
        ("test", 0, {"accuracy": 0.25}),
        ("train", 1, {"loss": 0.5, "accuracy": pytest.approx(0.6)}),
        ("test", 1, {"accuracy": 0.5}),
        ("train", 2, {"loss": pytest.approx(1 / 3), "accuracy": pytest.approx(0.7)}),
        ("test", 2, {"accuracy": 0.75}),
    ]
    first = records[0]
    assert first.meta.time == round(t0 * 1000)
    assert anys(first.etimes) == {
        "iteration": ("INT", "0"),
        "timestamp": ("STRING", "2026-11-18T11:06:40.000Z"),
        "wall_time": ("FLOAT", repr(t0)),
    }
    assert {pb.Any.DataType.Name(a.type) for a in first.values.values()} == {"FLOAT"}
    assert records[3].etimes["timestamp"].value == "2026-11-18T11:06:41.500Z"
    # float32 values as the shortest text that reads back the same, not 0.6000000238418579
    assert records[2].values["accuracy"].value == "0.6"


def test_incremental_polls_while_writing_and_the_final_poll_flushes_the_last_step(
    tmp_path: Path,
) -> None:
    writer = tensorboardX.SummaryWriter(str(tmp_path / "train"), flush_secs=0.05)
    watcher = TensorBoardWatcher(tmp_path, Notes())
    assert watcher.poll() == []
    seen: list[tuple[str, int, dict[str, float]]] = []
    for step in range(4):
        writer.add_scalar("loss", float(step), step)
        writer.add_scalar("lr", 0.1, step)
        if step:  # step - 1 is complete once step shows up; step itself is held back
            seen += [summary(r) for r in poll_until(watcher, lambda got: len(got) == 1)]
        assert watcher.poll() == []
    writer.close()
    time.sleep(0.1)
    assert watcher.poll() == []  # the last step could still get more tags
    seen += [summary(r) for r in watcher.poll(final=True)]
    assert seen == [
        ("train", step, {"loss": float(step), "lr": pytest.approx(0.1)}) for step in range(4)
    ]
    assert watcher.poll(final=True) == []


def test_event_files_appearing_later_and_nested_groups(tmp_path: Path) -> None:
    watcher = TensorBoardWatcher(tmp_path / "tb", Notes())
    assert watcher.poll(final=True) == []  # the folder does not exist yet
    top = tensorboardX.SummaryWriter(str(tmp_path / "tb"))
    top.add_scalar("x", 1.0, 1, walltime=100.0)
    top.close()
    nested = tensorboardX.SummaryWriter(str(tmp_path / "tb" / "run1" / "validation"))
    nested.add_scalar("y", 2.0, 1, walltime=50.0)
    nested.close()
    assert [summary(r) for r in watcher.poll(final=True)] == [
        ("validation", 1, {"y": 2.0}),
        ("tb", 1, {"x": 1.0}),
    ]


def test_tensor_scalars_as_tensorflow_2_writes_them(tmp_path: Path) -> None:
    """tf.summary.scalar writes a float tensor, with plugin metadata on a tag's first value only."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.histogram import summary_v2 as histogram_summary
    from tensorboard.plugins.scalar import summary_v2 as scalar_summary
    from tensorboard.plugins.text import summary_v2 as text_summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path / "train"))
    for step in range(3):
        values = [
            scalar_summary.scalar_pb("epoch_loss", np.float32(1.5 - step)).value[0],
            histogram_summary.histogram_pb("weights", np.arange(5.0)).value[0],
            text_summary.text_pb("note", f"step {step}").value[0],
        ]
        for value in values:
            if step:
                value.ClearField("metadata")
        event = event_pb2.Event(
            step=step, wall_time=1000.0 + step, summary=summary_pb2.Summary(value=values)
        )
        writer.add_event(event)
    writer.close()
    records = TensorBoardWatcher(tmp_path, Notes()).poll(final=True)
    assert [summary(r) for r in records] == [
        ("train", s, {"epoch_loss": 1.5 - s}) for s in range(3)
    ]


def test_module_imports_without_tensorboard_and_says_what_to_install(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["tensorboard"] = None  # as if not installed
from dlaas_jupyter.trainer.metrics.tensorboard import TensorBoardWatcher
try:
    TensorBoardWatcher({str(tmp_path)!r}, print)
except ImportError as e:
    print(e)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'dlaas-jupyter[tensorboard]'" in result.stdout
