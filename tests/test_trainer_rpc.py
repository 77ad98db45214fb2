"""Every Trainer RPC on the wire, with the raw generated stubs against a real Trainer.

No project client is involved: these tests pin what any gRPC client of the
embedded Trainer sees (FfDL's codes and messages, and where we do better).
"""

from __future__ import annotations

import functools
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from conftest import (
    Api,
    RunningTrainer,
    job_request,
    make_zip,
    start_trainer,
    stop_trainer,
    wait_until,
    with_data,
)

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc

DEADLINE = 20.0
PERMISSION = "User does not have permission to read training data"
FOLLOW = ("dlaas-follow", "1")
# Small, so test jobs never queue behind each other on a two-core machine.
CPUS = 0.1
# Makes a job wait, still PROCESSING, until the test creates this file in its DATA_DIR.
GATE = 'while [ ! -e "$DATA_DIR/go" ]; do sleep 0.01; done'


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub(trainer: RunningTrainer) -> Iterator[pb_grpc.TrainerStub]:
    with grpc.insecure_channel(trainer.target) as channel:
        yield pb_grpc.TrainerStub(channel)


def request_for(data_dir: Path, command: str, **kwargs) -> pb.CreateRequest:
    """A valid CreateRequest whose input datastore is ``data_dir``."""
    kwargs.setdefault("cpus", CPUS)
    return with_data(job_request(command, **kwargs), data_dir)


def query(tid: str, user: str, **fields) -> pb.Query:
    return pb.Query(meta=pb.MetaInfo(training_id=tid, user_id=user), **fields)


def log_lines(stub, trainer: RunningTrainer, q: pb.Query) -> list[pb.LogLine]:
    return list(stub.GetTrainingLogs(q, metadata=trainer.metadata, timeout=DEADLINE))


def wait_logged(api: Api, tid: str, line: str) -> None:
    """Wait until the job's stored log contains ``line``."""
    wait_until(f"{tid} to log {line!r}", lambda: line in [r.line for r in api.page(tid)], DEADLINE)


def download(stub, trainer: RunningTrainer, name: str, user: str, tid: str) -> bytes:
    """The bytes the streaming RPC ``name`` sends for job ``tid``."""
    return b"".join(c.data for c in call_job(stub, trainer, name, user, tid))


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The error ``call`` fails with; streams are read to the end to surface it."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return caught.value


# Every RPC that names a job, with the request it takes for job ``training_id`` of ``user_id``.
JOB_REQUESTS: dict[str, Callable[..., object]] = {
    "GetTrainingJob": pb.GetRequest,
    "GetTrainingStatusID": pb.GetRequest,
    "HaltTrainingJob": pb.HaltRequest,
    "ResumeTrainingJob": pb.ResumeRequest,
    "DeleteTrainingJob": pb.DeleteRequest,
    "UpdateTrainingJob": functools.partial(
        pb.UpdateRequest, status=pb.FAILED, status_message="taken"
    ),
    "GetModelDefinition": pb.ModelDefinitionRequest,
    "GetTrainedModel": pb.TrainedModelRequest,
    "GetTrainedModelLogs": pb.TrainedModelLogRequest,
    "GetTrainingLogs": lambda training_id, user_id: query(training_id, user_id),
    "GetTrainingEMetrics": lambda training_id, user_id: query(training_id, user_id),
}


def call_job(stub, trainer: RunningTrainer, name: str, user: str, tid: str) -> Any:
    """Call the RPC ``name`` on job ``tid`` as ``user``."""
    request = JOB_REQUESTS[name](training_id=tid, user_id=user)
    return getattr(stub, name)(request, metadata=trainer.metadata, timeout=DEADLINE)


# -- jobs: create, read, list, update, halt, delete -----------------------------------------


