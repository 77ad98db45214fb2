"""Train models on an FfDL Trainer, or an embedded one, from Jupyter."""

__version__ = "0.1.0"
