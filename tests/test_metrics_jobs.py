"""Evaluation metrics of real jobs on the real embedded Trainer, read through the client.

Every job is a real learner process (scikit-learn, tensorboardX, emit(), plain
prints) started by the session's Trainer process, and every record is read
back through TrainerClient, so these tests cover the whole way from what a job
writes to what a notebook sees. A job that must be caught while it runs waits
for a gate file the test creates in the job's DATA_DIR, so no test depends on
how fast this machine is.
"""

from __future__ import annotations

import json
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from conftest import SMALL_CPUS, anys, job_request, wait_until, with_data

from dlaas_jupyter.client import TERMINAL, TrainerClient
from dlaas_jupyter.client.errors import InvalidRequest
from dlaas_jupyter.proto import trainer_pb2 as pb

GATE = "release"
# gate.py in a job's zip: wait_gate() returns once the test creates the gate.
GATE_PY = f"""\
import os, time


def wait_gate():
    while not os.path.exists(os.path.join(os.environ["DATA_DIR"], "{GATE}")):
        time.sleep(0.02)
"""
ITERATION_REGEX = "Iteration %{INT:iteration}, loss = %{FLOAT:loss}"


def gated(job: str) -> dict[str, str]:
    """The zip of a job whose job.py may call gate.wait_gate()."""
    return {"job.py": job, "gate.py": GATE_PY}


def group(
    regex: str, values: dict[str, tuple[str, str]], etimes: dict[str, tuple[str, str]] | None = None
) -> pb.EMGroup:
    """A regex_extractor group; values and etimes map a key to (type, "$name" or literal)."""
    built = pb.EMGroup(regex=regex)
    for target, entries in ((built.values, values), (built.etimes, etimes or {})):
        for key, (kind, value) in entries.items():
            target[key].CopyFrom(pb.EMAny(type=kind, value=value))
    return built


def regex_spec(line_lookahead: int = 0, **groups: pb.EMGroup) -> pb.EMExtractionSpec:
    spec = pb.EMExtractionSpec(type="regex_extractor", line_lookahead=line_lookahead)
    for name, built in groups.items():
        spec.groups[name].CopyFrom(built)
    return spec


def iteration_group() -> pb.EMGroup:
    """The manifest's usual group: sklearn-style "Iteration N, loss = X" lines."""
    return group(
        ITERATION_REGEX, {"loss": ("FLOAT", "$loss")}, {"iteration": ("INT", "$iteration")}
    )


def submit(
    client: TrainerClient,
    command: str,
    files: dict[str, str] | None = None,
    *,
    spec: pb.EMExtractionSpec | None = None,
    data: Path | None = None,
    **kwargs,
) -> str:
    """Create a job; ``data``, if given, is mounted as its DATA_DIR (FfDL's host_mount)."""
    kwargs.setdefault("cpus", SMALL_CPUS)
    request = job_request(command, files, **kwargs)
    if spec is not None:
        request.evaluation_metrics.CopyFrom(spec)
    if data is not None:
        with_data(request, data)
    return client.create(request)


def wait_done(client: TrainerClient, tid: str, timeout: float = 120.0) -> pb.Job:
    wait_until(f"{tid} to end", lambda: client.status(tid) in TERMINAL, timeout)
    return client.get(tid)


def records(client: TrainerClient, tid: str) -> list[pb.EMetrics]:
    """Every stored record of the job, in storage order (the job must have ended)."""
    return list(client.follow_emetrics(tid, poll_interval=0.1))


def log_texts(client: TrainerClient, tid: str) -> list[str]:
    return [line.line for line in client.follow_logs(tid, poll_interval=0.1)]


def assert_completed(client: TrainerClient, tid: str) -> None:
    job = wait_done(client, tid)
    assert job.status.status == pb.COMPLETED, (job.status.status_message, log_texts(client, tid))


# -- the "done when" case: a real model's training curve ---------------------------

MLP_JOB = """\
import json, os, warnings
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

X, y = load_digits(return_X_y=True)
model = MLPClassifier(verbose=True, max_iter=15, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # 15 iterations do not converge
    model.fit(X / 16.0, y)
with open(os.path.join(os.environ["RESULT_DIR"], "loss_curve.json"), "w") as f:
    json.dump(model.loss_curve_, f)
"""


