"""LocalProcessBackend with real processes: output, exit codes, stopping trees, orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import wait_until

from dlaas_jupyter.trainer.backends import load_backend
from dlaas_jupyter.trainer.backends.local import LocalProcess, LocalProcessBackend

ENV = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}


OUTPUTS: dict[int, Path] = {}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., LocalProcess]]:
    """Starts learners in tmp_path, each with an output file of its own; kills them afterwards."""
    backend = LocalProcessBackend()
    launched: list[LocalProcess] = []

    def start(command: str, env: dict[str, str] | None = None) -> LocalProcess:
        output = tmp_path / f"output-{len(launched)}.txt"
        proc = backend.launch(command, cwd=tmp_path, env=ENV if env is None else env, output=output)
        OUTPUTS[id(proc)] = output
        launched.append(proc)
        return proc

    yield start
    for proc in launched:
        proc.stop(grace=0)


def read_all(proc: LocalProcess) -> str:
    """The whole output, once the learner has exited."""
    proc.wait(10)
    return OUTPUTS[id(proc)].read_text()


def read_line(proc: LocalProcess) -> str:
    """The first line of output, waiting for it to be written."""
    output = OUTPUTS[id(proc)]
    wait_until("a line of output", lambda: "\n" in output.read_text(), timeout=10)
    return output.read_text().split("\n", 1)[0].strip()


def is_dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie nobody reaped (this container's init does not reap orphans)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stdout_and_stderr_arrive_merged_in_order(launch) -> None:
    proc = launch("echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2")
    assert read_all(proc).splitlines() == ["out-1", "err-1", "out-2", "err-2"]
    assert proc.wait(10) == 0


def test_runs_in_cwd_with_exactly_the_given_env(launch, tmp_path: Path) -> None:
    proc = launch('pwd; echo "FOO=$FOO"; echo "HOME=${HOME-unset}"', env={"FOO": "bar"})
    assert read_all(proc).splitlines() == [str(tmp_path), "FOO=bar", "HOME=unset"]
    assert proc.wait(10) == 0


def test_stdin_is_empty(launch) -> None:
    proc = launch("cat; echo done")
    assert read_all(proc) == "done\n"


@pytest.mark.parametrize(
    ("command", "code"),
    [("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137), ("kill -TERM $$", 143)],
)
def test_exit_codes_follow_the_shell_convention(launch, command: str, code: int) -> None:
    proc = launch(command)
    assert proc.wait(10) == code
    assert proc.poll() == code


def test_poll_is_none_while_running(launch) -> None:
    proc = launch("sleep 30")
    assert proc.poll() is None
    assert proc.stop(grace=5) == 143


def test_wait_times_out(launch) -> None:
    proc = launch("sleep 30")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)


def test_handle_is_json_and_names_the_process(launch) -> None:
    proc = launch("sleep 30")
    handle = json.loads(json.dumps(proc.handle))
    real = psutil.Process(handle["pid"])
    assert handle["pgid"] == os.getpgid(handle["pid"]) == handle["pid"]
    assert handle["pgid"] != os.getpgid(0)
    assert abs(real.create_time() - handle["create_time"]) < 0.01


def test_stop_kills_a_tree_that_ignores_sigterm(launch) -> None:
    script = """
trap '' TERM
sh -c 'sleep 60 & wait' &
sleep 60 &
echo ready
wait
"""
    proc = launch(script)
    assert read_line(proc) == "ready"
    leader = psutil.Process(proc.handle["pid"])
    wait_until("the tree to start", lambda: len(leader.children(recursive=True)) >= 3, timeout=10)
    tree = [leader, *leader.children(recursive=True)]

    started = time.monotonic()
    code = proc.stop(grace=1.0)
    elapsed = time.monotonic() - started

    assert code == 137
    assert 1.0 <= elapsed <= 2.0
    wait_until("the tree to die", lambda: all(is_dead(p) for p in tree), timeout=1.0)
    assert proc.stop(grace=1.0) == 137  # idempotent, and quick
    assert read_all(proc) == "ready\n"


def test_stop_of_a_cooperative_process_is_quick(launch) -> None:
    proc = launch("sleep 60")
    started = time.monotonic()
    assert proc.stop(grace=10) == 143
    assert time.monotonic() - started < 2


def test_stop_reaches_children_left_behind_by_an_exited_shell(launch) -> None:
    proc = launch("sleep 60 & echo $!")
    orphan = psutil.Process(int(read_line(proc)))
    assert proc.wait(10) == 0
    assert orphan.is_running() and not is_dead(orphan)
    assert proc.stop(grace=5) == 0  # the learner's own exit code stands
    wait_until("the orphan to die", lambda: is_dead(orphan), timeout=2)


def test_memory_bytes_counts_the_tree(launch) -> None:
    allocate = "data = b'x' * (200 * 2**20); print('ready'); import time; time.sleep(60)"
    proc = launch(f'{sys.executable} -c "{allocate}"; true')  # '; true' keeps the shell as parent
    before = proc.memory_bytes()
    assert read_line(proc) == "ready"
    after = proc.memory_bytes()
    assert after >= 200 * 2**20
    assert after - before >= 150 * 2**20
    proc.stop(grace=5)
    assert proc.memory_bytes() == 0


def test_kill_orphan_kills_a_live_group(launch) -> None:
    proc = launch("sh -c 'sleep 60' & sleep 60")
    leader = psutil.Process(proc.handle["pid"])
    wait_until("the tree to start", lambda: len(leader.children(recursive=True)) >= 3, timeout=10)
    tree = [leader, *leader.children(recursive=True)]
    handle = json.loads(json.dumps(proc.handle))

    restarted = load_backend("local")  # a new Trainer knows only the stored handle
    assert restarted.kill_orphan(handle) is True
    assert proc.wait(5) == 137
    wait_until("the tree to die", lambda: all(is_dead(p) for p in tree), timeout=2)
    assert restarted.kill_orphan(handle) is False  # reaped now: nothing to kill


def test_kill_orphan_refuses_a_different_process_with_the_same_pid(launch) -> None:
    proc = launch("sleep 60")
    handle = dict(proc.handle, create_time=proc.handle["create_time"] - 5.0)
    assert LocalProcessBackend().kill_orphan(handle) is False
    time.sleep(0.2)
    assert proc.poll() is None


def test_kill_orphan_rejects_a_malformed_handle() -> None:
    with pytest.raises(ValueError, match="not a local learner handle"):
        LocalProcessBackend().kill_orphan({"pid": 1})


def test_load_backend() -> None:
    assert isinstance(load_backend("local"), LocalProcessBackend)
    assert load_backend("local").name == "local"
    with pytest.raises(ValueError, match=r"unknown back end 'k8s'; known back ends: local"):
        load_backend("k8s")


def test_launch_in_a_missing_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        LocalProcessBackend().launch("true", cwd=missing, env=ENV, output=tmp_path / "out.txt")