def test_finished_job_through_every_read_rpc(api, stub, trainer, user, tmp_path) -> None:
    content = make_zip({"main.py": "print('hello from main')\n", "blob.bin": bytes(range(256))})
    tid = api.create(request_for(
        tmp_path, "python main.py && printf weights > $RESULT_DIR/model.bin",
        name="finished", zip_bytes=content,
    ))
    assert re.fullmatch(r"training-[0-9A-Za-z_-]{9}", tid)

    job = api.wait(tid)
    assert (job.training_id, job.user_id, job.model_definition.name) == (tid, user, "finished")
    assert job.status.status == pb.COMPLETED, job.status.status_message
    stamps = [
        job.status.submission_timestamp,
        job.status.download_start_timestamp,
        job.status.process_start_timestamp,
        job.status.store_start_timestamp,
        job.status.completion_timestamp,
    ]
    assert all(s.isdigit() for s in stamps) and [int(s) for s in stamps] == sorted(
        int(s) for s in stamps
    )
    status = call_job(stub, trainer, "GetTrainingStatusID", user, tid)
    assert status.status == pb.COMPLETED

    definition = download(stub, trainer, "GetModelDefinition", user, tid)
    assert definition == content

    with api.trained_model(tid) as archive:
        assert archive.testzip() is None
        assert archive.read("model.bin") == b"weights"
        assert archive.read("learner-1/training-log.txt") == b"hello from main\n"

    raw_log = download(stub, trainer, "GetTrainedModelLogs", user, tid)
    assert raw_log == b"hello from main\n"

    lines = log_lines(stub, trainer, query(tid, user))
    assert [(r.line, r.meta.rindex, r.meta.subid) for r in lines] == [
        ("hello from main", 1, "learner-1")
    ]
    assert (lines[0].meta.training_id, lines[0].meta.user_id) == (tid, user)
    assert list(call_job(stub, trainer, "GetTrainingEMetrics", user, tid)) == []

    # Better than FfDL: halting a finished job changes nothing and says so.
    halted = api.halt(tid)
    assert (halted.training_id, halted.user_id, halted.status) == (tid, user, pb.COMPLETED)
    assert api.job(tid) == job

    err = rpc_error(lambda: call_job(stub, trainer, "ResumeTrainingJob", user, tid))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_get_all_lists_only_own_jobs_oldest_first(api, stub, trainer, user, tmp_path) -> None:
    mine = []
    with Api(trainer, user + "-other") as other:
        for n in range(3):
            mine.append(api.create(request_for(tmp_path, "true", name=f"mine-{n}")))
            other.create(request_for(tmp_path, "true", name=f"theirs-{n}"))
    reply = stub.GetAllTrainingsJobs(
        pb.GetAllRequest(user_id=user), metadata=trainer.metadata, timeout=DEADLINE
    )
    assert [j.training_id for j in reply.jobs] == mine
    assert [j.model_definition.name for j in reply.jobs] == ["mine-0", "mine-1", "mine-2"]
    assert {j.user_id for j in reply.jobs} == {user}
    for tid in mine:
        api.wait(tid)


def test_halt_keeps_what_the_job_wrote(api, user, tmp_path) -> None:
    tid = api.create(request_for(
        tmp_path, "printf partial > $RESULT_DIR/partial.bin; echo ready; sleep 60"
    ))
    wait_logged(api, tid, "ready")

    started = time.monotonic()
    reply = api.halt(tid)
    assert time.monotonic() - started < 5
    assert (reply.training_id, reply.user_id, reply.status) == (tid, user, pb.HALTED)
    job = api.job(tid)
    assert job.status.status == pb.HALTED
    assert (job.status.status_message, job.status.error_code) == ("Halted by user", "0")
    assert job.status.completion_timestamp.isdigit()

    with api.trained_model(tid) as archive:
        assert archive.read("partial.bin") == b"partial"
        assert archive.read("learner-1/training-log.txt") == b"ready\n"


