"""Interoperability with FfDL itself: stubs generated from FfDL's own
trainer.proto drive the embedded Trainer through every RPC of FfDL's service.

FfDL's code is not part of this repository: point FFDL_TRAINER_PROTO at FfDL's
trainer/trainer/grpc_trainer_v2/trainer.proto to run this test. The FfDL stubs
run in a child interpreter (this file run as a script), because protobuf's
default descriptor pool holds one definition per symbol and ours, with the
same package and names, is already loaded in the test process.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

if TYPE_CHECKING:
    from conftest import RunningTrainer

ENV = "FFDL_TRAINER_PROTO"
# The stubs' module names, distinct from our own trainer_pb2.
STUBS = "ffdl_trainer"

pytestmark = pytest.mark.skipif(
    not os.environ.get(ENV), reason="set FFDL_TRAINER_PROTO to FfDL's trainer.proto to run"
)


@pytest.fixture
def ffdl_stubs(tmp_path: Path) -> Path:
    """FfDL's trainer.proto compiled to ffdl_trainer_pb2(_grpc).py; returns their folder."""
    source = Path(os.environ[ENV])
    if not source.is_file():
        pytest.fail(f"{ENV}={source} is not a file")
    out = tmp_path / "ffdl-stubs"
    out.mkdir()
    shutil.copyfile(source, out / f"{STUBS}.proto")
    args = [
        "protoc",
        f"-I{out}",
        # Files it imports: its own siblings, and google/protobuf/* from grpc_tools.
        f"-I{source.parent}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={out / 'descriptor.pb'}",
        str(out / f"{STUBS}.proto"),
    ]
    assert protoc.main(args) == 0, f"protoc could not compile {source}"
    return out


def _ffdl_methods(stubs: Path) -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString((stubs / "descriptor.pb").read_bytes())
    (service,) = [s for s in files.file[0].service if s.name == "Trainer"]
    return {m.name for m in service.method}


