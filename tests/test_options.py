"""TrainOptions -> CreateRequest: defaults, manifest, flags (in that order), the one-line regex
metric checked by the Trainer's own spec parser, and the --dry-run text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

from dlaas_jupyter.packaging.manifest import ManifestError
from dlaas_jupyter.packaging.options import (
    OptionsError,
    TrainOptions,
    build_request,
    describe,
    metric_regex_spec,
)
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.regex_extractor import RegexExtractor
from dlaas_jupyter.trainer.metrics.spec import parse_spec

ZIP = b"PK-not-really-a-zip"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

MANIFEST = """\
name: from-manifest
description: manifest description
cpus: 2
gpus: 1
learners: 2
memory: 4GiB
framework:
  name: tensorflow
  version: "2.15"
  command: >
    python train.py
    --epochs 3
evaluation_metrics:
  type: tensorboard
  in: $JOB_STATE_DIR/logs/tb
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.yml"
    path.write_text(MANIFEST)
    return path


def test_defaults() -> None:
    request = build_request(ZIP, TrainOptions(), default_name="my-notebook")
    assert request.model_definition.name == "my-notebook"
    assert request.model_definition.content == ZIP
    assert (
        request.model_definition.framework.name,
        request.model_definition.framework.version,
    ) == (
        "python",
        PYTHON,
    )
    assert request.training.command == "python main.py"
    assert not request.training.HasField("resources")  # the Trainer's defaults apply
    assert not request.HasField("evaluation_metrics")
    other = build_request(ZIP, TrainOptions(), default_name="x", main_script="train_cell.py")
    assert other.training.command == "python train_cell.py"


def test_manifest_values_replace_defaults(manifest: Path) -> None:
    request = build_request(ZIP, TrainOptions(manifest=manifest), default_name="ignored")
    assert request.model_definition.name == "from-manifest"
    assert request.model_definition.description == "manifest description"
    assert request.model_definition.framework.name == "tensorflow"
    assert request.model_definition.framework.version == "2.15"
    assert request.training.command == "python train.py --epochs 3"
    resources = request.training.resources
    assert (resources.cpus, resources.gpus, resources.learners) == (2, 1, 2)
    assert (resources.memory, resources.memory_unit) == (4, pb.GiB)
    assert request.evaluation_metrics.type == "tensorboard"


def test_short_manifest_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "short.yml"
    path.write_text("cpus: 3\n")
    request = build_request(ZIP, TrainOptions(manifest=path), default_name="nb")
    assert request.model_definition.name == "nb"
    assert request.model_definition.framework.version == PYTHON
    assert request.training.command == "python main.py"
    assert request.training.resources.cpus == 3


def test_every_flag_overrides_the_manifest(manifest: Path) -> None:
    options = TrainOptions(
        name="from-flag",
        description="flag description",
        cpus=0.5,
        gpus=0,
        memory="1500MiB",
        learners=1,
        framework="pytorch:2.3",
        command="python main.py --fast",
        metrics="file",
        manifest=manifest,
    )
    request = build_request(ZIP, options, default_name="ignored")
    definition = request.model_definition
    assert (definition.name, definition.description) == ("from-flag", "flag description")
    assert (definition.framework.name, definition.framework.version) == ("pytorch", "2.3")
    assert request.training.command == "python main.py --fast"
    resources = request.training.resources
    assert (resources.cpus, resources.gpus, resources.learners) == (0.5, 0, 1)
    assert (resources.memory, resources.memory_unit) == (1500, pb.MiB)
    assert request.evaluation_metrics.type == "emetrics_file"
    assert getattr(request.evaluation_metrics, "in") == ""  # the manifest's spec is replaced whole
    assert parse_spec(request.evaluation_metrics).kind == "file"


@pytest.mark.parametrize(
    ("metrics", "kind"), [("logger", "logs"), ("file", "file"), ("tensorboard", "tensorboard")]
)
def test_metrics_kinds_are_specs_the_trainer_accepts(metrics: str, kind: str) -> None:
    request = build_request(ZIP, TrainOptions(metrics=metrics), default_name="nb")
    assert parse_spec(request.evaluation_metrics).kind == kind