def test_update_changes_status_until_terminal(api, stub, trainer, user, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, "sleep 60"))
    api.wait(tid, pb.PROCESSING)

    def update(status: int, message: str, **fields) -> pb.UpdateResponse:
        request = pb.UpdateRequest(
            training_id=tid, user_id=user, status=status, status_message=message, **fields
        )
        return stub.UpdateTrainingJob(request, metadata=trainer.metadata, timeout=DEADLINE)

    try:
        assert update(pb.PROCESSING, "epoch 3 of 10").training_id == tid
        job = api.job(tid)
        assert (job.status.status, job.status.status_message) == (pb.PROCESSING, "epoch 3 of 10")

        update(pb.FAILED, "the node went away", error_code="S104", timestamp="1700000000123")
        job = api.job(tid)
        assert job.status.status == pb.FAILED
        assert (job.status.status_message, job.status.error_code) == ("the node went away", "S104")
        assert job.status.completion_timestamp == "1700000000123"

        err = rpc_error(lambda: update(pb.PROCESSING, "back to life"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "FAILED" in err.details()
        assert api.job(tid) == job
    finally:
        api.delete(tid)


def test_update_to_a_terminal_status_ends_the_job(api, stub, trainer, user, tmp_path) -> None:
    command = f"echo $$ > $DATA_DIR/pid; echo one; {GATE}; echo two"
    tid = api.create(request_for(tmp_path, command))
    wait_logged(api, tid, "one")
    learner = psutil.Process(int((tmp_path / "pid").read_text()))

    request = pb.UpdateRequest(
        training_id=tid, user_id=user, status=pb.FAILED, status_message="lost the node",
        error_code="S104",
    )
    stub.UpdateTrainingJob(request, metadata=trainer.metadata, timeout=DEADLINE)
    # The learner is gone by the time the reply comes, so nothing can overwrite the status.
    assert not learner.is_running() or learner.status() == psutil.STATUS_ZOMBIE
    (tmp_path / "go").touch()
    job = api.job(tid)
    assert job.status.status == pb.FAILED
    assert (job.status.status_message, job.status.error_code) == ("lost the node", "S104")
    assert [r.line for r in log_lines(stub, trainer, query(tid, user))] == ["one"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"status": 3}, "status 3"), ({"status": pb.PROCESSING, "timestamp": "soon"}, "'soon'")],
    ids=["undefined-status", "bad-timestamp"],
)
def test_update_with_bad_values_is_invalid(
    stub, trainer, owner, running_job, fields, message
) -> None:
    tid = running_job.training_id
    request = pb.UpdateRequest(training_id=tid, user_id=OWNER, **fields)
    err = rpc_error(
        lambda: stub.UpdateTrainingJob(request, metadata=trainer.metadata, timeout=DEADLINE)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.details()
    assert owner.job(tid) == running_job


def test_delete_removes_the_job_everywhere(api, stub, trainer, user, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, "echo logged; printf w > $RESULT_DIR/model.bin"))
    assert api.wait(tid).status.status == pb.COMPLETED
    job_files = trainer.data_dir / "jobs" / tid
    assert (job_files / "results" / "model.bin").is_file()

    assert api.delete(tid).training_id == tid
    for name in JOB_REQUESTS:
        err = rpc_error(functools.partial(call_job, stub, trainer, name, user, tid))
        assert err.code() == grpc.StatusCode.NOT_FOUND, name
    listed = stub.GetAllTrainingsJobs(
        pb.GetAllRequest(user_id=user), metadata=trainer.metadata, timeout=DEADLINE
    )
    assert list(listed.jobs) == []
    assert not job_files.exists()


def test_delete_stops_a_running_job(api, trainer, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, "echo ready; sleep 60"))
    wait_logged(api, tid, "ready")
    api.delete(tid)
    err = rpc_error(lambda: api.job(tid))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert not (trainer.data_dir / "jobs" / tid).exists()


def test_get_versions_lists_this_python(stub, trainer) -> None:
    reply = stub.GetVersions(pb.GetVersionsRequest(), metadata=trainer.metadata, timeout=DEADLINE)
    python = reply.frameworks["python"].versions
    assert platform.python_version() in [v.version for v in python]
    assert all(v.external for f in reply.frameworks.values() for v in f.versions)


# -- CreateTrainingJob validation -----------------------------------------------------------


def _clear(field: str) -> Callable[[pb.CreateRequest], None]:
    """A mutation clearing ``field`` (a dotted path) of a CreateRequest."""
    *parents, name = field.split(".")

    def mutate(request: pb.CreateRequest) -> None:
        message = request
        for parent in parents:
            message = getattr(message, parent)
        message.ClearField(name)

    return mutate


