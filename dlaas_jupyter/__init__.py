"""Train models on an FfDL Trainer, or an embedded one, from Jupyter."""

from dlaas_jupyter.emit import emit as emit

__version__ = "0.1.0"
