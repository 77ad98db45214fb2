"""emit() in real training processes, read back by the Trainer's MetricsFileWatcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Notes, anys, wait_until

from dlaas_jupyter import emit
from dlaas_jupyter.emit import OUTSIDE_JOB_NOTICE
from dlaas_jupyter.trainer.metrics.emetrics_file import MetricsFileWatcher

JOB_ENV_KEYS = ("LOG_DIR", "TRAINING_ID", "LEARNER_ID")


def job_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without a job's variables, then ``env``."""
    return {**{k: v for k, v in os.environ.items() if k not in JOB_ENV_KEYS}, **env}


def run(code: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=job_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        **kwargs,
    )


def learner_env(logs: Path, learner: int) -> dict[str, str]:
    """What the Trainer sets for a learner (see trainer/workspace.py)."""
    return {
        "LOG_DIR": str(logs / f"learner-{learner}"),
        "TRAINING_ID": "training-abc",
        "LEARNER_ID": str(learner),
    }


def test_records_from_a_job_read_back_with_their_types(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    before = time.time_ns() // 1_000_000
    run(
        """
        import numpy as np
        from dlaas_jupyter import emit
        for epoch in (1, 2):
            emit("train", epoch=epoch, step=epoch * 100, loss=1 / epoch, lr=np.float32(0.5),
                 batches=np.int64(7), best=epoch == 2, phase="warmup",
                 confusion=[[1, 2], [3, 4]], config={"optimizer": "sgd"})
        emit("test", epoch=2, time=12.5, timestamp="2026-11-27T10:11:12.123Z", accuracy=0.875)
    """,
        learner_env(logs, 2),
    )
    after = time.time_ns() // 1_000_000

    notes = Notes()
    records = MetricsFileWatcher(logs, notes).poll()
    assert notes == []
    assert [(r.grouplabel, r.meta.rindex, r.meta.subid, r.meta.training_id) for r in records] == [
        ("train", 1, "learner-2", "training-abc"),
        ("train", 2, "learner-2", "training-abc"),
        ("test", 3, "learner-2", "training-abc"),
    ]
    assert all(before <= r.meta.time <= after for r in records)
    first, second, test = records
    assert anys(first.etimes) == {"epoch": ("INT", "1"), "step": ("INT", "100")}
    assert anys(first.values) == {
        "loss": ("FLOAT", "1.0"),
        "lr": ("FLOAT", "0.5"),
        "batches": ("INT", "7"),
        "best": ("JSONSTRING", "false"),
        "phase": ("STRING", "warmup"),
        "confusion": ("JSONSTRING", "[[1, 2], [3, 4]]"),
        "config": ("JSONSTRING", '{"optimizer": "sgd"}'),
    }
    assert anys(second.values)["best"] == ("JSONSTRING", "true")
    assert anys(test.etimes) == {
        "epoch": ("INT", "2"),
        "time": ("FLOAT", "12.5"),
        "timestamp": ("STRING", "2026-11-27T10:11:12.123Z"),
    }
    assert anys(test.values) == {"accuracy": ("FLOAT", "0.875")}


def test_a_restarted_script_continues_the_numbering(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    script = (
        "from dlaas_jupyter import emit\nfor i in range(3): emit('train', iteration=i, loss=0.1)"
    )
    run(script, learner_env(logs, 1))
    run(script, learner_env(logs, 1))
    records = MetricsFileWatcher(logs, Notes()).poll()
    assert [r.meta.rindex for r in records] == [1, 2, 3, 4, 5, 6]


def test_processes_emitting_at_once_get_unique_numbers(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = job_env(learner_env(logs, 1))
    script = "from dlaas_jupyter import emit\nfor i in range(300): emit('t', iteration=i, loss=1.0)"
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(4)]
    assert [p.wait(60) for p in processes] == [0, 0, 0, 0]
    notes = Notes()
    records = MetricsFileWatcher(logs, notes).poll()
    assert notes == []
    assert sorted(r.meta.rindex for r in records) == list(range(1, 1201))
    assert sorted(int(r.etimes["iteration"].value) for r in records) == sorted(list(range(300)) * 4)


def test_an_unfinished_line_left_in_the_file_does_not_swallow_the_next_record(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    (logs / "learner-1").mkdir(parents=True)
    (logs / "learner-1" / "evaluation-metrics.txt").write_text('{"meta": {"rindex": 1}, "gro')
    run("from dlaas_jupyter import emit\nemit('train', loss=0.5)", learner_env(logs, 1))
    notes = Notes()
    records = MetricsFileWatcher(logs, notes).poll()
    assert [(r.meta.rindex, r.values["loss"].value) for r in records] == [(2, "0.5")]
    assert len(notes) == 1 and "line 1 skipped: not JSON" in notes[0][1]


def test_records_appear_while_the_job_still_runs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = job_env(learner_env(logs, 1))
    script = (
        "import sys\nfrom dlaas_jupyter import emit\nemit('train', loss=0.25)\nsys.stdin.readline()"
    )
    job = subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE)
    try:
        records = wait_until("the record", MetricsFileWatcher(logs, Notes()).poll, timeout=30)
        assert job.poll() is None, "the job should still be running"
        assert [r.values["loss"].value for r in records] == ["0.25"]
    finally:
        job.communicate(b"\n", timeout=30)


def test_outside_a_job_emit_says_so_once_and_records_nothing(tmp_path: Path) -> None:
    result = run(
        """
        from dlaas_jupyter import emit
        emit("train", loss=0.5)
        emit("train", loss=0.4)
        print("still running")
    """,
        {"LOG_DIR": str(tmp_path)},
        cwd=tmp_path,
    )  # LOG_DIR alone is not a job
    assert result.stdout == "still running\n"
    assert result.stderr == OUTSIDE_JOB_NOTICE + "\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: emit(3, loss=0.5),
            "the group must be a string such as 'train' or 'test', not int",
        ),
        (lambda: emit("train"), "emit() got no values to record"),
        (lambda: emit("train", loss=object()), "loss=<object object at"),
        (lambda: emit("train", loss={1, 2}), "loss={1, 2} has type set"),
        (lambda: emit("train", epoch=True), "epoch must be int, float or str"),
        (lambda: emit("train", epoch=[1]), "epoch must be int, float or str"),
        (lambda: emit("train", shape={"a": object()}), "shape cannot be written as JSON"),
    ],
)
def test_bad_arguments_raise_type_error(call, message: str, monkeypatch, tmp_path: Path) -> None:
    for key, value in learner_env(tmp_path, 1).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TypeError) as raised:
        call()
    assert message in str(raised.value)
    assert not (tmp_path / "learner-1" / "evaluation-metrics.txt").exists()


def test_a_forked_child_emits_through_its_own_file_and_lock(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run(
        """
        import os
        from dlaas_jupyter import emit
        emit("train", loss=1.0)  # the parent's file is open before the fork
        child = os.fork()
        for i in range(300):
            emit("train", iteration=i, loss=0.5)
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        """,
        learner_env(logs, 1),
    )
    notes = Notes()
    records = MetricsFileWatcher(logs, notes).poll()
    assert notes == []
    assert sorted(r.meta.rindex for r in records) == list(range(1, 602))
