"""The %dlaas_* magics and the Job object, in real kernels against a real embedded Trainer."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.kernel import WIDGET_VIEW, Kernel, write_notebook

pytestmark = pytest.mark.slow

METRIC_REGEX = '"train: Iteration %{INT:iteration}, loss = %{FLOAT:loss}"'

SMALL_JOB = [
    "import os\nprint('hello from the job')",
    "for i in range(1, 4):\n    print(f'Iteration {i}, loss = {1.0 / i:.4f}')",
    (
        "with open(os.path.join(os.environ['RESULT_DIR'], 'model.txt'), 'w') as f:\n"
        "    f.write('trained')"
    ),
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The kernel's working directory; session.ipynb is the notebook it runs."""
    write_notebook(tmp_path / "small.ipynb", SMALL_JOB)
    return tmp_path


@pytest.fixture
def kernel(folder: Path, trainer_env: dict[str, str]) -> Iterator[Kernel]:
    env = {
        **trainer_env,
        # What jupyter_server tells a kernel about its notebook.
        "JPY_SESSION_NAME": str(folder / "session.ipynb"),
        # Never the user's own embedded Trainer, even after %dlaas_config --embedded.
        "DLAAS_DATA_DIR": str(folder / "data"),
    }
    with Kernel(folder, env) as running:
        running.execute("%load_ext dlaas_jupyter")
        yield running


def submit_small(kernel: Kernel, *flags: str) -> str:
    """Train small.ipynb to the end; returns the training id (also kept as `job`)."""
    run = kernel.execute(f"job = %dlaas_train --notebook small.ipynb --wait {' '.join(flags)}")
    assert "COMPLETED" in run.stdout, run.text
    return kernel.execute("print(job.id)").stdout.strip()