def test_one_line_regex_metric_is_a_spec_the_trainer_accepts_and_extracts_with() -> None:
    options = TrainOptions(
        metric_regex=[
            "Iteration %{INT:iteration}, loss = %{FLOAT:loss}",
            "test: %{TIMESTAMP:time} epoch %{INT:epoch} accuracy=(?P<accuracy>[0-9.]+)",
        ]
    )
    request = build_request(ZIP, options, default_name="nb")
    spec = request.evaluation_metrics
    assert spec.type == "regex_extractor"
    assert sorted(spec.groups) == ["test", "train"]
    train = spec.groups["train"]
    assert {name: (t.type, t.value) for name, t in train.values.items()} == {
        "loss": ("FLOAT", "$loss")
    }
    assert {name: (t.type, t.value) for name, t in train.etimes.items()} == {
        "iteration": ("INT", "$iteration")
    }
    test = spec.groups["test"]
    assert test.regex == "%{TIMESTAMP:time} epoch %{INT:epoch} accuracy=(?P<accuracy>[0-9.]+)"
    assert {n: t.type for n, t in test.values.items()} == {"accuracy": "FLOAT"}
    assert {n: t.type for n, t in test.etimes.items()} == {"epoch": "INT", "time": "STRING"}
    assert test.meta.time == "$time"

    parsed = parse_spec(spec)
    notes: list[tuple[str, str]] = []
    extractor = RegexExtractor(parsed, lambda subid, text: notes.append((subid, text)))
    records = extractor.feed(
        "",
        [
            "starting\n",
            "Iteration 1, loss = 2.5\n",
            "some other output\n",
            "Iteration 2, loss = 1.25\n",
            "2024-05-01T10:00:00.000Z epoch 1 accuracy=0.75\n",
        ],
    )
    seen = [(r.grouplabel, {k: v.value for k, v in r.values.items()}) for r in records]
    assert seen == [
        ("train", {"loss": "2.5"}),
        ("train", {"loss": "1.25"}),
        ("test", {"accuracy": "0.75"}),
    ]
    assert records[1].etimes["iteration"].value == "2"
    assert records[2].meta.time == 1714557600000
    assert notes == []


def test_regex_metric_errors() -> None:
    with pytest.raises(OptionsError, match='--metrics regex needs at least one --metric-regex "'):
        build_request(ZIP, TrainOptions(metrics="regex"), default_name="nb")
    with pytest.raises(
        OptionsError, match="--metric-regex goes with --metrics regex, not --metrics file"
    ):
        build_request(
            ZIP, TrainOptions(metrics="file", metric_regex=["%{FLOAT:x}"]), default_name="nb"
        )
    with pytest.raises(OptionsError, match="group 'train' is given twice"):
        metric_regex_spec(["a %{FLOAT:x}", "b %{FLOAT:y}"])
    with pytest.raises(OptionsError, match="captures no value"):
        metric_regex_spec(["Epoch %{INT:epoch}"])
    with pytest.raises(OptionsError, match="the regex is empty"):
        metric_regex_spec(["train:  "])
    with pytest.raises(
        OptionsError, match="--metrics 'csv': expected one of logger, regex, file, tensorboard"
    ):
        build_request(ZIP, TrainOptions(metrics="csv"), default_name="nb")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            TrainOptions(memory="2 potatoes"),
            r"^--memory: cannot parse '2 potatoes' \(expected a number and a unit",
        ),
        (TrainOptions(memory="12"), r"^--memory: cannot parse '12'"),
        (TrainOptions(cpus=-1), r"^--cpus -1: expected a number of at least 0"),
        (TrainOptions(gpus=float("nan")), r"^--gpus nan: expected a number"),
        (TrainOptions(learners=0), r"^--learners 0: expected a whole number of at least 1"),
        (TrainOptions(framework="pytorch"), r"^--framework 'pytorch': expected NAME:VERSION"),
        (TrainOptions(name="  "), r"^--name: give a non-empty name"),
        (TrainOptions(command=""), r"^--command: give the command"),
    ],
)
def test_bad_flags_are_named(options: TrainOptions, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        build_request(ZIP, options, default_name="nb")


def test_bad_manifest_names_its_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("memory: lots\n")
    with pytest.raises(ManifestError, match="manifest field 'memory'"):
        build_request(ZIP, TrainOptions(manifest=path), default_name="nb")


def test_describe_shows_files_script_head_and_request_without_the_zip() -> None:
    script = "".join(f"print({n})\n" for n in range(30))
    files = {"main.py": script.encode(), "requirements.txt": b"numpy\n"}
    request = build_request(ZIP, TrainOptions(cpus=1, memory="1GiB"), default_name="nb")
    text = describe(request, files)
    assert "Model definition (2 files, zip 19 B):" in text
    assert "main.py  " in text and "requirements.txt" in text and "6 B" in text
    assert "main.py (first 20 of 30 lines):\n  print(0)\n" in text
    assert "print(19)" in text and "print(20)" not in text
    assert ZIP.decode() not in text
    shown = text.split("not shown):\n", 1)[1]
    parsed = text_format.Parse(
        "\n".join(line[2:] for line in shown.splitlines()), pb.CreateRequest()
    )
    expected = pb.CreateRequest()
    expected.CopyFrom(request)
    expected.model_definition.ClearField("content")
    assert parsed == expected
