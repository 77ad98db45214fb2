"""The `dlaas` command line: argument parsing and exit codes in-process, then
end to end as a real subprocess against a real embedded Trainer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Self

import grpc
import pytest
from conftest import closed_port_url, make_zip

from dlaas_jupyter import __version__, cli
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
from dlaas_jupyter.proto import trainer_pb2 as pb

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "first-job"
TRAINING_ID = re.compile(r"^training-[0-9A-Za-z_-]{9}$")


# --- in-process: parsing and exit codes ---------------------------------------


def test_help_documents_every_exit_code(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code, meaning in cli.EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning[:30])}", out, re.MULTILINE), code
    assert {0, 1, 2, 3, 4, 5, 6, 130} <= set(cli.EXIT_CODES)
    for verb in (
        "train",
        "list",
        "show",
        "halt",
        "delete",
        "download",
        "logs",
        "emetrics",
        "versions",
    ):
        assert verb in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dlaas {__version__}"


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage: dlaas" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["show"], "the following arguments are required: ID"),
        (
            ["download", "training-x"],
            "one of the arguments --definition --trainedmodel is required",
        ),
        (["download", "training-x", "--definition", "--trainedmodel"], "not allowed with argument"),
        (["logs", "training-x", "--pagesize", "0"], "must be 1 or more, not 0"),
        (["logs", "training-x", "--pos", "first"], "expected a whole number, not 'first'"),
        (["emetrics", "training-x", "--since", "-5"], "must be 0 or more, not -5"),
        (
            ["logs", "training-x", "--follow", "--pagesize", "5"],
            "--follow cannot be combined with --pagesize or a negative --pos",
        ),
        (
            ["emetrics", "training-x", "--follow", "--pos", "-1"],
            "--follow cannot be combined with --pagesize or a negative --pos",
        ),
        (
            ["--url", "http://localhost:1", "list"],
            "DLAAS_TRAINER_URL must look like grpc://host:port",
        ),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_bad_manifest_exits_6_before_connecting(tmp_path, capsys):
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(
        "name: n\nlearners: two\nframework: {name: python, version: '3', command: c}\n"
    )
    # A Trainer that cannot be reached would give 5: the manifest is checked first.
    url = closed_port_url()
    assert cli.main(["--url", url, "train", str(manifest), str(EXAMPLE)]) == 6
    assert capsys.readouterr().err == (
        "dlaas: error: manifest field 'learners': expected a whole number, not 'two'\n"
    )
    assert (
        cli.main(["--url", url, "train", str(EXAMPLE / "manifest.yml"), str(tmp_path / "none")])
        == 6
    )
    assert "dlaas: error: model definition not found:" in capsys.readouterr().err


def test_unreachable_trainer_exits_5(capsys):
    url = closed_port_url()
    assert cli.main(["--url", url, "list"]) == 5
    err = capsys.readouterr().err
    assert err.startswith(f"dlaas: error: Trainer at {url} is unreachable")
    assert "Traceback" not in err


class RaisingClient:
    """Stands in for TrainerClient to check how each client error maps to an exit code."""

    error: BaseException

    def __init__(self, config) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def get(self, training_id: str) -> pb.Job:
        raise self.error

    def logs(self, training_id: str, **query) -> list[pb.LogLine]:
        raise self.error

    def follow_logs(self, training_id: str):
        yield pb.LogLine(line="first line")
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (JobNotFound("training-x", "gone"), 3),
        (PermissionDenied("training-x", "not yours"), 4),
        (AuthenticationFailed("grpc://h:1", "bad token"), 4),
        (TrainerUnavailable("grpc://h:1", "connection refused"), 5),
        (InvalidRequest("Training command is not set"), 6),
        (Unsupported("no resume"), 1),
        (TrainerError(grpc.StatusCode.INTERNAL, "disk full"), 1),
        (DlaasError("something else"), 1),
        (PermissionError(13, "Permission denied", "out.zip"), 1),
    ],
)
def test_client_errors_map_to_exit_codes(error, code, monkeypatch, capsys):
    monkeypatch.setattr(RaisingClient, "error", error, raising=False)
    monkeypatch.setattr(cli, "TrainerClient", RaisingClient)
    assert cli.main(["show", "training-x"]) == code
    assert cli.exit_code_for(error) == code
    err = capsys.readouterr().err
    assert err.startswith("dlaas: error: ") and err.count("\n") == 1
    assert "out.zip: Permission denied" in err if isinstance(error, OSError) else str(error) in err


def test_ctrl_c_while_following_exits_130_quietly(monkeypatch, capsys):
    monkeypatch.setattr(RaisingClient, "error", KeyboardInterrupt(), raising=False)
    monkeypatch.setattr(cli, "TrainerClient", RaisingClient)
    assert cli.main(["logs", "training-x", "--follow"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "first line\n"
    assert captured.err == ""


# --- end to end: the real CLI process against a real embedded Trainer ---------


def dlaas(
    env: dict[str, str], *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlaas_jupyter.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_dlaas(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dlaas_jupyter.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def submit(
    env: dict[str, str],
    cwd: Path,
    command: str,
    files: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    """Train a job running ``command`` over a model folder of ``files``; returns its id."""
    model = cwd / "model"
    model.mkdir(exist_ok=True)
    for name, content in (files or {"main.py": "print('hi')\n"}).items():
        (model / name).write_text(content)
    manifest = cwd / "manifest.yml"
    manifest.write_text(
        "name: cli-test\nframework:\n  name: python\n  version: '3'\n"
        f"  command: {json.dumps(command)}\n{extra}"
    )
    result = dlaas(env, "train", str(manifest), str(model), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def zip_names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return set(archive.namelist())


def test_first_job_end_to_end(trainer_env, tmp_path):
    env = trainer_env
    trained = dlaas(env, "train", str(EXAMPLE / "manifest.yml"), str(EXAMPLE), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    training_id = trained.stdout.strip()
    assert TRAINING_ID.match(training_id), trained.stdout
    assert f"dlaas logs {training_id} --follow" in trained.stderr

    followed = dlaas(env, "logs", training_id, "--follow", cwd=tmp_path)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == [
        "1/5",
        "2/5",
        "3/5",
        "4/5",
        "5/5",
    ]
    assert lines[-1].startswith("saved ") and lines[-1].endswith("model.json")

    shown = dlaas(env, "show", training_id, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["training_id"] == training_id
    assert job["status"]["status"] == "COMPLETED"
    assert job["model_definition"]["name"] == "first-job"
    assert "content" not in job["model_definition"]
    assert job["training"]["command"] == "python train.py"
    assert job["training"]["resources"]["memory_unit"] == "GiB"

    text = dlaas(env, "show", training_id, cwd=tmp_path)
    assert re.search(r"^Status:\s+COMPLETED$", text.stdout, re.MULTILINE), text.stdout
    assert re.search(
        r"^Submitted:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", text.stdout, re.MULTILINE
    ), text.stdout

    listed = dlaas(env, "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == [
        "ID",
        "NAME",
        "FRAMEWORK",
        "STATUS",
        "SUBMITTED",
    ]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(training_id))
    assert row.split()[1:4] == ["first-job", "python:3", "COMPLETED"]

    definition = dlaas(env, "download", training_id, "--definition", cwd=tmp_path)
    assert definition.returncode == 0, definition.stderr
    default_path = tmp_path / f"{training_id}-definition.zip"
    assert definition.stdout.strip() in (default_path.name, str(default_path))
    assert zip_names(default_path) == {"manifest.yml", "train.py"}

    target = tmp_path / "model.zip"
    model = dlaas(
        env, "download", training_id, "--trainedmodel", "--filename", str(target), cwd=tmp_path
    )
    assert model.returncode == 0, model.stderr
    result_name = next(name for name in zip_names(target) if name.endswith("model.json"))
    with zipfile.ZipFile(target) as archive:
        assert json.loads(archive.read(result_name))["epochs"] == 5

    halted = dlaas(env, "halt", training_id, cwd=tmp_path)
    assert halted.stdout.strip() == f"{training_id}: COMPLETED"  # a finished job stays as it was

    deleted = dlaas(env, "delete", training_id, cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    gone = dlaas(env, "show", training_id, cwd=tmp_path)
    assert gone.returncode == 3
    assert gone.stderr.startswith("dlaas: error: ") and "Traceback" not in gone.stderr


def test_following_a_failed_job_exits_1(trainer_env, tmp_path):
    training_id = submit(trainer_env, tmp_path, "echo boom; exit 3")
    followed = dlaas(trainer_env, "logs", training_id, "--follow", cwd=tmp_path)
    assert followed.returncode == 1
    assert followed.stdout == "boom\n"
    assert followed.stderr.startswith(f"dlaas: error: training job {training_id} ended FAILED")
    assert dlaas(trainer_env, "delete", training_id, cwd=tmp_path).returncode == 0


def test_log_pages(trainer_env, tmp_path):
    training_id = submit(
        trainer_env, tmp_path, "python -c \"[print('line', i) for i in range(1, 31)]\""
    )
    assert dlaas(trainer_env, "logs", training_id, "--follow", cwd=tmp_path).returncode == 0

    def logs(*options: str) -> list[int]:
        result = dlaas(trainer_env, "logs", training_id, *options, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [int(line.split()[1]) for line in result.stdout.splitlines()]

    assert logs() == list(range(1, 31))
    assert logs("--pagesize", "5") == [1, 2, 3, 4, 5]
    assert logs("--pos", "11", "--pagesize", "3") == [11, 12, 13]
    assert logs("--pos", "28") == [28, 29, 30]
    assert logs("--pos", "-1", "--pagesize", "2") == [29, 30]
    assert logs("--since", "99999999999999") == []


def test_emetrics_follow_and_json(trainer_env, tmp_path):
    writer = (
        "import json, os\n"
        "path = os.path.join(os.environ['LOG_DIR'], 'evaluation-metrics.txt')\n"
        "with open(path, 'a') as out:\n"
        "    for i in (1, 2, 3):\n"
        "        out.write(json.dumps({'meta': {'rindex': i}, 'grouplabel': 'train',\n"
        "            'etimes': {'iteration': {'type': 'INT', 'value': str(i)}},\n"
        "            'values': {'loss': {'type': 'FLOAT', 'value': str(1 / i)}}}) + '\\n')\n"
    )
    training_id = submit(
        trainer_env,
        tmp_path,
        "python metrics.py",
        {"metrics.py": writer},
        extra="evaluation_metrics:\n  type: emetrics_file\n",
    )
    followed = dlaas(trainer_env, "emetrics", training_id, "--follow", cwd=tmp_path)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [
        "train\titeration=1\tloss=1.0",
        "train\titeration=2\tloss=0.5",
        f"train\titeration=3\tloss={1 / 3}",
    ]
    as_json = dlaas(trainer_env, "emetrics", training_id, "--json", cwd=tmp_path)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [record["meta"]["rindex"] for record in records] == ["1", "2", "3"]
    assert records[1]["values"]["loss"] == {"type": "FLOAT", "value": "0.5"}


def test_broken_pipe_is_quiet(trainer_env, tmp_path):
    command = "python -c \"[print('line %05d' % i, 'x' * 60) for i in range(5000)]\""
    training_id = submit(trainer_env, tmp_path, command)
    assert (
        dlaas(trainer_env, "logs", training_id, "--follow", cwd=tmp_path, timeout=300).returncode
        == 0
    )
    reader = start_dlaas(trainer_env, "logs", training_id, cwd=tmp_path)
    assert reader.stdout.readline().startswith("line 00000")
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(60) == 141
    assert reader.stderr.read() == ""


def test_ctrl_c_then_halt(trainer_env, tmp_path):
    training_id = submit(trainer_env, tmp_path, "echo started; sleep 120")
    follower = start_dlaas(trainer_env, "logs", training_id, "--follow", cwd=tmp_path)
    assert follower.stdout.readline() == "started\n"
    follower.send_signal(signal.SIGINT)
    assert follower.wait(30) == 130
    assert follower.stderr.read() == ""

    halted = dlaas(trainer_env, "halt", training_id, cwd=tmp_path)
    assert halted.returncode == 0, halted.stderr
    assert halted.stdout.strip() == f"{training_id}: HALTED"
    followed = dlaas(trainer_env, "logs", training_id, "--follow", cwd=tmp_path)
    assert followed.returncode == 1
    assert followed.stdout == "started\n"
    assert f"training job {training_id} ended HALTED" in followed.stderr
    assert dlaas(trainer_env, "delete", training_id, cwd=tmp_path).returncode == 0


def test_flags_override_the_environment_and_credentials_are_checked(trainer_env, tmp_path):
    training_id = submit(trainer_env, tmp_path, "true")
    # --user wins over DLAAS_USER: another user may not see the job.
    other = dlaas(trainer_env, "--user", "someone-else", "show", training_id, cwd=tmp_path)
    assert other.returncode == 4, other.stderr
    # --url wins over DLAAS_TRAINER_URL.
    url = closed_port_url()
    elsewhere = dlaas(trainer_env, "--url", url, "list", cwd=tmp_path)
    assert elsewhere.returncode == 5
    assert f"Trainer at {url} is unreachable" in elsewhere.stderr
    bad_token = dlaas({**trainer_env, "DLAAS_TRAINER_TOKEN": "wrong"}, "list", cwd=tmp_path)
    assert bad_token.returncode == 4
    assert "DLAAS_TRAINER_TOKEN" in bad_token.stderr
    assert dlaas(trainer_env, "delete", training_id, cwd=tmp_path).returncode == 0


def test_versions(trainer_env, tmp_path):
    versions = dlaas(trainer_env, "versions", cwd=tmp_path)
    assert versions.returncode == 0, versions.stderr
    rows = [line.split(None, 1) for line in versions.stdout.splitlines()]
    assert rows[0] == ["FRAMEWORK", "VERSIONS"]
    assert "python" in {row[0] for row in rows[1:]}


def test_definition_zip_round_trips(trainer_env, tmp_path):
    """A zip file given to train comes back byte for byte."""
    content = make_zip({"main.py": "print('from a zip')\n"})
    (tmp_path / "model.zip").write_bytes(content)
    trained = dlaas(trainer_env, "train", str(EXAMPLE / "manifest.yml"), "model.zip", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    training_id = trained.stdout.strip()
    out = tmp_path / "downloads"
    out.mkdir()
    downloaded = dlaas(
        trainer_env, "download", training_id, "--definition", "--filename", str(out), cwd=tmp_path
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert (out / f"{training_id}-definition.zip").read_bytes() == content
    assert dlaas(trainer_env, "delete", training_id, cwd=tmp_path).returncode == 0
    assert os.listdir(out) == [f"{training_id}-definition.zip"]
