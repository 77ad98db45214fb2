"""Live metric curves: one bqplot figure for the chosen value key, one line per
record group (train, test, ...).

Records are stored whole; the figure gets a min/max-decimated copy of each
series, redrawn in place (never a new figure) at most once per :meth:`flush`,
so a job emitting 100,000 points keeps the notebook and its comms responsive.
"""

from __future__ import annotations

from collections.abc import Iterable

import bqplot
import ipywidgets as widgets
import numpy as np
from bqplot.colorschemes import CATEGORY10

from dlaas_jupyter.proto import trainer_pb2 as pb

# The record's etimes tried for the x axis, in this order; without any of them
# x is the record's time in seconds since the first record.
X_ETIMES = ("iteration", "epoch", "step", "tick")
TIME_AXIS = "time (s)"
DISPLAY_POINTS = 2000


def decimate(xs: np.ndarray, ys: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``cap`` points of a series, keeping each bucket's minimum and
    maximum (so spikes stay visible) and the last point, in their order."""
    n = len(ys)
    if n <= cap:
        return xs, ys
    if cap < 3:
        raise ValueError(f"cannot decimate to {cap} points: keep at least 3")
    buckets = (cap - 1) // 2  # two points each, and the last point on its own
    body = n - 1
    size = -(-body // buckets)
    full = body // size
    starts = np.arange(full) * size
    shaped = ys[: full * size].reshape(full, size)
    picks = [starts + shaped.argmin(axis=1), starts + shaped.argmax(axis=1)]
    if full * size < body:
        tail = ys[full * size : body]
        picks.append(np.array([full * size + tail.argmin(), full * size + tail.argmax()]))
    picks.append(np.array([body]))
    index = np.unique(np.concatenate(picks))  # sorted, so the line keeps its order
    return xs[index], ys[index]


class _Series:
    """One (value key, group) curve in a buffer that doubles as it fills."""

    def __init__(self, x_axis: str) -> None:
        self.x_axis = x_axis
        self._buffer = np.empty((2, 256))
        self.size = 0

    def extend(self, points: list[tuple[float, float]]) -> None:
        needed = self.size + len(points)
        if needed > self._buffer.shape[1]:
            grown = np.empty((2, max(needed, 2 * self._buffer.shape[1])))
            grown[:, : self.size] = self._buffer[:, : self.size]
            self._buffer = grown
        self._buffer[:, self.size : needed] = np.asarray(points, dtype=float).T
        self.size = needed

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the stored points (no copy)."""
        return self._buffer[0, : self.size], self._buffer[1, : self.size]


class MetricCurves(widgets.VBox):
    """A value-key selector over one figure with a line per record group.

    :meth:`add` only stores records; :meth:`flush` draws what changed, so the
    caller decides how often the front end is updated (the job monitor: a
    few times a second).
    """

    # ipywidgets calls close() from __del__, also on an instance whose __init__ raised.
    _built = False

    def __init__(self, *, display_points: int = DISPLAY_POINTS) -> None:
        if display_points < 3:
            raise ValueError(f"display_points must be at least 3, not {display_points}")
        self.display_points = display_points
        self._series: dict[str, dict[str, _Series]] = {}  # key -> group -> series
        self._counts: dict[str, int] = {}  # records per group, plotted or not
        self._colours: dict[str, str] = {}
        self._first_time: int | None = None
        self._dirty: set[tuple[str, str]] = set()  # (key, group) with points not yet drawn
        self._keys_changed = False
        self._quiet = False

        self.selector = widgets.Dropdown(description="Metric", options=[], disabled=True)
        self.selector.observe(self._on_select, names="value")
        self._x_scale = bqplot.LinearScale()
        self._y_scale = bqplot.LinearScale()
        self._x_axis = bqplot.Axis(scale=self._x_scale, side="bottom", label="")
        self._y_axis = bqplot.Axis(scale=self._y_scale, side="left", label="")
        self._marks: dict[str, bqplot.Lines] = {}
        self.figure = bqplot.Figure(
            marks=[],
            axes=[self._x_axis, self._y_axis],
            legend_location="top-right",
            layout=widgets.Layout(width="100%", height="320px"),
            fig_margin={"top": 20, "bottom": 45, "left": 60, "right": 20},
        )
        super().__init__(children=[self.selector, self.figure])
        self._built = True
        self.layout.display = "none"  # shown with the first plottable record

    # -- data -----------------------------------------------------------------

    def add(self, records: Iterable[pb.EMetrics]) -> None:
        """Store records; values whose text is not a number are counted, not plotted."""
        batches: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for record in records:
            group = record.grouplabel
            self._counts[group] = self._counts.get(group, 0) + 1
            if self._first_time is None:
                self._first_time = record.meta.time
            axis, x = self._x_of(record)
            for key, value in record.values.items():
                y = _number(value)
                if y is None:
                    continue
                batch = batches.get((key, group))
                if batch is None:
                    batch = batches[(key, group)] = []
                    groups = self._series.setdefault(key, {})
                    if not groups:
                        self._keys_changed = True
                    if group not in groups:
                        groups[group] = _Series(axis)
                        self._colours.setdefault(
                            group, CATEGORY10[len(self._colours) % len(CATEGORY10)]
                        )
                batch.append((x, y))
        for (key, group), points in batches.items():
            self._series[key][group].extend(points)
            self._dirty.add((key, group))

    def _x_of(self, record: pb.EMetrics) -> tuple[str, float]:
        for name in X_ETIMES:
            if name in record.etimes:
                x = _number(record.etimes[name])
                if x is not None:
                    return name, x
        return TIME_AXIS, (record.meta.time - (self._first_time or 0)) / 1000.0

    def clear(self) -> None:
        """Forget every record (the monitor reads them all again after a retry)."""
        self._series.clear()
        self._counts.clear()
        self._first_time = None
        self._dirty.clear()
        self._keys_changed = True
        self.flush()

    @property
    def value_keys(self) -> list[str]:
        """Plottable value keys, in the order they first appeared."""
        return list(self._series)

    def groups(self, key: str) -> list[str]:
        return list(self._series.get(key, {}))

    def counts(self) -> dict[str, int]:
        """Records received per group."""
        return dict(self._counts)

    def data(self, key: str, group: str) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (x, y) point of one curve, undecimated (copies)."""
        try:
            series = self._series[key][group]
        except KeyError:
            raise KeyError(f"no curve for value {key!r} of group {group!r}") from None
        xs, ys = series.arrays()
        return xs.copy(), ys.copy()

    # -- display --------------------------------------------------------------

    def flush(self) -> None:
        """Send what changed since the last flush to the figure."""
        changed: set[str] | None = {g for k, g in self._dirty if k == self.selector.value}
        if self._keys_changed:
            self._keys_changed = False
            self._update_selector()
            changed = None
        self._dirty.clear()
        if changed is None or changed:
            self._draw(changed)

    def _update_selector(self) -> None:
        keys = self.value_keys
        selected = self.selector.value if self.selector.value in keys else None
        self._quiet = True
        try:
            # Changing options resets the value: put the selection back.
            self.selector.options = keys
            self.selector.value = selected if selected is not None else (keys[0] if keys else None)
        finally:
            self._quiet = False
        self.selector.disabled = not keys
        self.layout.display = None if keys else "none"

    def _on_select(self, change: dict) -> None:
        if not self._quiet:
            self._draw()

    def _draw(self, groups: set[str] | None = None) -> None:
        """Show the selected key; send new points of ``groups`` only (None: all)."""
        key = self.selector.value
        curves = self._series.get(key, {}) if key is not None else {}
        with self.figure.hold_sync():
            marks = []
            for group, series in curves.items():
                mark = self._marks.get(group)
                if mark is None:
                    mark = self._marks[group] = bqplot.Lines(
                        scales={"x": self._x_scale, "y": self._y_scale},
                        labels=[group],
                        colors=[self._colours[group]],
                        display_legend=True,
                    )
                if groups is None or group in groups:
                    xs, ys = decimate(*series.arrays(), self.display_points)
                    # float32 halves what is sent; the stored data stay float64.
                    mark.x, mark.y = xs.astype(np.float32), ys.astype(np.float32)
                marks.append(mark)
            if marks != list(self.figure.marks):
                self.figure.marks = marks
            self._x_axis.label = " / ".join(dict.fromkeys(s.x_axis for s in curves.values()))
            self._y_axis.label = key or ""

    def close(self) -> None:
        if self._built:
            for widget in (*self._marks.values(), self._x_axis, self._y_axis, self._x_scale,
                           self._y_scale, self.figure, self.selector):
                widget.close()
        super().close()


def _number(value: pb.Any) -> float | None:
    """A value's number, whatever type it is tagged with (FfDL mis-tags some),
    or None for text that is not one (e.g. emit's flags, "true")."""
    try:
        return float(value.value)
    except ValueError:
        return None