def test_mlp_classifier_loss_lines_become_one_typed_record_per_iteration(
    client: TrainerClient, tmp_path: Path
) -> None:
    tid = submit(
        client, "python train.py", {"train.py": MLP_JOB}, spec=regex_spec(train=iteration_group())
    )
    assert_completed(client, tid)

    loss_lines = [line for line in log_texts(client, tid) if line.startswith("Iteration ")]
    assert len(loss_lines) == 15, loss_lines
    model = client.download_trained_model(tid, tmp_path / "model.zip")
    with zipfile.ZipFile(model) as archive:
        loss_curve = json.loads(archive.read("loss_curve.json"))
        stored_log = archive.read("learner-1/training-log.txt").decode().splitlines()
    assert [line for line in stored_log if line.startswith("Iteration ")] == loss_lines
    assert len(loss_curve) == 15

    got = records(client, tid)
    assert len(got) == 15
    for n, (record, line, loss) in enumerate(zip(got, loss_lines, loss_curve, strict=True), 1):
        assert line.startswith(f"Iteration {n}, loss = ")
        printed = float(line.rsplit("= ", 1)[1])
        assert record.grouplabel == "train"
        assert record.meta.subid == "learner-1" and record.meta.rindex == n
        assert record.meta.training_id == tid and record.meta.user_id == client.user
        assert anys(record.etimes) == {"iteration": ("INT", str(n))}
        assert record.values["loss"].type == pb.Any.FLOAT
        assert float(record.values["loss"].value) == printed  # exactly what the log says
        assert abs(printed - loss) < 1e-8  # the log prints 8 decimals of loss_curve_
        assert set(record.values) == {"loss"}
    assert loss_curve[-1] < loss_curve[0]  # it trained
    times = [record.meta.time for record in got]
    assert times == sorted(set(times))


# -- live, for each collector -------------------------------------------------------

REGEX_LIVE_JOB = """\
from gate import wait_gate
print("Iteration 1, loss = 0.5", flush=True)
wait_gate()
print("Iteration 2, loss = 0.25", flush=True)
"""


