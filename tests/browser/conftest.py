"""A real JupyterLab with the dlaas extensions, driven by Debian's Chromium.

The server runs as a subprocess with its own config, data and settings folders,
the prebuilt lab extension linked into a private share folder, and the session's
embedded Trainer behind it, so what the browser sees is what a user would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RunningTrainer

REPO = Path(__file__).resolve().parents[2]
LABEXTENSION = REPO / "dlaas_jupyter" / "labextension"
CHROMIUM = Path("/usr/bin/chromium")
# As root, and so the closed network cannot stall start-up (see build notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LAB_USER = "browser-user"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


@dataclass
class Lab:
    url: str
    token: str
    root: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}{path}?token={self.token}&reset"


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook of code cells with kernelspec metadata (without it Lab asks
    for a kernel in a dialog that blocks every click)."""
    cells = [
        {"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [],
         "execution_count": None, "source": source}
        for i, source in enumerate(sources)
    ]
    notebook = {"cells": cells, "metadata": {"kernelspec": KERNELSPEC},
                "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook, indent=1))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not answer {url} in {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def lab(trainer: RunningTrainer, tmp_path_factory) -> Iterator[Lab]:
    """``jupyter lab`` on a free port, serving a tmp root with the session Trainer."""
    if not (LABEXTENSION / "package.json").exists():
        pytest.fail(f"the lab extension is not built ({LABEXTENSION}): run `make labextension`")
    base = tmp_path_factory.mktemp("lab")
    share = base / "share" / "labextensions"
    share.mkdir(parents=True)
    name = json.loads((LABEXTENSION / "package.json").read_text())["name"]
    (share / name).symlink_to(LABEXTENSION)
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    root = base / "root"
    root.mkdir()
    token = secrets.token_hex(16)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLAAS_", "JUPYTER"))}
    env.update(
        JUPYTER_PATH=str(base / "share"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        DLAAS_TRAINER_URL=trainer.url,
        DLAAS_TRAINER_TOKEN=trainer.token,
        DLAAS_USER=LAB_USER,
        DLAAS_DATA_DIR=str(base / "dlaas-data"),
        # The kernel's `python3` must be this interpreter, with dlaas_jupyter.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = base / "lab.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            '--ServerApp.jpserver_extensions={"dlaas_jupyter": True}',
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(f"{url}api/status?token={token}", process, log)
        yield Lab(url, token, root)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def lab_client(trainer: RunningTrainer):
    """A Trainer client as the user the Lab server submits for."""
    from dlaas_jupyter.client import TrainerClient, TrainerConfig

    with TrainerClient(TrainerConfig.resolve(url=trainer.url, token=trainer.token, user=LAB_USER)) as c:
        yield c


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(as root: apt-get update && apt-get install -y chromium; `make test` does this as root)"
        )
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("jupyterlab is not installed in this environment: pip install -e '.[test]'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab: Lab):
    """A fresh browser page; page errors are collected and fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"
