"""A real JupyterLab with the dlaas extensions, for the browser tests and benchmarks.

The server runs as a subprocess with its own config, data and settings folders,
the prebuilt lab extension linked into a private share folder, and a given
Trainer behind it, so what the browser sees is what a user would. The side
panel's locators, which the tests and benchmarks share, are here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[1]
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
PANEL_TAB = '.jp-SideBar [data-id="dlaas-jobs"]'


@dataclass
class Lab:
    url: str
    token: str
    root: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}{path}?token={self.token}&reset"


def show_panel(page: Page) -> None:
    """Click the dlaas side panel's tab and wait for its job list."""
    page.locator(PANEL_TAB).click()
    page.locator("#dlaas-jobs .dlaas-jobs").wait_for()


def job_item(page: Page, name: str) -> Locator:
    """The side panel's row of the job named ``name``."""
    return page.locator(f'#dlaas-jobs .dlaas-job:has(.dlaas-job-name:text-is("{name}"))')


def status_chip(item: Locator) -> Locator:
    """The status chip of a job's row in the side panel."""
    return item.locator(".dlaas-job-line").first.locator("span")


def _server_url(runtime: Path, process: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    """The URL the server reports in its runtime file once it has bound a port
    (it is given port 0, so no other process can take the port meanwhile)."""
    info = runtime / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()}")
        try:
            return f"http://127.0.0.1:{json.loads(info.read_text())['port']}/"
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    raise RuntimeError(f"jupyter lab bound no port in {timeout} s:\n{log.read_text()}")


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


@contextlib.contextmanager
def running_lab(trainer_url: str, trainer_token: str, user: str, base: Path) -> Iterator[Lab]:
    """``jupyter lab`` on a free port, serving ``base/root``, submitting to the
    given Trainer as ``user``; stopped on exit. ``base`` must be an empty folder."""
    if not (LABEXTENSION / "package.json").exists():
        raise RuntimeError(
            f"the lab extension is not built ({LABEXTENSION}): run `make labextension`"
        )
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLAAS_", "JUPYTER"))}
    env.update(
        JUPYTER_PATH=str(base / "share"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        DLAAS_TRAINER_URL=trainer_url,
        DLAAS_TRAINER_TOKEN=trainer_token,
        DLAAS_USER=user,
        DLAAS_DATA_DIR=str(base / "dlaas-data"),
        # The kernel's `python3` must be this interpreter, with dlaas_jupyter.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = base / "lab.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--port=0", "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            '--ServerApp.jpserver_extensions={"dlaas_jupyter": True}',
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        url = _server_url(base / "runtime", process, log)
        _wait_until_up(f"{url}api/status?token={token}", process, log)
        yield Lab(url, token, root)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
