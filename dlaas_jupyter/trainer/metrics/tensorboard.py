"""Scalar records from the TensorBoard event files a job writes (FfDL's tensorboard collector).

Every folder under the watched one (itself included) that holds event files is a
group, labelled with the folder's name (typically ``train`` and ``test``). Each
(group, step) becomes one record whose values are that step's scalars by tag.
Files are read with TensorBoard's own loader, which keeps its position, so each
poll reads only what was appended; the tensorboard package is imported only when
a watcher is made, so this module imports without it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.base import LogNote

# What TensorFlow 2's summary.scalar (and torch's SummaryWriter with new_style)
# writes: a tensor whose metadata names this plugin, on a tag's first value only.
SCALARS_PLUGIN = "scalars"


@dataclass
class _Step:
    """One step of one group, collecting the scalars that arrive for it."""

    label: str
    step: int
    wall_time: float
    values: dict[str, str] = field(default_factory=dict)  # tag -> number as text

    def record(self) -> pb.EMetrics:
        record = pb.EMetrics(grouplabel=self.label)
        record.meta.time = round(self.wall_time * 1000)
        stamp = datetime.fromtimestamp(self.wall_time, UTC)
        iso = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _put(record.etimes, "iteration", pb.Any.INT, str(self.step))
        _put(record.etimes, "timestamp", pb.Any.STRING, iso)
        _put(record.etimes, "wall_time", pb.Any.FLOAT, repr(self.wall_time))
        for tag, text in self.values.items():
            _put(record.values, tag, pb.Any.FLOAT, text)
        return record


def _put(
    target: MutableMapping[str, pb.Any], key: str, kind: pb.Any.DataType.ValueType, value: str
) -> None:
    item = target[key]
    item.type = kind
    item.value = value


@dataclass
class _Group:
    """One folder of event files."""

    label: str
    loaders: dict[Path, Any] = field(default_factory=dict)  # event file -> its loader
    broken: set[Path] = field(default_factory=set)  # files the loader failed on
    scalar_tags: dict[str, bool] = field(default_factory=dict)  # from each tag's metadata
    pending: _Step | None = None  # the latest step: more of its tags may still come


class TensorBoardWatcher:
    """Reads new scalar summaries from the event files under ``folder`` when polled."""

    def __init__(self, folder: Path, note: LogNote) -> None:
        try:
            import numpy  # tensorboard's own dependency
            from tensorboard.backend.event_processing import (  # type: ignore[import-untyped]
                event_file_loader,
                io_wrapper,
            )
            from tensorboard.util import tensor_util  # type: ignore[import-untyped]
        except ImportError as e:
            raise ImportError(
                "the tensorboard metrics collector needs the tensorboard package: "
                "pip install 'dlaas-jupyter[tensorboard]'"
            ) from e
        # The legacy loader yields events as written; the newer one would first
        # convert every simple_value into a tensor, only for us to convert it back.
        self._loader = event_file_loader.LegacyEventFileLoader
        self._is_event_file = io_wrapper.IsTensorFlowEventsFile
        self._make_ndarray = tensor_util.make_ndarray
        self._float32 = numpy.float32
        self._root = Path(folder)
        self._note = note
        self._groups: dict[Path, _Group] = {}

    def poll(self, final: bool = False) -> list[pb.EMetrics]:
        """Records of the steps completed since the last poll, in wall-time order.

        A step's scalars may arrive in several events, so a group's latest step is
        held back until another step appears in that group. Pass ``final=True`` once
        the job has ended: the steps still held back are then emitted too. (A step
        held back across polls comes after records of other groups already returned,
        whatever its wall time.)
        """
        done: list[_Step] = []
        for group in self._discover():
            for path, loader in list(group.loaders.items()):
                try:
                    events = list(loader.Load())
                except Exception as e:  # whatever the reader fails on must not stop collection
                    del group.loaders[path]
                    group.broken.add(path)
                    self._note("", f"dlaas: TensorBoard event file {path} no longer read: {e}")
                    continue
                for event in events:
                    self._take(group, event, done)
            if final and group.pending is not None:
                done.append(group.pending)
                group.pending = None
        done.sort(key=lambda step: step.wall_time)
        return [step.record() for step in done]

    def _discover(self) -> list[_Group]:
        """Groups in folder order, with a loader for every event file found so far."""
        for dirpath, _, filenames in os.walk(self._root):
            folder = Path(dirpath)
            for name in sorted(filenames):
                path = folder / name
                if not self._is_event_file(name):
                    continue
                group = self._groups.get(folder)
                if group is None:
                    group = self._groups[folder] = _Group(folder.name)
                if path in group.loaders or path in group.broken:
                    continue
                try:
                    group.loaders[path] = self._loader(str(path))
                except Exception as e:  # e.g. removed since listed
                    group.broken.add(path)
                    self._note("", f"dlaas: TensorBoard event file {path} cannot be read: {e}")
        return [group for _, group in sorted(self._groups.items())]

    def _take(self, group: _Group, event: Any, done: list[_Step]) -> None:
        if not event.HasField("summary"):
            return
        for value in event.summary.value:
            text = self._scalar_text(group, value)
            if text is None:
                continue
            pending = group.pending
            if pending is None or pending.step != event.step:
                if pending is not None:
                    done.append(pending)
                pending = group.pending = _Step(group.label, event.step, event.wall_time)
            pending.values[value.tag] = text

    def _scalar_text(self, group: _Group, value: Any) -> str | None:
        """The number of a scalar summary as text, or None for other summaries.

        Numpy's str gives the shortest text that reads back as the same number of
        the stored precision: 0.1 stored as float32 is "0.1", not 0.10000000149.
        """
        kind = value.WhichOneof("value")
        if kind == "simple_value":  # tf1 summaries, tensorboardX: a float32
            return str(self._float32(value.simple_value))
        if kind != "tensor":
            return None
        if value.HasField("metadata"):
            group.scalar_tags[value.tag] = value.metadata.plugin_data.plugin_name == SCALARS_PLUGIN
        if not group.scalar_tags.get(value.tag, False):
            return None
        try:
            array = self._make_ndarray(value.tensor)
        except (TypeError, ValueError):
            return None
        if array.size != 1 or array.dtype.kind not in "fiu":
            return None
        return str(array.reshape(-1)[0])
