"""The FfDL manifest.yml mapping: every field, and an error naming each bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlaas_jupyter.packaging.manifest import (
    ManifestError,
    load_manifest,
    manifest_to_request,
    parse_size,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# The fewest fields a manifest needs.
BASE = "name: n\nframework: {name: python, version: '3', command: c}\n"

FULL = """\
name: mnist-model
description: Convolutional network model
version: "1.0"
cpus: 0.5
gpus: 2
gpu_type: nvidia-TeslaK80
learners: 3
memory: 16GB
storage: 1000MiB
data_stores:
  - id: sl-internal-os
    type: mount_cos
    training_data:
      container: tf_training_data
    training_results:
      container: tf_trained_model
    connection:
      auth_url: http://s3.default.svc.cluster.local
      user_name: test
      password: test
      port: 9000
framework:
  name: tensorflow
  version: 1.10
  image_tag: gpu-latest
  image_location:
    registry: registry.example
    namespace: ml
    access_token: secret
    email: me@example.org
  command: >
    python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/train-images.gz
      --learningRate 0.001
evaluation_metrics:
  type: regex_extractor
  in: "$JOB_STATE_DIR/logs/training-log.txt"
  line_lookahead: 4
  eventTypes: [scalars, images]
  image_tag: collector-1
  groups:
    test:
      regex: 'Iteration %{INT:iteration}, loss = %{FLOAT:loss}'
      meta:
        time: "$timestamp"
        subid: "$learner"
      scalars:
        loss: {type: FLOAT, value: $loss}
      etimes:
        iteration: {type: int, value: $iteration}