def _append(field: str, value: str) -> Callable[[pb.CreateRequest], None]:
    return lambda request: getattr(request.training, field).append(value)


def _replace(field: str, value: str) -> Callable[[pb.CreateRequest], None]:
    def mutate(request: pb.CreateRequest) -> None:
        refs = getattr(request.training, field)
        del refs[:]
        refs.append(value)

    return mutate


# FfDL's checks in FfDL's order: (what breaks the request, the message it gets).
VALIDATION: list[tuple[str, Callable[[pb.CreateRequest], None], str]] = [
    ("user_id", _clear("user_id"), "UserId is nil"),
    ("model_definition", _clear("model_definition"), "Model definition is not set"),
    ("model_name", _clear("model_definition.name"), "Model definition name is not set"),
    ("framework", _clear("model_definition.framework"), "Framework is not set"),
    ("framework_name", _clear("model_definition.framework.name"), "Framework name is not set"),
    (
        "framework_version",
        _clear("model_definition.framework.version"),
        "Framework version is not set",
    ),
    ("content", _clear("model_definition.content"), "Model definition content is not set"),
    ("training", _clear("training"), "Training is not set"),
    ("command", _clear("training.command"), "Training command is not set"),
    ("input_data", _clear("training.input_data"), "Training input data is not set"),
    ("two_inputs", _append("input_data", "d"), "Training input data can only contain one id"),
    (
        "two_outputs",
        lambda r: r.training.output_data.extend(["d", "d"]),
        "Training output data can only contain one id",
    ),
    ("datastores", _clear("datastores"), "Data stores is not set"),
    (
        "input_reference",
        _replace("input_data", "nowhere"),
        "Training input data reference 'nowhere' does not reference an existing datastore id.",
    ),
    (
        "output_reference",
        _replace("output_data", "nowhere"),
        "Training output data reference 'nowhere' does not reference an existing datastore id.",
    ),
]


@pytest.mark.parametrize("index", range(len(VALIDATION)), ids=[v[0] for v in VALIDATION])
def test_create_validation_errors_in_ffdl_order(stub, trainer, user, tmp_path, index) -> None:
    _, mutate, message = VALIDATION[index]

    def refusal(request: pb.CreateRequest) -> grpc.RpcError:
        return rpc_error(
            lambda: stub.CreateTrainingJob(request, metadata=trainer.metadata, timeout=DEADLINE)
        )

    # This one problem alone.
    request = request_for(tmp_path, "true", user_id=user)
    mutate(request)
    err = refusal(request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)

    # This problem together with every later one: FfDL's order decides which is reported.
    request = request_for(tmp_path, "true", user_id=user)
    for _, later, _ in reversed(VALIDATION[index:]):
        later(request)
    err = refusal(request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)

    listed = stub.GetAllTrainingsJobs(
        pb.GetAllRequest(user_id=user), metadata=trainer.metadata, timeout=DEADLINE
    )
    assert list(listed.jobs) == []


# -- ownership and unknown ids --------------------------------------------------------------

OWNER = "u-rpc-owner"


@pytest.fixture(scope="module")
def owner(trainer) -> Iterator[Api]:
    with Api(trainer, OWNER) as client:
        yield client


@pytest.fixture(scope="module")
def running_job(owner, tmp_path_factory) -> Iterator[pb.Job]:
    """A job of OWNER that stays PROCESSING for the module's tests."""
    tid = owner.create(request_for(tmp_path_factory.mktemp("owned"), "echo up; sleep 120"))
    wait_logged(owner, tid, "up")
    yield owner.wait(tid, pb.PROCESSING)
    owner.delete(tid)


@pytest.mark.parametrize("name", JOB_REQUESTS)
def test_another_user_is_refused(stub, trainer, owner, running_job, name) -> None:
    tid = running_job.training_id
    err = rpc_error(lambda: call_job(stub, trainer, name, "u-rpc-intruder", tid))
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, PERMISSION)
    assert owner.job(tid) == running_job