def assert_one_line_error(run, *fragments: str) -> None:
    """The magic printed one red line naming the problem: no traceback, no value."""
    assert run.error is None
    assert "Traceback" not in run.text
    assert run.results == []
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("\x1b[31mdlaas: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_train_notebook_and_wait_streams_the_log(kernel: Kernel, client) -> None:
    run = kernel.execute(
        "job = %dlaas_train --notebook small.ipynb --wait --name small-job "
        f"--metric-regex {METRIC_REGEX}"
    )
    assert "hello from the job" in run.stdout
    assert "Iteration 3, loss = 0.3333" in run.stdout
    assert run.stdout.rstrip().endswith("COMPLETED")
    assert "Traceback" not in run.text
    training_id = kernel.execute("print(job.id)").stdout.strip()
    assert f"Submitted {training_id} (small-job)" in run.stdout
    # The Trainer has it, as submitted, and finished.
    job = client.get(training_id)
    assert job.model_definition.name == "small-job"
    assert job.training.command == "python main.py"
    assert kernel.execute("print(job.status)").stdout.strip() == "COMPLETED"


def test_cell_magic_packages_what_the_cell_needs(kernel: Kernel, folder: Path, client) -> None:
    cells = [
        "%load_ext dlaas_jupyter",
        "def greet(name):\n    return f'hello {name} from an earlier cell'",
        "raise RuntimeError('a cell the job does not need')",
        "%%dlaas_train --wait --name cell-job\nprint(greet('cell'))",
    ]
    write_notebook(folder / "session.ipynb", cells)
    kernel.execute(cells[1])
    kernel.execute(cells[2], allow_error=True)
    run = kernel.execute(cells[3])
    assert "hello cell from an earlier cell" in run.stdout
    assert "COMPLETED" in run.stdout
    assert "warning" not in run.stderr  # the kernel ran exactly what is saved
    assert "RuntimeError" not in run.stdout
    # The cell's value is the Job, shown as its monitor.
    assert run.has(WIDGET_VIEW)
    assert [job.model_definition.name for job in client.list()] == ["cell-job"]


def test_dry_run_describes_and_submits_nothing(kernel: Kernel) -> None:
    run = kernel.execute(
        "%dlaas_train --notebook small.ipynb --dry-run --cpus 2 --memory 2GiB "
        f"--framework python:3 --metric-regex {METRIC_REGEX}"
    )
    assert run.results == []
    assert "main.py" in run.stdout
    assert "print('hello from the job')" in run.stdout
    assert "CreateRequest" in run.stdout
    assert "cpus: 2" in run.stdout
    assert "memory_unit: GiB" in run.stdout
    assert 'regex: "Iteration %{INT:iteration}, loss = %{FLOAT:loss}"' in run.stdout
    assert "No training jobs." in kernel.execute("%dlaas_jobs").result


def test_bad_options_print_one_red_line(kernel: Kernel, folder: Path) -> None:
    assert_one_line_error(
        kernel.execute("%dlaas_train --notebook small.ipynb --memory lots"), "--memory"
    )
    assert_one_line_error(
        kernel.execute("%dlaas_train --notebook small.ipynb --framework python"), "--framework"
    )
    (folder / "bad.yml").write_text("name: x\ncpus: lots\n")
    assert_one_line_error(
        kernel.execute("%dlaas_train --notebook small.ipynb --manifest bad.yml"), "cpus"
    )
    assert_one_line_error(kernel.execute("%dlaas_train --notebook missing.ipynb"), "missing.ipynb")


def test_without_a_notebook_the_error_says_to_pass_one(folder: Path, trainer_env) -> None:
    with Kernel(folder, trainer_env) as kernel:
        kernel.execute("%load_ext dlaas_jupyter")
        assert_one_line_error(kernel.execute("%dlaas_train"), "--notebook PATH")


def test_job_commands(kernel: Kernel, folder: Path) -> None:
    training_id = submit_small(kernel, f"--metric-regex {METRIC_REGEX}")

    jobs = kernel.execute("%dlaas_jobs")
    html = jobs.results[0]["text/html"]
    assert "<table>" in html and training_id in html and "COMPLETED" in html
    assert training_id in jobs.results[0]["text/plain"]

    status = kernel.execute(f"%dlaas_status {training_id}")
    assert status.has(WIDGET_VIEW)  # the live monitor

    logs = kernel.execute(f"%dlaas_logs {training_id}")
    assert logs.stdout.splitlines()[:2] == ["hello from the job", "Iteration 1, loss = 1.0000"]
    followed = kernel.execute(f"%dlaas_logs {training_id} --follow")
    assert "Iteration 3, loss = 0.3333" in followed.stdout
    assert followed.stdout.rstrip().endswith(f"{training_id}: COMPLETED")

    metrics = kernel.execute(f"%dlaas_metrics {training_id}")
    assert metrics.has(WIDGET_VIEW)
    curves = kernel.execute(
        "print(_.selector.options, _.counts(), _.data('loss', 'train')[1].tolist())"
    ).stdout.strip()
    assert curves == "('loss',) {'train': 3} [1.0, 0.5, 0.3333]"

    kernel.execute(f"%dlaas_download {training_id} --to out --extract")
    extracted = folder / "out" / f"{training_id}-trainedmodel"
    assert (extracted / "model.txt").read_text() == "trained"
    kernel.execute(f"%dlaas_download {training_id} --definition --to out")
    with zipfile.ZipFile(folder / "out" / f"{training_id}-definition.zip") as archive:
        assert "print('hello from the job')" in archive.read("main.py").decode()

    deleted = kernel.execute(f"%dlaas_delete {training_id}")
    assert deleted.stdout.strip() == f"Deleted {training_id}"
    assert_one_line_error(kernel.execute(f"%dlaas_status {training_id}"), "not found")


def test_halt(kernel: Kernel, folder: Path) -> None:
    write_notebook(
        folder / "long.ipynb",
        [
            (
                "import time\nfor i in range(600):\n"
                "    print('step', i, flush=True)\n    time.sleep(0.2)"
            )
        ],
    )
    kernel.execute("job = %dlaas_train --notebook long.ipynb")
    training_id = kernel.execute(
        "import time\nwhile job.status != 'PROCESSING':\n    time.sleep(0.1)\nprint(job.id)"
    ).stdout.strip()
    halted = kernel.execute(f"%dlaas_halt {training_id}")
    assert halted.stdout.strip() == f"{training_id}: HALTED"
    assert kernel.execute("print(job.wait(timeout=60))").stdout.strip() == "HALTED"


def test_unknown_job_id_prints_the_error_without_a_traceback(kernel: Kernel) -> None:
    for magic in ("status", "logs", "metrics", "halt", "delete", "download"):
        run = kernel.execute(f"%dlaas_{magic} training-nosuchjob")
        assert_one_line_error(run, "training-nosuchjob", "not found")


def test_versions_and_config(kernel: Kernel, trainer, user: str) -> None:
    versions = kernel.execute("%dlaas_versions").stdout
    assert versions.splitlines()[0].split() == ["FRAMEWORK", "VERSIONS"]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions

    shown = kernel.execute("%dlaas_config").stdout
    assert trainer.url in shown and "DLAAS_TRAINER_URL" in shown
    assert user in shown and "set" in shown
    assert trainer.token not in shown  # never print the secret

    submit_small(kernel)
    other = kernel.execute("%dlaas_config --user someone-else").stdout
    assert ["User", "someone-else", "%dlaas_config"] in [
        line.split() for line in other.splitlines()
    ]
    assert "No training jobs." in kernel.execute("%dlaas_jobs").result

    kernel.execute("%dlaas_config --url grpc://127.0.0.1:1")
    assert_one_line_error(kernel.execute("%dlaas_jobs"), "unreachable")
    assert_one_line_error(kernel.execute("%dlaas_config --url http://x:1"), "grpc://host:port")

    kernel.execute(f"%dlaas_config --url {trainer.url} --token {trainer.token} --user {user}")
    assert "small" in kernel.execute("%dlaas_jobs").result

    embedded = kernel.execute("%dlaas_config --embedded").stdout
    assert "embedded (data dir" in embedded and "DLAAS_TRAINER_URL" not in embedded


def test_help_for_each_magic(kernel: Kernel) -> None:
    train = kernel.execute("%dlaas_train?").text
    for flag in (
        "--name",
        "--description",
        "--cpus",
        "--gpus",
        "--memory",
        "--learners",
        "--framework",
        "--command",
        "--metrics",
        "--metric-regex",
        "--manifest",
        "--include",
        "--notebook",
        "--dry-run",
        "--wait",
    ):
        assert flag in train
    assert "Train the saved notebook" in train
    assert "--follow" in kernel.execute("%dlaas_logs?").text
    assert "--extract" in kernel.execute("%dlaas_download?").text
    assert "--embedded" in kernel.execute("%dlaas_config?").text


def test_stale_notebook_warning(kernel: Kernel, folder: Path) -> None:
    # The user ran cells 1-3 as saved (the fixture ran cell 1) and saved...
    saved = ["%load_ext dlaas_jupyter", "x = 1\nprint(x)", "y = 2", "%dlaas_train --dry-run"]
    kernel.execute(saved[1])
    kernel.execute(saved[2])
    write_notebook(folder / "session.ipynb", saved, counts=[1, 2, 3])
    # ...then edited cell 2 and ran it (In[4]) without saving.
    edited = "x = 41\nprint(x + 1)"
    kernel.execute(edited)
    run = kernel.execute(saved[3])
    assert (
        "dlaas: warning: the saved notebook differs from what you ran in cell 2: "
        "save it (Ctrl+S) first — training the saved version"
    ) in run.stderr
    assert "x = 1" in run.stdout  # what is packaged is the saved version

    # Saved now (Ctrl+S): no warning, and the edit is what is packaged.
    write_notebook(folder / "session.ipynb", [saved[0], edited, *saved[2:]], counts=[1, 4, 3, 5])
    run = kernel.execute(saved[3])
    assert "warning" not in run.stderr
    assert "x = 41" in run.stdout


def test_job_object(kernel: Kernel, folder: Path) -> None:
    write_notebook(
        folder / "emits.ipynb",
        [
            (
                "from dlaas_jupyter import emit\n"
                "for i in range(1, 4):\n"
                "    emit('train', iteration=i, loss=1.0 / i, phase='warm', extra={'lr': 0.1})\n"
                "    print('line', i)"
            ),
            "import os\nopen(os.path.join(os.environ['RESULT_DIR'], 'model.txt'), 'w').write('m')",
        ],
    )
    kernel.execute("job = %dlaas_train --notebook emits.ipynb --name emits")
    run = kernel.execute(
        "import json\n"
        "final = job.wait(timeout=120)\n"
        "print(json.dumps({'final': final, 'status': job.status, 'id': job.id,\n"
        "    'logs': job.logs(), 'metrics': job.metrics(),\n"
        "    'download': str(job.download()), 'repr': repr(job)}))"
    )
    result = json.loads(run.stdout)
    assert result["final"] == result["status"] == "COMPLETED"
    assert result["logs"] == ["line 1", "line 2", "line 3"]
    metrics = result["metrics"]
    assert [record["etimes"] for record in metrics] == [{"iteration": i} for i in (1, 2, 3)]
    assert metrics[1]["values"] == {"loss": 0.5, "phase": "warm", "extra": {"lr": 0.1}}
    assert {record["group"] for record in metrics} == {"train"}
    assert [record["rindex"] for record in metrics] == [1, 2, 3]
    assert all(isinstance(record["time"], int) and record["subid"] for record in metrics)
    # Exact Python types, not only JSON-equal values.
    types = kernel.execute(
        "m = job.metrics()[0]\n"
        "print(type(m['etimes']['iteration']).__name__, type(m['values']['loss']).__name__,"
        " type(m['values']['extra']).__name__, type(m['values']['phase']).__name__)"
    ).stdout.split()
    assert types == ["int", "float", "dict", "str"]
    download = Path(result["download"])
    assert download == folder / f"{result['id']}-trainedmodel.zip"  # beside the notebook
    with zipfile.ZipFile(download) as archive:
        assert archive.read("model.txt") == b"m"
    assert result["repr"] == f"Job({result['id']!r}, name='emits', status='COMPLETED')"
    # Displayed in a kernel, the Job is its live monitor.
    assert kernel.execute("job").has(WIDGET_VIEW)


def test_text_display_outside_a_kernel(folder: Path, trainer_env, kernel: Kernel) -> None:
    """Terminal IPython has no widgets: the Job, the jobs and the metrics are text."""
    training_id = submit_small(kernel, f"--metric-regex {METRIC_REGEX}")
    script = folder / "terminal.ipy"
    script.write_text(
        "%load_ext dlaas_jupyter\n"
        f"job = %dlaas_status {training_id}\n"
        "display(job)\n"
        "table = %dlaas_jobs\n"
        "display(table)\n"
        f"%dlaas_metrics {training_id}\n"
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ipython")),
            "--no-banner",
            "--colors=nocolor",
            str(script),
        ],
        cwd=folder,
        env=trainer_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Job({training_id!r}, name='small', status='COMPLETED')" in out
    assert "ID" in out and "STATUS" in out and training_id in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("GROUP", "train "))]
    assert rows == [
        ["GROUP", "iteration", "loss"],
        ["train", "1", "1.0"],
        ["train", "2", "0.5"],
        ["train", "3", "0.3333"],
    ]
