"""The FfDL manifest.yml and its mapping to a CreateRequest.

The mapping is the one FfDL's own CLI applies, so a manifest written for an
FfDL cluster submits the same job here. Where FfDL silently guesses (a size it
cannot parse becomes 512 MB, a misspelt key is ignored) this module refuses
with an error naming the field instead.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dlaas_jupyter.proto import trainer_pb2 as pb

__all__ = ["ManifestError", "load_manifest", "manifest_to_request", "parse_size"]


class ManifestError(ValueError):
    """A manifest that cannot be turned into a training request.

    ``field`` is the dotted path of the offending field (e.g. ``framework.command``),
    or None when the manifest as a whole is at fault; ``problem`` is the message
    without the field, for callers that name the field their own way.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.problem = message
        super().__init__(f"manifest field '{field}': {message}" if field else message)


class _YamlFloat(float):
    """A float that remembers how it was written, so `version: 1.10` stays "1.10"."""

    text: str


class _Loader(yaml.SafeLoader):
    pass


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    number = _YamlFloat(loader.construct_yaml_float(node))
    number.text = node.value
    return number


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_manifest(source: str | Path) -> dict[str, Any]:
    """Read a manifest from a file (a Path, or a str naming an existing file) or YAML text."""
    origin = "manifest"
    if isinstance(source, Path) or ("\n" not in source and Path(source).is_file()):
        origin = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read manifest file {origin}: {exc}") from exc
    elif "\n" not in source and source.endswith((".yml", ".yaml")):
        raise ManifestError(f"manifest file not found: {source}")
    else:
        text = source
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ManifestError(f"{origin} is not valid YAML{where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{origin} is not valid YAML: {exc}") from exc
    if data is None:
        raise ManifestError(f"{origin} is empty")
    if not isinstance(data, dict):
        raise ManifestError(
            f"{origin} must be a YAML mapping of fields (name, framework, ...), not {_kind(data)}"
        )
    return data


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*$", re.IGNORECASE)
_UNITS = {name.lower(): number for name, number in pb.SizeUnit.items()}


def parse_size(value: str | float, field: str) -> tuple[float, pb.SizeUnit.ValueType]:
    """Parse a size such as "1Gb", "16GB", "1000MiB" into (number, pb.SizeUnit).

    The unit is required: a bare number is refused rather than guessed.
    """
    expected = "expected a number and a unit MB, MiB, GB or GiB, e.g. 2GiB"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ManifestError(f"expected a size such as 2GiB, not {_kind(value)}", field)
    text = value.text if isinstance(value, _YamlFloat) else str(value)
    match = _SIZE.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ManifestError(f"cannot parse '{text}' ({expected})", field)
    return float(match.group(1)), unit


_TOP_LEVEL = {
    "name",
    "description",
    "version",
    "cpus",
    "gpus",
    "gpu_type",
    "learners",
    "memory",
    "storage",
    "framework",
    "data_stores",
    "evaluation_metrics",
}
_FRAMEWORK = {"name", "version", "image_tag", "command", "image_location"}
_IMAGE_LOCATION = {"registry", "namespace", "access_token", "email"}
_DATA_STORE = {"id", "type", "training_data", "training_results", "connection"}
_CONTAINER = {"container"}
_METRICS = {"type", "in", "line_lookahead", "eventTypes", "event_types", "groups", "image_tag"}
_GROUP = {"regex", "meta", "scalars", "values", "etimes"}
_META = {"time", "subid"}
_TEMPLATE = {"type", "value"}
_TEMPLATE_TYPES = ("STRING", "JSONSTRING", "INT", "FLOAT")


