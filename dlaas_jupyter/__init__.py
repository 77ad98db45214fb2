"""Train models on an FfDL Trainer, or an embedded one, from Jupyter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlaas_jupyter.emit import emit as emit

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext dlaas_jupyter``: register the ``%dlaas_*`` magics."""
    import threading

    from dlaas_jupyter.magics import DlaasMagics

    ipython.register_magics(DlaasMagics)
    # The monitor's plotting stack (bqplot, pandas, numpy) takes ~0.5-1 s to
    # import; do it now, off the main thread, not in the first training cell.
    threading.Thread(target=_warm_widgets, name="dlaas-warm-imports", daemon=True).start()


def _warm_widgets() -> None:
    import dlaas_jupyter.widgets  # noqa: F401


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """The Jupyter server extension (enabled by the config file the wheel installs)."""
    from dlaas_jupyter.server_ext import _jupyter_server_extension_points as points

    return points()
