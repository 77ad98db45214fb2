"""Where the embedded Trainer keeps its state; shared by the Trainer and its clients."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

INFO_FILE = "trainer.json"
LOCK_FILE = "trainer.lock"
LOG_FILE = "trainer.log"


def default_data_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """``DLAAS_DATA_DIR``, else ``<jupyter data dir>/dlaas``."""
    env = os.environ if environ is None else environ
    configured = env.get("DLAAS_DATA_DIR")
    return Path(configured).expanduser() if configured else Path(jupyter_data_dir()) / "dlaas"