def test_regex_records_appear_while_the_job_runs(client: TrainerClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    spec = regex_spec(train=iteration_group())
    tid = submit(client, "python job.py", gated(REGEX_LIVE_JOB), spec=spec, data=data)

    first = wait_until("the first record", lambda: client.emetrics(tid, pagesize=100))
    assert client.status(tid) == pb.PROCESSING  # the job is still waiting for the gate
    assert [anys(r.values) for r in first] == [{"loss": ("FLOAT", "0.5")}]
    (data / GATE).touch()
    assert_completed(client, tid)
    got = records(client, tid)
    assert [(anys(r.etimes), anys(r.values)) for r in got] == [
        ({"iteration": ("INT", "1")}, {"loss": ("FLOAT", "0.5")}),
        ({"iteration": ("INT", "2")}, {"loss": ("FLOAT", "0.25")}),
    ]
    assert [(r.grouplabel, r.meta.subid, r.meta.rindex) for r in got] == [
        ("train", "learner-1", 1),
        ("train", "learner-1", 2),
    ]


EMIT_LIVE_JOB = """\
from gate import wait_gate
from dlaas_jupyter import emit
emit("train", iteration=1, loss=0.5, note="first")
wait_gate()
emit("train", iteration=2, loss=0.25, note="second")
emit("test", iteration=2, accuracy=0.75, confusion=[[1, 0], [0, 1]])
"""


def test_emit_records_appear_live_without_any_spec(client: TrainerClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tid = submit(client, "python job.py", gated(EMIT_LIVE_JOB), data=data)  # no spec

    first = wait_until("the first record", lambda: client.emetrics(tid, pagesize=100))
    assert client.status(tid) == pb.PROCESSING
    assert len(first) == 1
    (data / GATE).touch()
    assert_completed(client, tid)
    got = records(client, tid)
    assert [(r.grouplabel, anys(r.etimes), anys(r.values)) for r in got] == [
        (
            "train",
            {"iteration": ("INT", "1")},
            {"loss": ("FLOAT", "0.5"), "note": ("STRING", "first")},
        ),
        (
            "train",
            {"iteration": ("INT", "2")},
            {"loss": ("FLOAT", "0.25"), "note": ("STRING", "second")},
        ),
        (
            "test",
            {"iteration": ("INT", "2")},
            {"accuracy": ("FLOAT", "0.75"), "confusion": ("JSONSTRING", "[[1, 0], [0, 1]]")},
        ),
    ]
    assert [(r.meta.subid, r.meta.rindex, r.meta.training_id) for r in got] == [
        ("learner-1", n, tid) for n in (1, 2, 3)
    ]


TENSORBOARD_JOB = """\
import os
from gate import wait_gate
from tensorboardX import SummaryWriter
root = os.path.join(os.environ["JOB_STATE_DIR"], "logs", "tb")
# tensorboardX's flush() does not wait for the events it has queued; its writer
# thread writes them out every flush_secs, 120 s by default.
train = SummaryWriter(os.path.join(root, "train"), flush_secs=0.05)
test = SummaryWriter(os.path.join(root, "test"), flush_secs=0.05)

def step(i):
    train.add_scalar("loss", 1.0 / 2**i, i)
    test.add_scalar("accuracy", i / 8, i)

for i in range(2):
    step(i)
print("written", flush=True)
wait_gate()
for i in range(2, 5):
    step(i)
train.close()
test.close()
"""


def test_tensorboard_scalars_appear_live_in_wall_time_order(
    client: TrainerClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    spec = pb.EMExtractionSpec(type="tensorboard", **{"in": "$JOB_STATE_DIR/logs/tb"})
    tid = submit(client, "python job.py", gated(TENSORBOARD_JOB), spec=spec, data=data)

    def both_groups_started() -> list[pb.EMetrics] | None:
        page = client.emetrics(tid, pagesize=100)
        return page if {r.grouplabel for r in page} == {"train", "test"} else None

    early = wait_until("records of both groups", both_groups_started)
    assert client.status(tid) == pb.PROCESSING  # still waiting for the gate
    # A group's latest step may still get more tags, so step 1 waits for step 2.
    assert sorted((r.grouplabel, r.etimes["iteration"].value) for r in early) == [
        ("test", "0"),
        ("train", "0"),
    ]
    (data / GATE).touch()
    assert_completed(client, tid)

    got = records(client, tid)
    for label, tag, expected in (
        ("train", "loss", [1.0 / 2**i for i in range(5)]),
        ("test", "accuracy", [i / 8 for i in range(5)]),
    ):
        mine = [r for r in got if r.grouplabel == label]
        assert [r.etimes["iteration"].value for r in mine] == ["0", "1", "2", "3", "4"]
        assert [set(r.values) for r in mine] == [{tag}] * 5
        assert [r.values[tag].type for r in mine] == [pb.Any.FLOAT] * 5
        assert [float(r.values[tag].value) for r in mine] == expected
    assert len(got) == 10
    # The event files are the job's, not a learner's: their records are learner-1's.
    assert [(r.meta.subid, r.meta.rindex) for r in got] == [("learner-1", n) for n in range(1, 11)]
    for record in got:
        assert {k: v.type for k, v in record.etimes.items()} == {
            "iteration": pb.Any.INT,
            "timestamp": pb.Any.STRING,
            "wall_time": pb.Any.FLOAT,
        }
        wall_time = float(record.etimes["wall_time"].value)
        stamp = record.etimes["timestamp"].value
        assert stamp.endswith("Z"), stamp  # ISO 8601 in UTC
        assert abs(datetime.fromisoformat(stamp).timestamp() - wall_time) < 0.001
        assert abs(wall_time - time.time()) < 600
    wall_times = [float(r.etimes["wall_time"].value) for r in got]
    assert wall_times == sorted(wall_times)


# -- records the collectors must not lose ---------------------------------------------

SPLIT_RECORD_JOB = """\
from gate import wait_gate
print("epoch 3", flush=True)
wait_gate()
print("loss=0.5", flush=True)
"""


def test_two_line_record_split_across_collection_batches_is_one_record(
    client: TrainerClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    epoch = group(
        r"epoch %{INT:epoch}\nloss=%{FLOAT:loss}",
        {"loss": ("FLOAT", "$loss")},
        {"epoch": ("INT", "$epoch")},
    )
    spec = regex_spec(epochs=epoch)
    tid = submit(client, "python job.py", gated(SPLIT_RECORD_JOB), spec=spec, data=data)
    # The first line is stored (one batch) before the second is printed (another).
    wait_until("the first line", lambda: [line.line for line in client.logs(tid)] == ["epoch 3"])
    assert client.emetrics(tid) == []
    (data / GATE).touch()
    assert_completed(client, tid)
    got = records(client, tid)
    assert [(r.grouplabel, anys(r.etimes), anys(r.values), r.meta.rindex) for r in got] == [
        ("epochs", {"epoch": ("INT", "3")}, {"loss": ("FLOAT", "0.5")}, 1)
    ]


PATHOLOGICAL_JOB = """\
print("a" * 100_000 + "b", flush=True)
for i in range(1, 6):
    print(f"Iteration {i}, loss = {1 / i}", flush=True)
"""


def test_catastrophic_regex_is_cut_short_and_later_records_are_collected(
    client: TrainerClient,
) -> None:
    # (a+)+$ backtracks on a long run of a's ending in b: uncut, far beyond this test's time.
    spec = regex_spec(
        line_lookahead=1, slow=group("(a+)+$", {"seen": ("INT", "1")}), train=iteration_group()
    )
    started = time.monotonic()
    tid = submit(client, "python job.py", {"job.py": PATHOLOGICAL_JOB}, spec=spec)
    assert_completed(client, tid)
    assert time.monotonic() - started < 30

    got = records(client, tid)
    assert [(r.grouplabel, anys(r.etimes), anys(r.values)) for r in got] == [
        ("train", {"iteration": ("INT", str(i))}, {"loss": ("FLOAT", repr(1 / i))})
        for i in range(1, 6)
    ]
    texts = log_texts(client, tid)
    assert texts[0] == "a" * 100_000 + "b"  # the line itself is kept in the log
    notes = [line for line in texts if line.startswith("dlaas:")]
    assert len(notes) == 1, notes
    assert "group 'slow'" in notes[0] and "took longer than" in notes[0]


BAD_LINE_JOB = """\
import os
from dlaas_jupyter import emit
emit("train", iteration=1, loss=0.5)
with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
    f.write("this is not a record\\n")
emit("train", iteration=2, loss=0.25)
"""


def test_bad_metrics_file_line_is_reported_in_the_log_and_skipped(client: TrainerClient) -> None:
    tid = submit(client, "python job.py", {"job.py": BAD_LINE_JOB})
    assert_completed(client, tid)
    got = records(client, tid)
    # rindex is the line number in the file: the bad line 2 is a gap, not renumbered.
    assert [(r.meta.rindex, anys(r.etimes), anys(r.values)) for r in got] == [
        (1, {"iteration": ("INT", "1")}, {"loss": ("FLOAT", "0.5")}),
        (3, {"iteration": ("INT", "2")}, {"loss": ("FLOAT", "0.25")}),
    ]
    notes = [line for line in log_texts(client, tid) if line.startswith("dlaas:")]
    assert len(notes) == 1, notes
    assert notes[0].startswith("dlaas: evaluation-metrics.txt line 2 skipped: not JSON")


MIXED_JOB = """\
import os, time
from tensorboardX import SummaryWriter
from dlaas_jupyter import emit
train_dir = os.path.join(os.environ["JOB_STATE_DIR"], "logs", "tb", "train")
tb = SummaryWriter(train_dir, flush_secs=0.05)
for i in range(1, 6):
    emit("test", iteration=i, accuracy=i / 10)
    time.sleep(0.1)
    print(f"Iteration {i}, loss = {1 / i}", flush=True)
    tb.add_scalar("loss", 1 / i, i)
    time.sleep(0.1)
tb.close()
"""


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(regex_spec(train=iteration_group()), id="regex"),
        pytest.param(
            pb.EMExtractionSpec(type="tensorboard", **{"in": "$JOB_STATE_DIR/logs/tb"}),
            id="tensorboard",
        ),
    ],
)
def test_emit_beside_the_specs_collector_loses_no_record_to_a_follow(
    client: TrainerClient, spec: pb.EMExtractionSpec
) -> None:
    # The metrics file numbers its records by line, the spec's collector not at
    # all: unless one numbering covers both, a follow by rindex drops records.
    tid = submit(client, "python job.py", {"job.py": MIXED_JOB}, spec=spec)
    followed = list(client.follow_emetrics(tid, poll_interval=0.1))
    assert client.status(tid) == pb.COMPLETED, log_texts(client, tid)
    assert sorted((r.grouplabel, r.etimes["iteration"].value) for r in followed) == [
        (label, str(i)) for label in ("test", "train") for i in range(1, 6)
    ]
    assert [(r.meta.subid, r.meta.rindex) for r in followed] == [
        ("learner-1", n) for n in range(1, 11)
    ]
    assert [r.meta.rindex for r in records(client, tid)] == list(range(1, 11))


# -- bad specs are refused at submission ------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        pytest.param(
            regex_spec(train=group("Iteration (%{INT:iteration}", {"it": ("INT", "$iteration")})),
            ["group 'train'", "invalid regex"],
            id="invalid-regex",
        ),
        pytest.param(
            regex_spec(train=group("loss %{NUMBER:loss}", {"loss": ("FLOAT", "$loss")})),
            ["group 'train'", "unknown macro %{NUMBER}"],
            id="unknown-macro",
        ),
        pytest.param(
            regex_spec(train=group(ITERATION_REGEX, {"loss": ("DOUBLE", "$loss")})),
            ["group 'train'", "values.loss", "'DOUBLE'"],
            id="unknown-value-type",
        ),
        pytest.param(
            regex_spec(train=group(ITERATION_REGEX, {"loss": ("FLOAT", "$los")})),
            ["group 'train'", "$los", "no group named 'los'"],
            id="template-name-not-in-regex",
        ),
        pytest.param(
            pb.EMExtractionSpec(type="regex-extractor"),
            ["type 'regex-extractor' is not known"],
            id="unknown-spec-type",
        ),
    ],
)
def test_bad_spec_is_refused_and_no_job_is_created(
    client: TrainerClient, spec: pb.EMExtractionSpec, words: list[str]
) -> None:
    before = [job.training_id for job in client.list()]
    with pytest.raises(InvalidRequest) as refused:
        submit(client, "echo never runs", spec=spec)
    message = str(refused.value)
    for word in words:
        assert word in message, message
    assert [job.training_id for job in client.list()] == before


