"""Train models on an FfDL Trainer, or an embedded one, from Jupyter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlaas_jupyter.emit import emit as emit

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext dlaas_jupyter``: register the ``%dlaas_*`` magics."""
    from dlaas_jupyter.magics import DlaasMagics

    ipython.register_magics(DlaasMagics)