def manifest_to_request(
    manifest: Mapping[str, Any], model_zip: bytes, *, user_id: str = ""
) -> pb.CreateRequest:
    """Build the CreateRequest FfDL's CLI would send for this manifest and model zip.

    Without ``data_stores`` the request has no datastores; the client then supplies
    a local one.
    """
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"the manifest must be a mapping, not {_kind(manifest)}")
    _check_keys(manifest, _TOP_LEVEL, None)
    request = pb.CreateRequest(user_id=user_id)

    definition = request.model_definition
    definition.name = _text(manifest, "name", None, required=True)
    definition.description = _text(manifest, "description", None)
    definition.content = model_zip

    framework = _mapping(manifest, "framework", None, required=True)
    _check_keys(framework, _FRAMEWORK, "framework")
    definition.framework.name = _text(framework, "name", "framework", required=True)
    definition.framework.version = _text(framework, "version", "framework", required=True)
    definition.framework.image_tag = _text(framework, "image_tag", "framework")
    if "image_location" in framework:
        location = _mapping(framework, "image_location", "framework")
        _check_keys(location, _IMAGE_LOCATION, "framework.image_location")
        for key in sorted(_IMAGE_LOCATION):
            setattr(
                definition.framework.image_location,
                key,
                _text(location, key, "framework.image_location"),
            )

    # FfDL's Trainer turns each line break into a space: a folded (>) command with
    # more-indented continuation lines keeps its breaks in YAML but is one command.
    command = _text(framework, "command", "framework", required=True)
    request.training.command = re.sub(r"\r?\n", " ", command).strip()
    _set_resources(manifest, request.training)
    _set_data_stores(manifest, request)
    if manifest.get("evaluation_metrics") is not None:
        request.evaluation_metrics.CopyFrom(_metrics_spec(manifest))
    return request


def _set_resources(manifest: Mapping[str, Any], training: pb.Training) -> None:
    """Fill training.resources only when given, so a bare manifest gets the Trainer's defaults."""
    keys = {"cpus", "gpus", "gpu_type", "learners", "memory", "storage"}
    if not any(manifest.get(key) is not None for key in keys):
        return
    resources = training.resources
    resources.SetInParent()
    resources.cpus = _number(manifest, "cpus")
    resources.gpus = _number(manifest, "gpus")
    resources.gpu_type = _text(manifest, "gpu_type", None)
    resources.learners = _integer(manifest, "learners", None)
    if manifest.get("memory") is not None:
        resources.memory, resources.memory_unit = parse_size(manifest["memory"], "memory")
    if manifest.get("storage") is not None:
        resources.storage, resources.storage_unit = parse_size(manifest["storage"], "storage")


def _set_data_stores(manifest: Mapping[str, Any], request: pb.CreateRequest) -> None:
    stores = manifest.get("data_stores")
    if stores is None or stores == []:
        return
    if not isinstance(stores, list):
        raise ManifestError(
            f"expected a list with one data store, not {_kind(stores)}", "data_stores"
        )
    if len(stores) != 1:
        raise ManifestError(
            f"exactly one data store is supported, got {len(stores)}", "data_stores"
        )
    path = "data_stores[0]"
    store = stores[0]
    if not isinstance(store, Mapping):
        raise ManifestError(f"expected a mapping, not {_kind(store)}", path)
    _check_keys(store, _DATA_STORE, path)
    store_id = _text(store, "id", path, required=True)
    store_type = _text(store, "type", path, required=True)
    connection_map = _mapping(store, "connection", path)
    connection = {
        str(key): _text(connection_map, key, f"{path}.connection") for key in connection_map
    }

    def add(role: str, key: str) -> str:
        container = _mapping(store, key, path, required=True)
        _check_keys(container, _CONTAINER, f"{path}.{key}")
        datastore = request.datastores.add(id=f"{store_id}-{role}", type=store_type)
        datastore.fields["bucket"] = _text(container, "container", f"{path}.{key}", required=True)
        datastore.connection.update(connection)
        return datastore.id

    request.training.input_data.append(add("input", "training_data"))
    if store.get("training_results") is not None:
        request.training.output_data.append(add("output", "training_results"))


