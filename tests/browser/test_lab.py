"""The dlaas side panel, the train command and the in-cell monitor in a real
JupyterLab, against the session's embedded Trainer."""

from __future__ import annotations

import io
import json
import re
import shlex
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from benchmarks.common import wait_status
from benchmarks.kernel import write_notebook
from benchmarks.lab import job_item, running_lab, show_panel, status_chip
from benchmarks.list_jobs import fill
from dlaas_jupyter.proto import trainer_pb2 as pb
from tests.conftest import SMALL_CPUS, job_request, start_trainer, stop_trainer

from .conftest import LAB_USER, Lab

pytestmark = pytest.mark.slow
LIVE = 90_000  # ms: a job's start plus a panel update on a busy 2-core machine
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def gated(gate: Path, after: str = "echo done") -> str:
    """A command that waits for ``gate`` to exist, then runs ``after``."""
    return f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.1; done; {after}"


def open_panel(page: Page, lab: Lab, path: str = "lab") -> None:
    page.goto(lab.page_url(path))
    show_panel(page)


def test_panel_lists_a_job_and_follows_it_to_completed(page, lab, lab_client, tmp_path):
    gate = tmp_path / "gate"
    training_id = lab_client.create(job_request(gated(gate), name="listed-job", cpus=SMALL_CPUS))
    open_panel(page, lab)
    item = job_item(page, "listed-job")
    expect(item.locator(".dlaas-job-id")).to_have_text(training_id)
    status = status_chip(item)
    expect(status).not_to_have_text("COMPLETED")
    gate.touch()
    expect(status).to_have_text("COMPLETED", timeout=LIVE)


def test_halt_from_the_panel(page, lab, lab_client, tmp_path):
    training_id = lab_client.create(
        job_request(gated(tmp_path / "never"), name="halt-me", cpus=SMALL_CPUS)
    )
    wait_status(lab_client, training_id, {pb.PROCESSING})
    open_panel(page, lab)
    item = job_item(page, "halt-me")
    status = status_chip(item)
    expect(status).to_have_text("PROCESSING", timeout=LIVE)
    item.locator('.dlaas-icon-button[title="Halt"]').click()
    expect(status).to_have_text("HALTED", timeout=LIVE)
    assert lab_client.get(training_id).status.status == pb.HALTED


def test_download_model_from_the_panel(page, lab, lab_client):
    training_id = lab_client.create(
        job_request(
            "mkdir -p $RESULT_DIR 2>/dev/null; echo trained", name="download-me", cpus=SMALL_CPUS
        )
    )
    wait_status(lab_client, training_id, {pb.COMPLETED, pb.FAILED})
    open_panel(page, lab)
    button = job_item(page, "download-me").locator(
        '.dlaas-icon-button[title="Download the trained model"]'
    )
    expect(button).to_be_enabled(timeout=LIVE)
    with page.expect_download() as download:
        button.click()
    assert download.value.suggested_filename == f"{training_id}-trainedmodel.zip"
    content = Path(download.value.path()).read_bytes()
    assert zipfile.ZipFile(io.BytesIO(content)).testzip() is None


def test_panel_with_many_jobs_keeps_few_rows_and_scrolls_to_the_oldest(page, tmp_path):
    many = 300
    # A Trainer of its own, its store filled before it starts (running 300 real
    # jobs would take minutes): "experiment 0" is the oldest, listed last.
    data_dir = tmp_path / "trainer"
    data_dir.mkdir()
    fill(data_dir / "trainer.db", many, LAB_USER)
    trainer = start_trainer(data_dir)
    try:
        with running_lab(trainer.url, trainer.token, LAB_USER, tmp_path / "lab") as lab:
            try:
                open_panel(page, lab)
                expect(job_item(page, f"experiment {many - 1}")).to_be_visible()
                rows = page.locator("#dlaas-jobs .dlaas-job")
                assert 0 < rows.count() <= 40, f"{rows.count()} of {many} rows in the DOM"
                expect(job_item(page, "experiment 0")).to_have_count(0)
                page.locator("#dlaas-jobs .dlaas-job-list").evaluate(
                    "el => { el.scrollTop = el.scrollHeight; }"
                )
                oldest = job_item(page, "experiment 0")
                expect(oldest).to_be_in_viewport()
                expect(status_chip(oldest)).to_have_text("HALTED")
                expect(job_item(page, f"experiment {many - 1}")).to_have_count(0)
                assert rows.count() <= 40, (
                    f"{rows.count()} of {many} rows in the DOM after scrolling"
                )
                expect(page.locator("#dlaas-jobs .dlaas-jobs-header")).to_be_in_viewport()
            finally:
                page.goto("about:blank")  # before this Lab stops, so the page's polls do not fail
    finally:
        stop_trainer(trainer)


