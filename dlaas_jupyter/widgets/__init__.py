"""The job monitor shown in a notebook cell: status, live log, metric curves,
and Halt/Download/Delete; with a plain-text fallback where widgets cannot show."""

from dlaas_jupyter.widgets.curves import MetricCurves
from dlaas_jupyter.widgets.logview import LogView, read_full_log
from dlaas_jupyter.widgets.monitor import JobMonitor
from dlaas_jupyter.widgets.text import follow_as_text

__all__ = ["JobMonitor", "LogView", "MetricCurves", "follow_as_text", "read_full_log"]
