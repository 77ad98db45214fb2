"""Typed clients of a Trainer (FfDL's or the embedded one), sync and asyncio.

Everything above this package (magics, widgets, the server extension) talks to
a Trainer only through these clients and never learns which Trainer it is.
"""

from dlaas_jupyter.client.aio import AsyncTrainerClient
from dlaas_jupyter.client.config import TrainerConfig
from dlaas_jupyter.client.errors import (
    AuthenticationFailed,
    DlaasError,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    TrainerError,
    TrainerUnavailable,
    Unsupported,
)
from dlaas_jupyter.client.follow import TERMINAL
from dlaas_jupyter.client.sync import TrainerClient

__all__ = [
    "TERMINAL",
    "AsyncTrainerClient",
    "AuthenticationFailed",
    "DlaasError",
    "InvalidRequest",
    "JobNotFound",
    "PermissionDenied",
    "TrainerClient",
    "TrainerConfig",
    "TrainerError",
    "TrainerUnavailable",
    "Unsupported",
]
