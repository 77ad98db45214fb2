"""A real JupyterLab with the dlaas extensions, driven by Debian's Chromium.

The server runs as a subprocess with its own config, data and settings folders,
the prebuilt lab extension linked into a private share folder, and the session's
embedded Trainer behind it, so what the browser sees is what a user would.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.lab import CHROMIUM, CHROMIUM_ARGS, Lab, running_lab
from tests.conftest import RunningTrainer

LAB_USER = "browser-user"


@pytest.fixture(scope="package")
def lab(trainer: RunningTrainer, tmp_path_factory) -> Iterator[Lab]:
    """``jupyter lab`` on a free port, serving a tmp root with the session Trainer
    (running_lab says so if the lab extension is not built)."""
    base = tmp_path_factory.mktemp("lab")
    with running_lab(trainer.url, trainer.token, LAB_USER, base) as running:
        yield running


@pytest.fixture(scope="package")
def lab_client(trainer: RunningTrainer):
    """A Trainer client as the user the Lab server submits for."""
    from dlaas_jupyter.client import TrainerClient, TrainerConfig

    config = TrainerConfig.resolve(url=trainer.url, token=trainer.token, user=LAB_USER)
    with TrainerClient(config) as c:
        yield c


# Package scope, not session: Playwright's sync API keeps an event loop
# running in this thread, which would break every asyncio test run after it.
@pytest.fixture(scope="package")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium (as root: "
            "apt-get update && apt-get install -y chromium; `make test` does this as root)"
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