def test_ffdl_stubs_drive_every_rpc(
    trainer: RunningTrainer, user: str, ffdl_stubs: Path, tmp_path: Path
) -> None:
    store = tmp_path / "datastore"
    (store / "input").mkdir(parents=True)
    python_path = os.pathsep.join(filter(None, [str(ffdl_stubs), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, __file__, trainer.url, trainer.token, user, str(store)],
        env={**os.environ, "PYTHONPATH": python_path},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"FfDL client failed:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    exercised = {line.removeprefix("ok ") for line in lines if line.startswith("ok ")}
    assert exercised == _ffdl_methods(ffdl_stubs)


# --- the FfDL client, run in the child interpreter ---------------------------------
# It cannot import conftest (its make_zip, wait_until): that loads our own
# trainer_pb2, whose symbols would clash with FfDL's stubs.

T = TypeVar("T")

TRAIN_SH = """\
echo "step 1 loss 0.5"
echo "step 2 loss 0.25"
mkdir -p "$RESULT_DIR"
echo weights > "$RESULT_DIR/model.txt"
"""


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _wait_for(
    what: str, fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 60
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value}")
        time.sleep(0.1)


class _FfdlClient:
    """Calls the Trainer through FfDL's stubs and notes which RPCs answered."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self.pb = importlib.import_module(f"{STUBS}_pb2")
        self._stub = importlib.import_module(f"{STUBS}_pb2_grpc").TrainerStub(channel)
        self._methods = self.pb.DESCRIPTOR.services_by_name["Trainer"].methods_by_name
        self._metadata = [("authorization", f"Bearer {token}")]
        self._seen: set[str] = set()

    def call(self, method: str, request: Any) -> Any:
        answer = getattr(self._stub, method)(request, metadata=self._metadata, timeout=30)
        if self._methods[method].server_streaming:
            answer = list(answer)
        self._note(method)
        return answer

    def refusal(self, method: str, request: Any) -> grpc.StatusCode:
        try:
            self.call(method, request)
        except grpc.RpcError as error:
            self._note(method)
            return error.code()
        raise AssertionError(f"{method} succeeded; expected an error")

    def _note(self, method: str) -> None:
        if method not in self._seen:
            self._seen.add(method)
            print("ok", method, flush=True)


def _drive(url: str, token: str, user: str, store: str) -> None:
    assert url.startswith("grpc://"), url
    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        client = _FfdlClient(channel, token)
        pb = client.pb
        versions = client.call("GetVersions", pb.GetVersionsRequest())
        assert all(v.external for d in versions.frameworks.values() for v in d.versions), versions

        content = _zip({"train.sh": TRAIN_SH})
        first = _create(client, user, store, content, "sh train.sh")
        _check_finished_job(client, {"training_id": first, "user_id": user}, content)
        second = _create(client, user, store, content, "sleep 120")
        _check_halt(client, {"training_id": second, "user_id": user})
        for training_id in (first, second):
            job = {"training_id": training_id, "user_id": user}
            deleted = client.call("DeleteTrainingJob", pb.DeleteRequest(**job))
            assert deleted.training_id == training_id
            gone = client.refusal("GetTrainingJob", pb.GetRequest(**job))
            assert gone == grpc.StatusCode.NOT_FOUND


def _create(client: _FfdlClient, user: str, store: str, content: bytes, command: str) -> str:
    """Submit a job as FfDL's CLI builds it from a manifest with a host-mount store."""
    pb = client.pb
    connection = {"type": "host_mount", "path": store}
    request = pb.CreateRequest(
        user_id=user,
        model_definition=pb.ModelDefinition(
            name="ffdl-interop",
            content=content,
            framework=pb.Framework(name="python", version="3"),
        ),
        training=pb.Training(
            command=command,
            resources=pb.ResourceRequirements(cpus=1, memory=256, memory_unit=pb.MiB, learners=1),
            input_data=["local-input"],
            output_data=["local-output"],
        ),
        datastores=[
            pb.Datastore(
                id=f"local-{role}",
                type="mount_volume",
                fields={"bucket": bucket},
                connection=connection,
            )
            for role, bucket in (("input", "input"), ("output", "results"))
        ],
        evaluation_metrics=pb.EMExtractionSpec(
            type="regex_extractor",
            line_lookahead=1,
            groups={
                "train": pb.EMGroup(
                    regex=r"step (?P<step>\d+) loss (?P<loss>[0-9.]+)",
                    values={"loss": pb.EMAny(type="FLOAT", value="$loss")},
                    etimes={"iteration": pb.EMAny(type="INT", value="$step")},
                )
            },
        ),
    )
    training_id = client.call("CreateTrainingJob", request).training_id
    assert training_id, "CreateTrainingJob answered no training_id"
    return training_id


def _check_finished_job(client: _FfdlClient, job: dict[str, str], content: bytes) -> None:
    """Every read of a completed job: record, list, status, logs, metrics, zips."""
    pb = client.pb
    status = _wait_for(
        "the job to finish",
        lambda: client.call("GetTrainingStatusID", pb.GetRequest(**job)),
        lambda answer: answer.status in (pb.COMPLETED, pb.FAILED, pb.HALTED),
    )
    assert status.status == pb.COMPLETED, status

    record = client.call("GetTrainingJob", pb.GetRequest(**job)).job
    assert (record.training_id, record.user_id) == (job["training_id"], job["user_id"])
    assert record.model_definition.name == "ffdl-interop", record
    assert record.training.command == "sh train.sh", record
    assert record.status.status == pb.COMPLETED, record
    assert record.status.submission_timestamp.isdigit(), record
    listed = client.call("GetAllTrainingsJobs", pb.GetAllRequest(user_id=job["user_id"])).jobs
    assert job["training_id"] in [j.training_id for j in listed]

    query = pb.Query(searchType=pb.Query.TERM, meta=pb.MetaInfo(**job), pagesize=100)
    lines = _wait_for(
        "the log lines",
        lambda: client.call("GetTrainingLogs", query),
        lambda answer: len(answer) >= 2,
    )
    assert [line.line for line in lines][:2] == ["step 1 loss 0.5", "step 2 loss 0.25"], lines
    assert [line.meta.rindex for line in lines] == list(range(1, len(lines) + 1)), lines
    assert {line.meta.training_id for line in lines} == {job["training_id"]}, lines

    records = _wait_for(
        "the evaluation metrics",
        lambda: client.call("GetTrainingEMetrics", query),
        lambda answer: len(answer) >= 2,
    )
    assert [r.grouplabel for r in records] == ["train", "train"], records
    loss = [(r.values["loss"].type, float(r.values["loss"].value)) for r in records]
    assert loss == [(pb.Any.FLOAT, 0.5), (pb.Any.FLOAT, 0.25)], records
    steps = [(r.etimes["iteration"].type, r.etimes["iteration"].value) for r in records]
    assert steps == [(pb.Any.INT, "1"), (pb.Any.INT, "2")], records

    definition = client.call("GetModelDefinition", pb.ModelDefinitionRequest(**job))
    assert b"".join(chunk.data for chunk in definition) == content
    model = client.call("GetTrainedModel", pb.TrainedModelRequest(**job))
    with zipfile.ZipFile(io.BytesIO(b"".join(chunk.data for chunk in model))) as archive:
        saved = [archive.read(n) for n in archive.namelist() if n.endswith("model.txt")]
    assert saved == [b"weights\n"], saved
    log = client.call("GetTrainedModelLogs", pb.TrainedModelLogRequest(**job))
    assert b"step 2 loss 0.25" in b"".join(chunk.data for chunk in log)


def _check_halt(client: _FfdlClient, job: dict[str, str]) -> None:
    """A running job: the lifecycle manager's status update, Halt, and Resume."""
    pb = client.pb
    _wait_for(
        "the job to run",
        lambda: client.call("GetTrainingStatusID", pb.GetRequest(**job)),
        lambda answer: answer.status == pb.PROCESSING,
    )
    # What FfDL's lifecycle manager sends when a learner starts.
    started = str(int(time.time() * 1000))
    update = pb.UpdateRequest(**job, status=pb.PROCESSING, timestamp=started)
    assert client.call("UpdateTrainingJob", update).training_id == job["training_id"]

    halted = client.call("HaltTrainingJob", pb.HaltRequest(**job))
    assert (halted.training_id, halted.user_id) == (job["training_id"], job["user_id"])
    _wait_for(
        "the job to halt",
        lambda: client.call("GetTrainingJob", pb.GetRequest(**job)).job.status,
        lambda status: status.status == pb.HALTED,
    )
    resumed = client.refusal("ResumeTrainingJob", pb.ResumeRequest(**job))
    assert resumed == grpc.StatusCode.UNIMPLEMENTED


if __name__ == "__main__":
    _drive(*sys.argv[1:])
