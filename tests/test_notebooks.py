"""The example notebooks, executed top to bottom by nbclient as papermill or CI would,
in a kernel pointed at the test Trainer."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from benchmarks.kernel import WIDGET_VIEW
from dlaas_jupyter.packaging.notebook import package_notebook, to_zip
from dlaas_jupyter.packaging.options import TrainOptions, build_request
from dlaas_jupyter.proto import trainer_pb2 as pb

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, tmp_path: Path, env: dict[str, str]) -> tuple[NotebookNode, Path]:
    """Run a copy of notebooks/``name`` in its folder; returns it with its outputs."""
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    path = folder / name
    notebook = nbformat.read(path, as_version=4)
    # What jupyter_server tells a kernel about its notebook; the notebooks stay clean.
    kernel_env = {**env, "JPY_SESSION_NAME": str(path), "DLAAS_DATA_DIR": str(tmp_path / "data")}
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute(env=kernel_env)  # raises CellExecutionError if a cell fails
    return notebook, folder


def text_of(cell: NotebookNode) -> str:
    """A code cell's printed and displayed text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def cell_with(notebook: NotebookNode, source: str) -> NotebookNode:
    matches = [
        cell for cell in notebook.cells if cell.cell_type == "code" and source in cell.source
    ]
    assert len(matches) == 1, f"{len(matches)} cells hold {source!r}"
    return matches[0]


def test_quickstart(tmp_path: Path, trainer_env: dict[str, str], client) -> None:
    notebook, folder = execute("quickstart.ipynb", tmp_path, trainer_env)

    train = cell_with(notebook, "%%dlaas_train --name digits-mlp")
    assert "Submitted training-" in text_of(train)
    assert any(WIDGET_VIEW in output.get("data", {}) for output in train.outputs)  # the monitor
    assert "warning" not in text_of(train)  # run as saved: no stale-notebook warning
    assert text_of(cell_with(notebook, "job.wait()")).strip() == "'COMPLETED'"
    assert text_of(cell_with(notebook, "job2.halt()")).strip() == "'HALTED'"

    accuracy = re.search(r"test accuracy: ([0-9.]+)", text_of(cell_with(notebook, "joblib.load")))
    assert accuracy is not None
    assert float(accuracy.group(1)) > 0.8

    jobs = {job.model_definition.name: job for job in client.list()}
    assert set(jobs) == {"digits-mlp", "long-loop"}
    mlp = jobs["digits-mlp"].training_id
    # The loss curve's records came from the verbose log, one per iteration.
    losses = client.emetrics(mlp, pagesize=100)
    assert len(losses) == 30
    assert [record.etimes["iteration"].value for record in losses[:2]] == ["1", "2"]
    # The model was downloaded beside the notebook.
    assert (folder / f"{mlp}-trainedmodel" / "model.joblib").is_file()
    assert "digits-mlp" in text_of(cell_with(notebook, "%dlaas_jobs"))


def test_the_quickstart_trains_as_a_whole_notebook(
    tmp_path: Path, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What "Train this notebook" sends from the quickstart is a job that works:
    its data cell and last cell, without the cells that look at jobs."""
    monkeypatch.chdir(tmp_path)  # the job's default local datastore
    packaged = package_notebook(NOTEBOOKS / "quickstart.ipynb")
    for control in ("job.wait()", "job2.halt()", "job.download()", "%dlaas", "dlaas_train"):
        assert control not in packaged.script, control
    options = TrainOptions(
        cpus=0.5, metric_regex=["Iteration %{INT:iteration}, loss = %{FLOAT:loss}"]
    )
    request = build_request(to_zip(packaged), options, default_name="quickstart")
    training_id = client.create(request)
    log = [line.line for line in client.follow_logs(training_id, poll_interval=0.2)]
    assert client.status(training_id) == pb.COMPLETED, log[-20:]
    assert any(line.startswith("small network, test accuracy: ") for line in log), log[-20:]
    assert len(client.emetrics(training_id, pagesize=100)) == 15  # one record per iteration
    with zipfile.ZipFile(client.download_trained_model(training_id, tmp_path)) as results:
        assert any(name.endswith("small.joblib") for name in results.namelist())


def test_ffdl_manifest(tmp_path: Path, trainer_env: dict[str, str], client) -> None:
    notebook, _ = execute("ffdl-manifest.ipynb", tmp_path, trainer_env)

    assert text_of(cell_with(notebook, "job.wait()")).strip() == "'COMPLETED'"
    printed = text_of(cell_with(notebook, "job.metrics()"))
    assert "Counter({'train': 10, 'test': 10})" in printed
    assert re.search(r"test \{'epoch': 10\} \{'accuracy': 0\.\d+\}", printed), printed

    (job,) = client.list()
    assert job.model_definition.name == "digits-sgd"  # from manifest.yml
    assert job.training.resources.memory == 1 and job.training.resources.cpus == 1
    # The whole notebook went, without the magics and the cells tagged dlaas-skip.
    with zipfile.ZipFile(client.download_definition(job.training_id, tmp_path)) as archive:
        main = archive.read("main.py").decode()
    assert "partial_fit" in main
    assert "job.metrics()" not in main and "dlaas_train" not in main