@pytest.mark.parametrize("name", JOB_REQUESTS)
def test_unknown_id_is_not_found(stub, trainer, name) -> None:
    err = rpc_error(lambda: call_job(stub, trainer, name, OWNER, "training-unknown00"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "training-unknown00" in err.details()


# -- authentication -------------------------------------------------------------------------

CALLS_WITHOUT_JOB: dict[str, Callable[[pb_grpc.TrainerStub, list], object]] = {
    "unary": lambda s, md: s.GetVersions(pb.GetVersionsRequest(), metadata=md, timeout=DEADLINE),
    "streaming": lambda s, md: s.GetTrainingLogs(
        query("training-unknown00", OWNER), metadata=md, timeout=DEADLINE
    ),
}


@pytest.mark.parametrize("kind", CALLS_WITHOUT_JOB)
@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Bearer not-the-token")], [("authorization", "not-the-token")]],
    ids=["no-token", "wrong-token", "no-bearer"],
)
def test_calls_without_the_token_are_unauthenticated(stub, kind, metadata) -> None:
    err = rpc_error(lambda: CALLS_WITHOUT_JOB[kind](stub, metadata))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in err.details()


def test_no_auth_trainer_accepts_calls_without_a_token(tmp_path) -> None:
    private = start_trainer(tmp_path / "trainer", "--no-auth")
    try:
        with grpc.insecure_channel(private.target) as channel:
            open_stub = pb_grpc.TrainerStub(channel)
            assert open_stub.GetVersions(pb.GetVersionsRequest(), timeout=DEADLINE).frameworks
            request = request_for(tmp_path, "echo open", user_id="u-open")
            tid = open_stub.CreateTrainingJob(request, timeout=DEADLINE).training_id
            # Following ends with the job, so the Get after it sees it finished.
            follow = open_stub.GetTrainingLogs(
                query(tid, "u-open"), metadata=[FOLLOW], timeout=DEADLINE
            )
            assert [r.line for r in follow] == ["open"]
            get_request = pb.GetRequest(training_id=tid, user_id="u-open")
            job = open_stub.GetTrainingJob(get_request, timeout=DEADLINE).job
            assert job.status.status == pb.COMPLETED
    finally:
        stop_trainer(private)


# -- Query paging -----------------------------------------------------------------------------

PAGED = "u-rpc-paged"
PAGED_LINES = 95


@pytest.fixture(scope="module")
def numbered_job(trainer, tmp_path_factory) -> str:
    """A finished job that printed 'line 1' ... 'line 95'."""
    command = f'for i in $(seq 1 {PAGED_LINES}); do echo "line $i"; done'
    with Api(trainer, PAGED) as paged:
        tid = paged.create(request_for(tmp_path_factory.mktemp("paged"), command))
        assert paged.wait(tid).status.status == pb.COMPLETED
    return tid


def numbers(records: list[pb.LogLine]) -> list[int]:
    """The printed numbers, checking each record's rindex matches its line."""
    assert all(r.line == f"line {r.meta.rindex}" for r in records), records
    return [r.meta.rindex for r in records]


@pytest.mark.parametrize(
    ("pos", "pagesize", "expected"),
    [
        (0, 0, range(1, 11)),
        (0, 30, range(1, 31)),
        (1, 10, range(1, 11)),
        (41, 20, range(41, 61)),
        (90, 20, range(90, 96)),
        (96, 10, range(0)),
        (-1, 20, range(76, 96)),
        (-1, 0, range(86, 96)),
        (-1, 200, range(1, 96)),
    ],
)
def test_query_pages(stub, trainer, numbered_job, pos, pagesize, expected) -> None:
    records = log_lines(stub, trainer, query(numbered_job, PAGED, pos=pos, pagesize=pagesize))
    assert numbers(records) == list(expected)
    assert all(
        (r.meta.training_id, r.meta.user_id, r.meta.subid) == (numbered_job, PAGED, "learner-1")
        for r in records
    )
    times = [r.meta.time for r in records]
    assert times == sorted(set(times))


def test_query_since_gives_records_from_that_time(stub, trainer, numbered_job) -> None:
    everything = log_lines(stub, trainer, query(numbered_job, PAGED, pagesize=1000))
    assert numbers(everything) == list(range(1, PAGED_LINES + 1))
    since = str(everything[49].meta.time)
    records = log_lines(stub, trainer, query(numbered_job, PAGED, since=since, pagesize=1000))
    assert numbers(records) == list(range(50, PAGED_LINES + 1))
    records = log_lines(stub, trainer, query(numbered_job, PAGED, since=since))
    assert numbers(records) == list(range(50, 60))


def test_query_subid_selects_a_learner(stub, trainer, numbered_job) -> None:
    q = query(numbered_job, PAGED, pagesize=5)
    q.meta.subid = "learner-1"
    assert numbers(log_lines(stub, trainer, q)) == [1, 2, 3, 4, 5]
    q.meta.subid = "learner-2"
    assert log_lines(stub, trainer, q) == []


@pytest.mark.parametrize("call", ["GetTrainingLogs", "GetTrainingEMetrics"])
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"searchType": pb.Query.NESTED}, "search type not supported: NESTED"),
        ({"searchType": pb.Query.ALL}, "search type not supported: ALL"),
        ({"since": "yesterday"}, "since"),
        ({"pagesize": -1}, "pagesize"),
    ],
    ids=["nested", "all", "bad-since", "negative-pagesize"],
)
def test_bad_queries_are_invalid(stub, trainer, numbered_job, call, fields, message) -> None:
    q = query(numbered_job, PAGED, **fields)
    err = rpc_error(lambda: getattr(stub, call)(q, metadata=trainer.metadata, timeout=DEADLINE))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.details()