# -- volume, learners, halt ---------------------------------------------------------------

MANY_RECORDS = 100_000
MANY_RECORDS_JOB = """\
import json, os, sys
from gate import wait_gate
COUNT = int(sys.argv[1])
path = os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt")

def write(first, last):
    with open(path, "a") as f:
        for i in range(first, last + 1):
            record = {"meta": {"rindex": i}, "grouplabel": "train",
                      "etimes": {"iteration": {"type": "INT", "value": str(i)}},
                      "values": {"loss": {"type": "FLOAT", "value": repr(1 / i)}}}
            f.write(json.dumps(record) + "\\n")
            if i % 5000 == 0:
                f.flush()

write(1, COUNT // 2)
wait_gate()
write(COUNT // 2 + 1, COUNT)
"""


@pytest.mark.slow
def test_100k_records_followed_live_from_the_start(client: TrainerClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tid = submit(client, f"python job.py {MANY_RECORDS}", gated(MANY_RECORDS_JOB), data=data)
    rindexes: list[int] = []
    for record in client.follow_emetrics(tid, poll_interval=0.2):
        rindexes.append(record.meta.rindex)
        assert record.meta.subid == "learner-1"
        if record.meta.rindex == MANY_RECORDS // 2:
            # Half the records came while the job waits: the follow is live.
            assert client.status(tid) == pb.PROCESSING
            (data / GATE).touch()
        elif record.meta.rindex in (1, MANY_RECORDS):
            assert float(record.values["loss"].value) == 1 / record.meta.rindex
    assert client.status(tid) == pb.COMPLETED  # the follow ended because the job did
    assert rindexes == list(range(1, MANY_RECORDS + 1))


LEARNER_JOB = """\
from dlaas_jupyter import emit
for i in range(1, 201):
    emit("train", iteration=i, loss=1 / i)
"""


def test_two_learners_emit_interleaved_records_followed_without_duplicates(
    client: TrainerClient,
) -> None:
    tid = submit(client, "python job.py", {"job.py": LEARNER_JOB}, learners=2)
    got = list(client.follow_emetrics(tid, poll_interval=0.1))
    assert client.status(tid) == pb.COMPLETED
    assert len(got) == 400
    assert len({(r.meta.subid, r.meta.rindex) for r in got}) == 400
    for subid in ("learner-1", "learner-2"):
        mine = [r for r in got if r.meta.subid == subid]
        assert [r.meta.rindex for r in mine] == list(range(1, 201))
        assert [anys(r.etimes) for r in mine] == [
            {"iteration": ("INT", str(i))} for i in range(1, 201)
        ]
        assert [float(r.values["loss"].value) for r in mine] == [1 / i for i in range(1, 201)]
    times = [r.meta.time for r in got]
    assert times == sorted(set(times))


HALT_JOB = """\
import os, time
for i in range(1, 201):
    print(f"Iteration {i}, loss = {1 / i}")
open(os.path.join(os.environ["DATA_DIR"], "printed"), "w").close()
time.sleep(300)
"""


def test_halt_stores_every_record_printed_before_it(client: TrainerClient, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tid = submit(
        client,
        "python job.py",
        {"job.py": HALT_JOB},
        spec=regex_spec(train=iteration_group()),
        data=data,
    )
    # Halted as soon as the lines are written, whatever the Trainer has read of them yet.
    wait_until("the job to print its lines", (data / "printed").exists)
    assert client.halt(tid).status == pb.HALTED
    got = records(client, tid)
    assert [(r.meta.rindex, anys(r.etimes), anys(r.values)) for r in got] == [
        (i, {"iteration": ("INT", str(i))}, {"loss": ("FLOAT", repr(1 / i))}) for i in range(1, 201)
    ]