def test_train_this_notebook_trains_the_quickstart(page, lab, lab_client):
    """A new user's path: the quickstart, Train this notebook with a metric
    regex, the job followed to COMPLETED in the panel, then its view."""
    (lab.root / "quickstart.ipynb").write_bytes((NOTEBOOKS / "quickstart.ipynb").read_bytes())
    open_panel(page, lab, "lab/tree/quickstart.ipynb")
    page.locator(
        '.jp-NotebookPanel:visible .jp-NotebookPanel-toolbar [data-command="dlaas:train-notebook"]'
    ).click()
    page.locator(".dlaas-train-form").wait_for()
    page.fill('.dlaas-train-form input[name="name"]', "from-toolbar")
    page.fill('.dlaas-train-form input[name="cpus"]', "0.5")
    page.fill(
        '.dlaas-train-form textarea[name="metricRegex"]',
        "Iteration %{INT:iteration}, loss = %{FLOAT:loss}",
    )
    page.click(".jp-Dialog-footer button.jp-mod-accept")
    item = job_item(page, "from-toolbar")
    expect(status_chip(item)).to_have_text("COMPLETED", timeout=LIVE)
    item.locator(".dlaas-job-name").click()
    view = page.locator(".dlaas-job-view:visible")
    expect(view.locator(".dlaas-log-lines")).to_contain_text(
        "small network, test accuracy", timeout=LIVE
    )
    expect(view.locator(".dlaas-chart canvas").first).to_be_visible(timeout=LIVE)
    (job,) = [j for j in lab_client.list() if j.model_definition.name == "from-toolbar"]
    assert len(lab_client.emetrics(job.training_id, pagesize=100)) == 15


def test_a_long_finished_jobs_view_shows_its_end_at_once(page, lab, lab_client):
    training_id = lab_client.create(job_request("seq 1 30000", name="long-log", cpus=SMALL_CPUS))
    wait_status(lab_client, training_id, {pb.COMPLETED})
    open_panel(page, lab)
    sent: list[str] = []  # the log lines the job's socket brought

    def on_socket(ws) -> None:
        if f"/jobs/{training_id}/events" in ws.url:
            ws.on(
                "framereceived",
                lambda frame: sent.extend(
                    line["line"] for line in json.loads(frame).get("lines", ())
                ),
            )

    page.on("websocket", on_socket)
    job_item(page, "long-log").locator(".dlaas-job-name").click()
    view = page.locator(".dlaas-job-view:visible")
    lines = view.locator(".dlaas-log-lines > div")
    expect(lines.last).to_have_text("30000", timeout=LIVE)
    expect(view.locator(".dlaas-log-note")).to_have_text("last 2,000 lines shown")
    expect(lines.first).to_have_text("28001")
    assert sent == [str(n) for n in range(28001, 30001)]  # not the whole log


def run_all_cells(page) -> None:
    """Run the open notebook's cells once its kernel is really there.

    On a fresh machine the first kernel takes a while to start; keystrokes sent
    before it is attached are lost, and JupyterLab may ask which kernel to use
    if its kernel list was not loaded yet. So: wait for a named, idle kernel,
    accept the dialog if it shows, and try again until the first cell runs.
    """
    panel = page.locator(".jp-NotebookPanel:visible")
    expect(panel.locator(".jp-KernelName")).not_to_have_text("No Kernel", timeout=LIVE)
    prompt = panel.locator(".jp-Notebook-cell .jp-InputPrompt").first
    deadline = time.monotonic() + LIVE / 1000
    while True:
        if page.locator(".jp-Dialog").count():
            page.click(".jp-Dialog-footer button.jp-mod-accept")
        expect(panel.locator('[data-status="idle"]')).to_have_count(1, timeout=LIVE)
        panel.locator(".jp-Notebook-cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Home")
        for _ in range(panel.locator(".jp-Notebook-cell").count()):
            page.keyboard.press("Shift+Enter")
        try:
            expect(prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=10_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_in_cell_monitor_draws_bqplot_curves(page, lab):
    regex = "train:Iteration %{INT:iteration}, loss = %{FLOAT:loss}"
    write_notebook(
        lab.root / "monitor.ipynb",
        [
            "%load_ext dlaas_jupyter",
            f'%%dlaas_train --name monitored --cpus {SMALL_CPUS} --metric-regex "{regex}"\n'
            "for i in range(1, 41):\n"
            "    print(f'Iteration {i}, loss = {1 / i:.4f}', flush=True)\n",
        ],
    )
    page.goto(lab.page_url("lab/tree/monitor.ipynb"))
    run_all_cells(page)
    line = page.locator(".jp-OutputArea .bqplot path.line")
    # At least one drawn segment: an empty Lines mark has no "L" in its path.
    expect(line.first).to_have_attribute("d", re.compile(r"M[^ML]*L"), timeout=LIVE)
