"""Real jobs on a real embedded Trainer: lifecycle, environment, capacity, limits,
halt, delete, unsafe zips, odd output, restarts and logs at volume.

Every job is a real learner process started by a real Trainer process, driven
through the raw gRPC stubs. Jobs that must wait are gated on a file the test
creates, so no test depends on how fast this machine is.
"""

from __future__ import annotations

import io
import itertools
import json
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from conftest import (
    CALL_TIMEOUT,
    SMALL_CPUS,
    TERMINAL,
    Api,
    RunningTrainer,
    job_request,
    make_zip,
    start_trainer,
    stop_trainer,
    with_data,
)

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.store import Store

FOLLOW = ("dlaas-follow", "1")
# Runs until the test creates $DATA_DIR/release.
GATED = 'echo waiting; while [ ! -e "$DATA_DIR/release" ]; do sleep 0.05; done; echo released'
TICKER = """\
import os, sys, time
print("pid", os.getpid(), flush=True)
i = 0
while True:
    try:
        print("tick", i, flush=True)
    except OSError:  # the Trainer is gone: keep running, as a stubborn learner would
        pass
    i += 1
    time.sleep(0.05)
"""


def history(trainer: RunningTrainer, tid: str) -> list[tuple[int, int, str]]:
    store = Store(trainer.data_dir / "trainer.db")
    try:
        return store.status_history(tid)
    finally:
        store.close()


def without_repeats(statuses: list[int]) -> list[int]:
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def is_gone(pid: int, created: float) -> bool:
    """The process has exited (a zombie counts: it runs nothing) or the pid is reused."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, created: float, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not is_gone(pid, created):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def submit(api: Api, data: Path) -> Callable[..., str]:
    """Create a job on the session Trainer with ``data`` as its input folder."""

    def create(command: str, files: dict | None = None, **kwargs) -> str:
        kwargs.setdefault("cpus", SMALL_CPUS)
        return api.create(with_data(job_request(command, files, **kwargs), data))

    return create


@pytest.fixture
def private(
    tmp_path_factory: pytest.TempPathFactory, user: str
) -> Iterator[Callable[..., Api]]:
    """Start Trainers of this test's own, each with an Api as the test's user;
    all are closed and stopped afterwards."""
    started: list[Api] = []

    def start(*args: str, data_dir: Path | None = None) -> Api:
        api = Api(start_trainer(data_dir or tmp_path_factory.mktemp("private"), *args), user)
        started.append(api)
        return api

    yield start
    for api in started:
        api.close()
        stop_trainer(api.trainer)


# -- lifecycle ------------------------------------------------------------------


def test_completed_job_passes_every_status_with_ordered_timestamps(api, submit, trainer):
    tid = submit("echo hello")
    job = api.wait(tid)
    assert job.status.status == pb.COMPLETED, job.status.status_message
    assert job.status.error_code in ("", "000")

    steps = history(trainer, tid)
    assert without_repeats([s for s, _, _ in steps]) == [
        pb.QUEUED, pb.PENDING, pb.DOWNLOADING, pb.PROCESSING, pb.STORING, pb.COMPLETED,
    ]
    times = [at for _, at, _ in steps]
    assert times == sorted(times)

    st = job.status
    stamps = [st.submission_timestamp, st.download_start_timestamp, st.process_start_timestamp,
              st.store_start_timestamp, st.completion_timestamp]
    assert all(s.isdecimal() for s in stamps), stamps
    ms = [int(s) for s in stamps]
    assert ms == sorted(ms)
    assert abs(ms[0] - time.time() * 1000) < 120_000  # milliseconds, not seconds or ns
    first_at = {status: at for status, at, _ in reversed(steps)}
    assert int(st.download_start_timestamp) == first_at[pb.DOWNLOADING]
    assert int(st.process_start_timestamp) == first_at[pb.PROCESSING]
    assert int(st.completion_timestamp) == first_at[pb.COMPLETED]
    assert api.texts(tid) == ["hello"]


def test_failing_command_fails_with_c201_and_its_exit_code(api, submit, trainer):
    tid = submit("echo about to fail; exit 7")
    job = api.wait(tid)
    assert job.status.status == pb.FAILED
    assert job.status.error_code == "C201"
    assert "7" in job.status.status_message, job.status.status_message
    assert job.status.completion_timestamp.isdecimal()
    assert api.texts(tid) == ["about to fail"]
    statuses = without_repeats([s for s, _, _ in history(trainer, tid)])
    assert statuses[-3:] == [pb.PROCESSING, pb.STORING, pb.FAILED]


# -- what a learner sees ------------------------------------------------------------

ENV_DUMP = """\
import json, os, sys
names = ["MODEL_DIR", "DATA_DIR", "RESULT_DIR", "LOG_DIR", "JOB_STATE_DIR", "CHECKPOINT_DIR",
         "TRAINING_ID", "TRAINING_COMMAND", "GPU_COUNT", "NUM_LEARNERS", "LEARNER_ID",
         "CUDA_VISIBLE_DEVICES", "PYTHONPATH"]
