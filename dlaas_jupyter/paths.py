"""Where the embedded Trainer keeps its state; shared by the Trainer and its clients."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

INFO_FILE = "trainer.json"
LOCK_FILE = "trainer.lock"
LOG_FILE = "trainer.log"
DATA_DIR_ENV = "DLAAS_DATA_DIR"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``DLAAS_DATA_DIR``, else ``<jupyter data dir>/dlaas``."""
    env = os.environ if environ is None else environ
    configured = env.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path(jupyter_data_dir()) / "dlaas"