# -- following a running job ------------------------------------------------------------------


def test_logs_follow_with_metadata_until_the_job_ends(api, stub, trainer, user, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, f"echo one; {GATE}; echo two; echo three"))
    wait_logged(api, tid, "one")

    # Without the metadata: one page, at once, although the job still runs.
    started = time.monotonic()
    assert [r.line for r in log_lines(stub, trainer, query(tid, user))] == ["one"]
    assert time.monotonic() - started < 2

    stream = stub.GetTrainingLogs(
        query(tid, user), metadata=[*trainer.metadata, FOLLOW], timeout=DEADLINE
    )
    first = next(stream)
    assert first.line == "one"
    assert api.job(tid).status.status == pb.PROCESSING
    (tmp_path / "go").touch()
    rest = list(stream)
    assert [r.line for r in rest] == ["two", "three"]
    assert [r.meta.rindex for r in rest] == [2, 3]
    # The stream ended because the job did.
    assert api.job(tid).status.status == pb.COMPLETED


def test_follow_by_position_continues_after_the_page(api, stub, trainer, user, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, f"seq 1 5; {GATE}; seq 6 8"))
    wait_logged(api, tid, "5")
    stream = stub.GetTrainingLogs(
        query(tid, user, pos=4, pagesize=1), metadata=[*trainer.metadata, FOLLOW], timeout=DEADLINE
    )
    assert [next(stream).line for _ in range(2)] == ["4", "5"]
    (tmp_path / "go").touch()
    assert [r.line for r in stream] == ["6", "7", "8"]


def test_raw_log_follow_streams_until_the_job_ends(api, stub, trainer, user, tmp_path) -> None:
    tid = api.create(request_for(tmp_path, f"echo one; {GATE}; echo two; echo three"))
    wait_logged(api, tid, "one")
    assert download(stub, trainer, "GetTrainedModelLogs", user, tid) == b"one\n"

    request = pb.TrainedModelLogRequest(training_id=tid, user_id=user, follow=True)
    stream = stub.GetTrainedModelLogs(request, metadata=trainer.metadata, timeout=DEADLINE)
    assert next(stream).data == b"one\n"
    assert api.job(tid).status.status == pb.PROCESSING
    (tmp_path / "go").touch()
    assert b"".join(c.data for c in stream) == b"two\nthree\n"
    assert api.job(tid).status.status == pb.COMPLETED