env = {name: os.environ.get(name) for name in names}
env["cwd"] = os.getcwd()
env["input"] = open(os.path.join(os.environ["DATA_DIR"], "input.txt")).read()
print("ENV " + json.dumps(env))
print("to stderr", file=sys.stderr)
"""


def env_of(api: Api, tid: str, learner: int = 1) -> dict:
    found = [json.loads(line.line[4:]) for line in api.logs(tid)
             if line.line.startswith("ENV ") and line.meta.subid == f"learner-{learner}"]
    assert len(found) == 1, api.texts(tid)
    return found[0]


def test_learner_sees_ffdl_environment(api, submit, data, trainer):
    (data / "input.txt").write_text("the input")
    # -c from another folder: only PYTHONPATH can make helper importable there.
    command = 'python env_dump.py && cd / && python -c "import helper; print(helper.MARK)"'
    files = {"env_dump.py": ENV_DUMP, "helper.py": "MARK = 'imported from the zip'\n"}
    tid = submit(command, files)
    job = api.wait(tid)
    assert job.status.status == pb.COMPLETED, (job.status.status_message, api.texts(tid))

    env = env_of(api, tid)
    job_dir = (trainer.data_dir / "jobs" / tid).resolve()
    assert env["cwd"] == env["MODEL_DIR"]
    assert Path(env["MODEL_DIR"]).resolve().parent == job_dir
    assert env["MODEL_DIR"] in env["PYTHONPATH"].split(":")
    assert env["DATA_DIR"] == str(data) and env["input"] == "the input"
    for name in ("RESULT_DIR", "LOG_DIR", "JOB_STATE_DIR", "CHECKPOINT_DIR"):
        assert Path(env[name]).resolve().is_relative_to(job_dir), (name, env[name])
        assert Path(env[name]).is_dir(), name
    names = ("MODEL_DIR", "RESULT_DIR", "LOG_DIR", "JOB_STATE_DIR", "CHECKPOINT_DIR")
    folders = [env[n] for n in names]
    assert len(set(folders)) == len(folders)
    assert Path(env["LOG_DIR"]).name == "learner-1"
    assert env["TRAINING_ID"] == tid
    assert env["TRAINING_COMMAND"] == command
    assert env["GPU_COUNT"] == "0" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["NUM_LEARNERS"] == "1" and env["LEARNER_ID"] == "1"

    texts = api.texts(tid)
    assert "to stderr" in texts  # stderr is merged into the log
    assert texts[-1] == "imported from the zip"
    log_file = Path(env["LOG_DIR"]) / "training-log.txt"
    assert "to stderr" in log_file.read_text()


def test_three_learners_log_separately_in_time_order(api, submit):
    command = (
        'echo "pid $$ learner $LEARNER_ID of $NUM_LEARNERS"; '
        'for i in 1 2 3 4 5; do echo "L$LEARNER_ID line $i"; sleep 0.02; done'
    )
    tid = submit(command, learners=3)
    job = api.wait(tid)
    assert job.status.status == pb.COMPLETED, job.status.status_message

    lines = api.logs(tid)
    times = [line.meta.time for line in lines]
    assert all(a < b for a, b in itertools.pairwise(times)), "time must strictly increase"
    pids = set()
    for n in (1, 2, 3):
        own = [line for line in lines if line.meta.subid == f"learner-{n}"]
        assert [line.meta.rindex for line in own] == list(range(1, 7))
        first = own[0].line.split()
        assert first[2:] == ["learner", str(n), "of", "3"], own[0].line
        pids.add(first[1])
        assert [line.line for line in own[1:]] == [f"L{n} line {i}" for i in range(1, 6)]
        assert all(line.meta.training_id == tid and line.meta.user_id == api.user for line in own)
    assert len(lines) == 18 and len(pids) == 3


# -- capacity -------------------------------------------------------------------------


@pytest.mark.slow
def test_job_waits_for_cpus_and_starts_when_they_free(private, data):
    api = private("--cpus", "1")
    first = api.create(with_data(job_request(GATED, cpus=1), data))
    api.wait(first, pb.PROCESSING)
    second = api.create(with_data(job_request("echo second ran", cpus=1), data))
    for _ in range(10):  # it stays queued, saying why, as long as the first runs
        job = api.job(second)
        assert job.status.status == pb.QUEUED
        time.sleep(0.05)
    message = job.status.status_message
    assert "Waiting" in message and "CPU" in message, message
    assert api.job(first).status.status == pb.PROCESSING

    (data / "release").touch()
    done_first = api.wait(first)
    done_second = api.wait(second)
    assert done_first.status.status == done_second.status.status == pb.COMPLETED
    started = int(done_second.status.process_start_timestamp)
    assert started >= int(done_first.status.completion_timestamp)
    assert api.texts(second) == ["second ran"]


def test_gpu_job_on_machine_without_gpus_fails_s100(private, data):
    api = private("--gpus", "0")
    tid = api.create(with_data(job_request("echo never", gpus=1), data))
    job = api.wait(tid)
    assert job.status.status == pb.FAILED
    assert job.status.error_code == "S100"
    assert "GPU" in job.status.status_message, job.status.status_message
    assert not job.status.process_start_timestamp


def test_gpu_job_sees_one_device(private, data):
    api = private("--gpus", "2")
    command = 'echo "gpus=$GPU_COUNT devices=$CUDA_VISIBLE_DEVICES"'
    tid = api.create(with_data(job_request(command, gpus=1), data))
    job = api.wait(tid)
    assert job.status.status == pb.COMPLETED, job.status.status_message
    [line] = api.texts(tid)
    assert line in ("gpus=1 devices=0", "gpus=1 devices=1"), line


# -- memory ---------------------------------------------------------------------------


@pytest.mark.slow
def test_job_over_its_memory_request_is_stopped(api, submit):
    # Multiplying writes every byte, so the pages are really resident.
    script = "import time\nb = bytearray(b'x') * (400 * 2**20)\ntime.sleep(60)\n"
    tid = submit("python hog.py", {"hog.py": script}, memory_mib=100)
    job = api.wait(tid, timeout=60)
    assert job.status.status == pb.FAILED
    message = job.status.status_message
    assert "more than" in message and "memory request" in message, message
    assert "100 MiB" in message, message
    # Stopped by the Trainer well before its 60 s sleep ended.
    assert int(job.status.completion_timestamp) - int(job.status.process_start_timestamp) < 30_000


# -- halt --------------------------------------------------------------------------------


def test_halting_running_job_keeps_log_and_results(api, submit):
    command = (
        'echo trained > "$RESULT_DIR/model.txt"; '
        'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.05; done'
    )
    tid = submit(command)
    api.wait_for_line(tid, "tick 2")

    reply = api.halt(tid)
    assert reply.status == pb.HALTED and reply.training_id == tid
    job = api.job(tid)
    assert job.status.status == pb.HALTED
    assert job.status.status_message == "Halted by user"
    assert job.status.error_code == "0"
    assert int(job.status.completion_timestamp) >= int(job.status.process_start_timestamp) > 0

    model = api.trained_model(tid)
    assert model.read("model.txt") == b"trained\n"
    log = model.read("learner-1/training-log.txt").decode()
    assert "tick 0\ntick 1\ntick 2\n" in log
    assert api.texts(tid)[:3] == ["tick 0", "tick 1", "tick 2"]


def test_halting_completed_job_changes_nothing(api, submit):
    tid = submit("echo done")
    before = api.wait(tid)
    assert before.status.status == pb.COMPLETED
    reply = api.halt(tid)
    assert reply.status == pb.COMPLETED
    assert api.job(tid).status == before.status


def test_halting_queued_job_never_runs_it(private, data, tmp_path):
    api = private("--cpus", "1")
    blocker = api.create(with_data(job_request(GATED, cpus=1), data))
    api.wait(blocker, pb.PROCESSING)
    marker = tmp_path / "ran"
    queued = api.create(with_data(job_request(f"touch {marker}", cpus=1), data))
    assert api.job(queued).status.status == pb.QUEUED

    assert api.halt(queued).status == pb.HALTED
    job = api.job(queued)
    assert job.status.status == pb.HALTED and job.status.status_message == "Halted by user"
    assert job.status.completion_timestamp.isdecimal()

    (data / "release").touch()
    assert api.wait(blocker).status.status == pb.COMPLETED
    time.sleep(0.3)  # the freed CPU must not start the halted job
    job = api.job(queued)
    assert job.status.status == pb.HALTED
    assert not job.status.process_start_timestamp and not job.status.download_start_timestamp
    assert {s for s, _, _ in history(api.trainer, queued)} == {pb.QUEUED, pb.HALTED}
    assert not marker.exists()


# -- delete --------------------------------------------------------------------------------


def expect_not_found(method: Callable, request: object, api: Api) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        result = method(request, metadata=api.md, timeout=CALL_TIMEOUT)
        if hasattr(result, "__next__"):
            list(result)  # a stream fails when read
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()


def test_deleting_running_job_kills_it_and_forgets_it(api, submit, trainer):
    tid = submit("python ticker.py", {"ticker.py": TICKER})
    pid = int(api.wait_for_line(tid, "pid ").line.split()[1])
    created = psutil.Process(pid).create_time()
    api.wait_for_line(tid, "tick 1")
    assert (trainer.data_dir / "jobs" / tid).is_dir()

    assert api.delete(tid).training_id == tid
    assert wait_gone(pid, created, timeout=2.0), "the learner still runs after delete"
    assert not (trainer.data_dir / "jobs" / tid).exists()

    s, ids = api.stub, {"training_id": tid, "user_id": api.user}
    query = pb.Query(meta=pb.MetaInfo(**ids))
    for method, request in (
        (s.GetTrainingJob, pb.GetRequest(**ids)),
        (s.GetTrainingStatusID, pb.GetRequest(**ids)),
        (s.HaltTrainingJob, pb.HaltRequest(**ids)),
        (s.DeleteTrainingJob, pb.DeleteRequest(**ids)),
        (s.GetModelDefinition, pb.ModelDefinitionRequest(**ids)),
        (s.GetTrainedModel, pb.TrainedModelRequest(**ids)),
        (s.GetTrainedModelLogs, pb.TrainedModelLogRequest(**ids)),
        (s.GetTrainingLogs, query),
        (s.GetTrainingEMetrics, query),
    ):
        expect_not_found(method, request, api)
    listed = s.GetAllTrainingsJobs(pb.GetAllRequest(user_id=api.user), metadata=api.md).jobs
    assert tid not in [j.training_id for j in listed]


# -- unsafe model-definition zips ------------------------------------------------------------


def zip_with(infos: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, content in infos:
            archive.writestr(info, content)
    return buffer.getvalue()


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode is in the high bits of external_attr
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


MARK = uuid.uuid4().hex[:8]
BAD_ZIPS = {
    "traversal": (make_zip({"main.py": "", f"../../evil-{MARK}.py": "x"}), f"../../evil-{MARK}.py"),
    "absolute": (make_zip({"main.py": "", f"/tmp/evil-{MARK}.py": "x"}), f"/tmp/evil-{MARK}.py"),
    "symlink": (
        zip_with([(zipfile.ZipInfo("main.py"), b""),
                  (symlink_entry(f"evil-{MARK}"), b"/etc/passwd")]),
        f"evil-{MARK}",
    ),
    "too-many-files": (make_zip({f"f{i}.txt": "" for i in range(10_001)}), "10001 entries"),
    "garbage": (b"this is not a zip \x00\xff" * 10, "not a valid zip"),
}


@pytest.mark.parametrize("kind", list(BAD_ZIPS))
def test_unsafe_zip_fails_c102_and_writes_nothing_outside(kind, api, submit, trainer, tmp_path):
    content, named = BAD_ZIPS[kind]
    marker = tmp_path / "ran"
    tid = submit(f"touch {marker}", zip_bytes=content)
    job = api.wait(tid)
    assert job.status.status == pb.FAILED
    assert job.status.error_code == "C102"
    assert named in job.status.status_message, job.status.status_message
    assert not job.status.process_start_timestamp and not marker.exists()

    model_dir = trainer.data_dir / "jobs" / tid / "model"
    assert not model_dir.exists() or not any(model_dir.iterdir())
    for root in (trainer.data_dir, tmp_path):
        assert not list(root.rglob(f"evil-{MARK}*")), root
    # Not a walk of all of /tmp: other processes create and remove folders there.
    assert not list(Path("/tmp").glob(f"evil-{MARK}*"))


# -- odd output ------------------------------------------------------------------------------

NOISY = """\
import sys
out = sys.stdout.buffer
out.write(b"before\\n")
out.write(b"\\xff\\xfe garbage \\x00\\n")
out.write(b"y" * 1_000_000 + b"\\n")
out.write(b"after\\n")
out.write(b"last line without newline")
out.flush()
"""


def test_odd_output_is_collected_whole(api, submit):
    tid = submit("python noisy.py", {"noisy.py": NOISY})
    job = api.wait(tid)
    assert job.status.status == pb.COMPLETED, job.status.status_message
    texts = api.texts(tid)
    assert len(texts) == 5, [t[:40] for t in texts]
    assert texts[0] == "before"
    assert texts[1] == "\ufffd\ufffd garbage \x00"
    assert len(texts[2]) == 1_000_000 and set(texts[2]) == {"y"}
    assert texts[3:] == ["after", "last line without newline"]
    assert [line.meta.rindex for line in api.logs(tid)] == [1, 2, 3, 4, 5]


# -- Trainer restart ----------------------------------------------------------------------------


@pytest.mark.slow
def test_restart_after_trainer_killed(private, data):
    api = private("--cpus", "1")
    command = 'echo weights > "$RESULT_DIR/weights.txt"'
    done = api.create(with_data(job_request(command, cpus=1), data))
    assert api.wait(done).status.status == pb.COMPLETED
    files = {"ticker.py": TICKER}
    command = 'sleep 600 & echo "bg $!"; exec python ticker.py'
    running = api.create(with_data(job_request(command, files, cpus=1), data))
    bg = int(api.wait_for_line(running, "bg ").line.split()[1])
    pid = int(api.wait_for_line(running, "pid ").line.split()[1])
    learners = {p: psutil.Process(p).create_time() for p in (bg, pid)}
    queued = api.create(with_data(job_request("echo ran after restart", cpus=1), data))
    api.wait_for_line(running, "tick 3")
    assert api.job(queued).status.status == pb.QUEUED
    before = api.texts(running)

    first = api.trainer
    first.process.kill()
    first.process.wait()
    time.sleep(0.3)  # the learner keeps printing into a pipe nobody reads
    assert not any(is_gone(p, created) for p, created in learners.items()), "no orphan to clean"
    api = private("--cpus", "1", data_dir=first.data_dir)
    job = api.job(running)
    assert job.status.status == pb.FAILED
    message = job.status.status_message
    assert "Trainer stopped" in message and "lost" in message, message
    assert job.status.completion_timestamp.isdecimal()
    after = api.texts(running)
    assert after[: len(before)] == before
    for p, created in learners.items():
        assert wait_gone(p, created, timeout=5.0), f"learner process {p} survived the restart"

    assert api.trained_model(done).read("weights.txt") == b"weights\n"
    ran = api.wait(queued)
    assert ran.status.status == pb.COMPLETED, ran.status.status_message
    assert api.texts(queued) == ["ran after restart"]


@pytest.mark.slow
def test_restart_kills_children_of_a_learner_whose_shell_died(private, data):
    """A learner's shell that ends (and is reaped) while its Trainer is gone
    must not leave what it started in the background running."""
    api = private()
    command = 'sleep 600 & echo "bg $!"; echo "shell $$"; sleep 2'
    tid = api.create(with_data(job_request(command, cpus=SMALL_CPUS), data))
    bg = int(api.wait_for_line(tid, "bg ").line.split()[1])
    shell = int(api.wait_for_line(tid, "shell ").line.split()[1])
    created = psutil.Process(bg).create_time()
    first = api.trainer
    try:
        first.process.kill()
        first.process.wait()
        deadline = time.monotonic() + 15
        while psutil.pid_exists(shell) and time.monotonic() < deadline:
            time.sleep(0.1)
        if psutil.pid_exists(shell):
            pytest.skip("this machine's init does not reap the dead learner shell")
        assert not is_gone(bg, created), "the background child should still run"

        assert private(data_dir=first.data_dir).job(tid).status.status == pb.FAILED
        assert wait_gone(bg, created, timeout=3.0), "the background child survived the restart"
    finally:
        if not is_gone(bg, created):
            psutil.Process(bg).kill()


# -- logs at volume ---------------------------------------------------------------------------

LINES = 100_000


@pytest.mark.slow
def test_follow_and_paging_get_every_line_of_a_chatty_job(api, submit):
    # Starts after a pause so that both readers are attached while it prints.
    command = f"sleep 0.5; python -c 'for i in range({LINES}): print(i)'"
    tid = submit(command)

    followed: list[pb.LogLine] = []
    first_line_ms: list[int] = []
    errors: list[BaseException] = []

    def follow() -> None:
        query = pb.Query(meta=pb.MetaInfo(training_id=tid, user_id=api.user), pos=1, pagesize=1000)
        try:
            for line in api.stub.GetTrainingLogs(query, metadata=[*api.md, FOLLOW], timeout=240):
                if not followed:
                    first_line_ms.append(time.time_ns() // 1_000_000)
                followed.append(line)
        except BaseException as exc:
            errors.append(exc)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()

    paged: list[pb.LogLine] = []
    pos, saw_running = 1, False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        # The status first: an empty page after a terminal status means the end.
        status = api.job(tid).status.status
        saw_running |= status == pb.PROCESSING
        page = api.page(tid, pos=pos, pagesize=1000)
        paged.extend(page)
        if page:
            pos = page[-1].meta.rindex + 1
        elif status in TERMINAL:
            break
        else:
            time.sleep(0.02)
    follower.join(240)
    assert not follower.is_alive(), "the follow stream did not end with the job"
    assert not errors, errors

    job = api.job(tid)
    assert job.status.status == pb.COMPLETED
    assert saw_running
    assert first_line_ms[0] < int(job.status.completion_timestamp), "followed a finished job"
    expected = [str(i) for i in range(LINES)]
    for name, got in (("follow", followed), ("paged", paged)):
        assert [line.line for line in got] == expected, name
        assert [line.meta.rindex for line in got] == list(range(1, LINES + 1)), name


def test_zip_bomb_over_the_configured_limit_fails_c102(private, data):
    """A small zip that unpacks past --max-zip-bytes (a bomb) never lands on disk."""
    api = private("--max-zip-bytes", "1000000", "--max-zip-files", "50")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", "")
        archive.writestr("bomb.bin", b"\0" * 5_000_000)
    bomb = buffer.getvalue()
    assert len(bomb) < 20_000
    tid = api.create(with_data(job_request("true", zip_bytes=bomb, cpus=SMALL_CPUS), data))
    job = api.wait(tid)
    assert job.status.status == pb.FAILED
    assert job.status.error_code == "C102"
    assert "bomb.bin" in job.status.status_message, job.status.status_message
    assert not list(api.trainer.data_dir.glob(f"jobs/{tid}/model/bomb.bin"))