def _metrics_spec(manifest: Mapping[str, Any]) -> pb.EMExtractionSpec:
    path = "evaluation_metrics"
    metrics = _mapping(manifest, "evaluation_metrics", None)
    _check_keys(metrics, _METRICS, path)
    if "eventTypes" in metrics and "event_types" in metrics:
        raise ManifestError("give eventTypes or event_types, not both", path)
    events_key = "event_types" if "event_types" in metrics else "eventTypes"
    spec = pb.EMExtractionSpec(
        type=_text(metrics, "type", path),
        image_tag=_text(metrics, "image_tag", path),
        line_lookahead=_integer(metrics, "line_lookahead", path),
        eventTypes=_text_list(metrics, events_key, path),
    )
    setattr(spec, "in", _text(metrics, "in", path))  # `in` is a Python keyword
    groups = _mapping(metrics, "groups", path)
    for name, group_value in groups.items():
        group_path = f"{path}.groups.{name}"
        if not isinstance(group_value, Mapping):
            raise ManifestError(f"expected a mapping, not {_kind(group_value)}", group_path)
        _check_keys(group_value, _GROUP, group_path)
        group = spec.groups[str(name)]
        group.regex = _text(group_value, "regex", group_path)
        meta = _mapping(group_value, "meta", group_path)
        _check_keys(meta, _META, f"{group_path}.meta")
        group.meta.time = _text(meta, "time", f"{group_path}.meta")
        group.meta.subid = _text(meta, "subid", f"{group_path}.meta")
        if "scalars" in group_value and "values" in group_value:
            raise ManifestError("give scalars or values, not both", group_path)
        values_key = "values" if "values" in group_value else "scalars"
        _fill_templates(group.values, group_value, values_key, group_path)
        _fill_templates(group.etimes, group_value, "etimes", group_path)
    return spec


def _fill_templates(target: Any, group: Mapping[str, Any], key: str, group_path: str) -> None:
    templates = _mapping(group, key, group_path)
    for name, template in templates.items():
        path = f"{group_path}.{key}.{name}"
        if not isinstance(template, Mapping):
            raise ManifestError(
                f"expected {{type, value}}, e.g. {{type: FLOAT, value: $loss}}, "
                f"not {_kind(template)}",
                path,
            )
        _check_keys(template, _TEMPLATE, path)
        value_type = _text(template, "type", path, required=True).upper()
        if value_type not in _TEMPLATE_TYPES:
            raise ManifestError(
                f"unknown type '{template['type']}' (expected one of {', '.join(_TEMPLATE_TYPES)})",
                f"{path}.type",
            )
        target[str(name)].type = value_type
        target[str(name)].value = _text(template, "value", path, required=True)


def _join(parent: str | None, key: object) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _kind(value: object) -> str:
    """How a YAML user would name the type of a value."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _check_keys(mapping: Mapping[str, Any], known: set[str], parent: str | None) -> None:
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ManifestError(
                f"unknown field (known: {', '.join(sorted(known))}){hint}", _join(parent, key)
            )


def _text(
    mapping: Mapping[str, Any], key: str, parent: str | None, *, required: bool = False
) -> str:
    field = _join(parent, key)
    value = mapping.get(key)
    if value is None or value == "":
        if required:
            raise ManifestError("required", field)
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, _YamlFloat):
        return value.text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ManifestError(f"expected text, not {_kind(value)}", field)


def _text_list(mapping: Mapping[str, Any], key: str, parent: str) -> list[str]:
    value = mapping.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"expected a list, not {_kind(value)}", _join(parent, key))
    return [_text({key: item}, key, parent, required=True) for item in value]


def _number(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key)
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ManifestError(f"expected a number, not '{value}'", key) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"expected a number, not {_kind(value)}", key)
    if not math.isfinite(value) or value < 0:
        raise ManifestError(f"expected a number of at least 0, not {value}", key)
    return float(value)


def _integer(mapping: Mapping[str, Any], key: str, parent: str | None) -> int:
    field = _join(parent, key)
    value = mapping.get(key)
    if value is None:
        return 0
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = f"'{value}'" if isinstance(value, (str, float)) else _kind(value)
        raise ManifestError(f"expected a whole number, not {shown}", field)
    if value < 0:
        raise ManifestError(f"expected a whole number of at least 0, not {value}", field)
    if value >= 2**31:
        raise ManifestError(f"{value} is too large", field)
    return value


def _mapping(
    mapping: Mapping[str, Any], key: str, parent: str | None, *, required: bool = False
) -> Mapping[str, Any]:
    field = _join(parent, key)
    value = mapping.get(key)
    if value is None:
        if required:
            raise ManifestError("required", field)
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(f"expected a mapping, not {_kind(value)}", field)
    return value