"""


def request_for(text: str, model_zip: bytes = b"zip", **kwargs) -> pb.CreateRequest:
    return manifest_to_request(load_manifest(text), model_zip, **kwargs)


def error_for(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        request_for(text)
    return caught.value


def test_every_field_maps_to_the_create_request():
    request = request_for(FULL, b"PK-the-zip", user_id="alice")

    assert request.user_id == "alice"
    definition = request.model_definition
    assert (definition.name, definition.description) == (
        "mnist-model",
        "Convolutional network model",
    )
    assert definition.content == b"PK-the-zip"
    assert definition.framework.name == "tensorflow"
    # An unquoted 1.10 is a YAML float; the version keeps its written form.
    assert definition.framework.version == "1.10"
    assert definition.framework.image_tag == "gpu-latest"
    location = definition.framework.image_location
    assert (location.registry, location.namespace, location.access_token, location.email) == (
        "registry.example",
        "ml",
        "secret",
        "me@example.org",
    )

    training = request.training
    # YAML keeps the break before a more-indented line of a folded (>) command;
    # as FfDL's Trainer does, it becomes a space: one command line.
    assert training.command == (
        "python3 convolutional_network.py --trainImagesFile ${DATA_DIR}/train-images.gz"
        "   --learningRate 0.001"
    )
    resources = training.resources
    assert resources.cpus == pytest.approx(0.5)
    assert resources.gpus == 2
    assert resources.gpu_type == "nvidia-TeslaK80"
    assert resources.learners == 3
    assert (resources.memory, resources.memory_unit) == (16, pb.GB)
    assert (resources.storage, resources.storage_unit) == (1000, pb.MiB)

    assert list(training.input_data) == ["sl-internal-os-input"]
    assert list(training.output_data) == ["sl-internal-os-output"]
    stores = {store.id: store for store in request.datastores}
    assert list(stores) == ["sl-internal-os-input", "sl-internal-os-output"]
    connection = {
        "auth_url": "http://s3.default.svc.cluster.local",
        "user_name": "test",
        "password": "test",
        "port": "9000",
    }
    for store_id, bucket in (
        ("sl-internal-os-input", "tf_training_data"),
        ("sl-internal-os-output", "tf_trained_model"),
    ):
        assert stores[store_id].type == "mount_cos"
        assert dict(stores[store_id].fields) == {"bucket": bucket}
        assert dict(stores[store_id].connection) == connection

    spec = request.evaluation_metrics
    assert spec.type == "regex_extractor"
    assert getattr(spec, "in") == "$JOB_STATE_DIR/logs/training-log.txt"
    assert spec.line_lookahead == 4
    assert list(spec.eventTypes) == ["scalars", "images"]
    assert spec.image_tag == "collector-1"
    group = spec.groups["test"]
    assert group.regex == "Iteration %{INT:iteration}, loss = %{FLOAT:loss}"
    assert (group.meta.time, group.meta.subid) == ("$timestamp", "$learner")
    assert dict(group.values) == {"loss": pb.EMAny(type="FLOAT", value="$loss")}
    # Template types are case-insensitive and sent in FfDL's upper case.
    assert dict(group.etimes) == {"iteration": pb.EMAny(type="INT", value="$iteration")}


def test_folded_command_joins_lines_with_spaces():
    request = request_for(
        "name: n\nframework:\n  name: python\n  version: '3'\n  command: >\n"
        "    python train.py\n    --epochs 3\n"
    )
    assert request.training.command == "python train.py --epochs 3"


def test_ffdl_example_shape_tensorboard_metrics():
    request = request_for(
        "name: tf\nframework: {name: tensorflow, version: '1.5.0-py3', command: python3 x.py}\n"
        'evaluation_metrics:\n  type: tensorboard\n  in: "$JOB_STATE_DIR/logs/tb"\n'
        "  # event_types: [scalars]\n"
    )
    spec = request.evaluation_metrics
    assert request.HasField("evaluation_metrics")
    assert (spec.type, getattr(spec, "in")) == ("tensorboard", "$JOB_STATE_DIR/logs/tb")
    assert not spec.groups and not spec.eventTypes and spec.line_lookahead == 0


def test_group_values_key_is_accepted_like_scalars():
    request = request_for(
        BASE + "evaluation_metrics:\n  type: regex_extractor\n  groups:\n    train:\n"
        "      regex: 'acc (?P<acc>\\S+)'\n      values:\n        acc: {type: float, value: $acc}\n"
    )
    assert dict(request.evaluation_metrics.groups["train"].values) == {
        "acc": pb.EMAny(type="FLOAT", value="$acc")
    }


def test_event_types_snake_case_alias():
    request = request_for(
        BASE + "evaluation_metrics: {type: tensorboard, event_types: [scalars]}\n"
    )
    assert list(request.evaluation_metrics.eventTypes) == ["scalars"]


def test_the_first_job_example():
    example = EXAMPLES / "first-job"
    request = manifest_to_request(load_manifest(example / "manifest.yml"), b"zip")
    assert request.model_definition.name == "first-job"
    framework = request.model_definition.framework
    assert (framework.name, framework.version) == ("python", "3")
    assert request.training.command == "python train.py"
    resources = request.training.resources
    assert resources.cpus == 1
    assert (resources.memory, resources.memory_unit) == (1, pb.GiB)
    assert not request.datastores and not request.training.input_data
    assert not request.HasField("evaluation_metrics")


def test_minimal_manifest_leaves_resources_datastores_and_metrics_unset():
    request = request_for(BASE)
    assert not request.training.HasField("resources")
    assert not request.datastores
    assert not request.HasField("evaluation_metrics")
    assert request.user_id == ""


def test_data_store_without_training_results_has_input_only():
    request = request_for(
        BASE + "data_stores:\n  - id: host\n    type: mount_volume\n"
        "    training_data: {container: data}\n"
        "    connection: {type: host_mount, name: host-mount, path: /cosdata}\n"
    )
    assert [store.id for store in request.datastores] == ["host-input"]
    assert dict(request.datastores[0].connection) == {
        "type": "host_mount",
        "name": "host-mount",
        "path": "/cosdata",
    }
    assert list(request.training.input_data) == ["host-input"]
    assert not request.training.output_data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gb", (1, pb.GB)),
        ("16GB", (16, pb.GB)),
        ("1000MiB", (1000, pb.MiB)),
        ("512mb", (512, pb.MB)),
        ("2gib", (2, pb.GiB)),
        ("1.5 GiB", (1.5, pb.GiB)),
        (" 300MiB ", (300, pb.MiB)),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text, "memory") == expected


@pytest.mark.parametrize(
    "value", ["12 parsecs", "512", 512, 1.5, "GiB", "-1GB", "1e3MB", "", "1 G"]
)
def test_parse_size_refuses_what_it_cannot_read(value):
    with pytest.raises(ManifestError) as caught:
        parse_size(value, "memory")
    message = str(caught.value)
    assert message.startswith("manifest field 'memory': cannot parse")
    assert "MB, MiB, GB or GiB" in message
    assert caught.value.field == "memory"


def test_parse_size_names_the_type_it_got():
    with pytest.raises(
        ManifestError, match=r"field 'storage': expected a size such as 2GiB, not a list"
    ):
        parse_size([1], "storage")  # type: ignore[arg-type]


def test_unparseable_memory_is_refused_not_defaulted():
    error = error_for(
        "name: n\nmemory: 12 parsecs\nframework: {name: p, version: '3', command: c}\n"
    )
    assert str(error) == (
        "manifest field 'memory': cannot parse '12 parsecs' "
        "(expected a number and a unit MB, MiB, GB or GiB, e.g. 2GiB)"
    )


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("framework: {name: p, version: '3', command: c}\n", "name", "required"),
        ("name: ''\nframework: {name: p, version: '3', command: c}\n", "name", "required"),
        (
            "name: [a]\nframework: {name: p, version: '3', command: c}\n",
            "name",
            "expected text, not a list",
        ),
        ("name: n\n", "framework", "required"),
        ("name: n\nframework: python\n", "framework", "expected a mapping"),
        ("name: n\nframework: {version: '3', command: c}\n", "framework.name", "required"),
        ("name: n\nframework: {name: p, command: c}\n", "framework.version", "required"),
        ("name: n\nframework: {name: p, version: '3'}\n", "framework.command", "required"),
        (BASE + "learners: two\n", "learners", "expected a whole number, not 'two'"),
        (BASE + "learners: 1.5\n", "learners", "expected a whole number, not '1.5'"),
        (BASE + "learners: -1\n", "learners", "at least 0"),
        (BASE + "learners: true\n", "learners", "expected a whole number, not a boolean"),
        (BASE + "cpus: many\n", "cpus", "expected a number, not 'many'"),
        (BASE + "gpus: [1]\n", "gpus", "expected a number, not a list"),
        (BASE + "cpus: -2\n", "cpus", "at least 0"),
        (BASE + "cpus: .nan\n", "cpus", "at least 0"),
        (BASE + "gpu_type: {a: 1}\n", "gpu_type", "expected text, not a mapping"),
        (BASE + "storage: lots\n", "storage", "cannot parse 'lots'"),
        (BASE + "memmory: 1GiB\n", "memmory", "did you mean 'memory'"),
        (
            "name: n\nframework: {name: p, version: '3', command: c, cmd: x}\n",
            "framework.cmd",
            "unknown field",
        ),
        (BASE + "data_stores: {id: x}\n", "data_stores", "expected a list"),
        (
            BASE + "data_stores:\n  - {id: a, type: t, training_data: {container: c}}\n"
            "  - {id: b, type: t, training_data: {container: c}}\n",
            "data_stores",
            "exactly one data store is supported, got 2",
        ),
        (BASE + "data_stores: [just-a-name]\n", "data_stores[0]", "expected a mapping"),
        (
            BASE + "data_stores:\n  - {type: t, training_data: {container: c}}\n",
            "data_stores[0].id",
            "required",
        ),
        (
            BASE + "data_stores:\n  - {id: a, training_data: {container: c}}\n",
            "data_stores[0].type",
            "required",
        ),
        (BASE + "data_stores:\n  - {id: a, type: t}\n", "data_stores[0].training_data", "required"),
        (
            BASE + "data_stores:\n  - {id: a, type: t, training_data: {}}\n",
            "data_stores[0].training_data.container",
            "required",
        ),
        (
            BASE + "data_stores:\n  - {id: a, type: t, training_data: {container: c},"
            " training_results: {bucket: r}}\n",
            "data_stores[0].training_results.bucket",
            "unknown field",
        ),
        (
            BASE + "data_stores:\n  - {id: a, type: t, training_data: {container: c},"
            " connection: [x]}\n",
            "data_stores[0].connection",
            "expected a mapping",
        ),
        (
            BASE + "data_stores:\n  - {id: a, type: t, training_data: {container: c},"
            " connection: {path: [x]}}\n",
            "data_stores[0].connection.path",
            "expected text",
        ),
        (BASE + "evaluation_metrics: tensorboard\n", "evaluation_metrics", "expected a mapping"),
        (
            BASE + "evaluation_metrics: {type: tensorboard, line_lookahead: four}\n",
            "evaluation_metrics.line_lookahead",
            "expected a whole number",
        ),
        (
            BASE + "evaluation_metrics: {type: tensorboard, eventTypes: scalars}\n",
            "evaluation_metrics.eventTypes",
            "expected a list",
        ),
        (
            BASE + "evaluation_metrics: {type: tensorboard, groups: {train: 1}}\n",
            "evaluation_metrics.groups.train",
            "expected a mapping",
        ),
        (
            BASE + "evaluation_metrics: {groups: {train: {regex: r, scalars: {loss: $loss}}}}\n",
            "evaluation_metrics.groups.train.scalars.loss",
            "expected {type, value}",
        ),
        (
            BASE
            + "evaluation_metrics:\n  groups:\n    train:\n"
            + "      scalars: {loss: {type: DOUBLE, value: x}}\n",
            "evaluation_metrics.groups.train.scalars.loss.type",
            "unknown type 'DOUBLE'",
        ),
        (
            BASE + "evaluation_metrics: {groups: {train: {scalars: {loss: {value: x}}}}}\n",
            "evaluation_metrics.groups.train.scalars.loss.type",
            "required",
        ),
        (
            BASE + "evaluation_metrics: {groups: {train: {etimes: {step: {type: INT}}}}}\n",
            "evaluation_metrics.groups.train.etimes.step.value",
            "required",
        ),
        (
            BASE + "evaluation_metrics: {groups: {train: {scalars: {}, values: {}}}}\n",
            "evaluation_metrics.groups.train",
            "scalars or values, not both",
        ),
        (
            BASE + "evaluation_metrics: {groups: {train: {meta: {tiem: x}}}}\n",
            "evaluation_metrics.groups.train.meta.tiem",
            "did you mean 'time'",
        ),
    ],
)
def test_errors_name_the_field(text, field, fragment):
    error = error_for(text)
    assert error.field == field
    assert str(error).startswith(f"manifest field '{field}': ")
    assert fragment in str(error)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "manifest.yml"
    path.write_text("name: n\nframework:\n  name: python\n   version: '3'\n")
    with pytest.raises(
        ManifestError, match=r"manifest.yml is not valid YAML \(line 4, column \d+\)"
    ):
        load_manifest(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: n\n", "must be a YAML mapping of fields (name, framework, ...), not a list"),
        ("just words", "must be a YAML mapping of fields (name, framework, ...), not text"),
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
    ],
)
def test_top_level_must_be_a_mapping(text, message):
    with pytest.raises(ManifestError) as caught:
        load_manifest(text + "\n")
    assert message in str(caught.value)
    assert caught.value.field is None


def test_load_from_path_str_path_or_text(tmp_path):
    path = tmp_path / "m.yml"
    path.write_text(BASE)
    expected = {"name": "n", "framework": {"name": "python", "version": "3", "command": "c"}}
    assert load_manifest(path) == expected
    assert load_manifest(str(path)) == expected
    assert load_manifest(BASE) == expected


def test_missing_manifest_file_is_named(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ManifestError, match=f"manifest file not found: {missing}"):
        load_manifest(str(missing))
    with pytest.raises(ManifestError, match=f"cannot read manifest file {missing}"):
        load_manifest(missing)


def test_a_manifest_that_is_not_a_mapping_is_refused():
    with pytest.raises(ManifestError, match="must be a mapping, not a list"):
        manifest_to_request(["name"], b"")  # type: ignore[arg-type]


def test_python_dict_with_native_numbers():
    request = manifest_to_request(
        {
            "name": "n",
            "cpus": 2,
            "learners": "2",
            "memory": "2GiB",
            "framework": {"name": "python", "version": 3, "command": "c"},
        },
        b"",
    )
    assert request.training.resources.cpus == 2
    assert request.training.resources.learners == 2
    assert request.model_definition.framework.version == "3"


def test_empty_data_stores_list_means_none():
    request = request_for(BASE + "data_stores: []\n")
    assert not request.datastores and not request.training.input_data
