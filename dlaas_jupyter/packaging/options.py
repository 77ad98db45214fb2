"""The options of "train this notebook", shared by the %dlaas_train magics and the server's REST call.

A request is built in layers, each overriding the one before: defaults (the
name given by the caller, ``python:<this interpreter's major.minor>``,
``python main.py``), then the FfDL manifest (``--manifest``), then the flags.

The one-line regex metric, ``--metric-regex "[GROUP:]REGEX"``, spares writing
a manifest for the common case of metrics printed in the log. GROUP (letters,
digits, ``_``; default ``train``) labels the records; REGEX is matched at the
start of each log line and uses FfDL's macros, e.g.
``loss: Iteration %{INT:iteration}, loss = %{FLOAT:loss}``. Each named
capture (``%{MACRO:name}`` or ``(?P<name>...)``) becomes a value, except
``iteration``, ``epoch``, ``step``, ``tick`` and ``time``, which become etimes
(the x axis). A capture is INT when it uses %{INT}, %{INT_ANY} or %{HEX},
STRING when it uses %{TIMESTAMP} or %{GLOG_STAMP}, FLOAT otherwise; a
``time`` capture using %{TIMESTAMP} also dates the record. To match a line
that itself starts with ``word:``, give the group: ``train:loss: %{FLOAT:loss}``.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from dlaas_jupyter.packaging.manifest import (
    ManifestError,
    load_manifest,
    manifest_to_request,
    parse_size,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

__all__ = [
    "ETIME_NAMES",
    "METRICS",
    "OptionsError",
    "TrainOptions",
    "build_request",
    "default_framework",
    "describe",
    "metric_regex_spec",
]

# --metrics value -> EMExtractionSpec.type
METRICS = {
    "logger": "logger",
    "regex": "regex_extractor",
    "file": "emetrics_file",
    "tensorboard": "tensorboard",
}
ETIME_NAMES = frozenset({"iteration", "epoch", "step", "tick", "time"})
DEFAULT_GROUP = "train"

_INT_MACROS = {"INT", "INT_ANY", "HEX"}
_STRING_MACROS = {"TIMESTAMP", "GLOG_STAMP"}
_GROUP_PREFIX = re.compile(r"^(\w+):\s*(.*)$", re.DOTALL)
_CAPTURE = re.compile(r"%\{(\w+):(\w+)\}|\(\?P<(\w+)>")


class OptionsError(ValueError):
    """A training option that cannot be used; the message names the flag."""


@dataclass
class TrainOptions:
    """What the user asked for; None means "not given", so the manifest or the default applies."""

    name: str | None = None
    description: str = ""
    cpus: float | None = None
    gpus: float | None = None
    memory: str | None = None  # "2GiB": a number and MB, MiB, GB or GiB
    learners: int | None = None
    framework: str | None = None  # "name:version"
    command: str | None = None
    metrics: str | None = None  # a key of METRICS
    metric_regex: list[str] = field(default_factory=list)  # "[GROUP:]REGEX"
    manifest: Path | None = None
    include: list[Path] = field(default_factory=list)
    notebook: Path | None = None
    dry_run: bool = False
    wait: bool = False


def default_framework() -> tuple[str, str]:
    """("python", "<major.minor>") of this interpreter: what a notebook job runs on by default."""
    return "python", f"{sys.version_info.major}.{sys.version_info.minor}"


def build_request(
    packaged_zip: bytes, options: TrainOptions, *, default_name: str, main_script: str = "main.py"
) -> pb.CreateRequest:
    """The CreateRequest for ``packaged_zip``: defaults, then the manifest, then the flags."""
    framework_name, framework_version = default_framework()
    manifest: dict[str, Any] = {}
    if options.manifest is not None:
        manifest = copy.deepcopy(load_manifest(Path(options.manifest)))
    # Defaults go into the manifest so a short one (name and resources only) is enough.
    manifest.setdefault("name", default_name)
    framework = manifest.setdefault("framework", {})
    if isinstance(framework, dict):
        framework.setdefault("name", framework_name)
        framework.setdefault("version", framework_version)
        framework.setdefault("command", f"python {main_script}")
    request = manifest_to_request(manifest, packaged_zip)

    definition = request.model_definition
    if options.name is not None:
        if not options.name.strip():
            raise OptionsError("--name: give a non-empty name")
        definition.name = options.name
    if options.description:
        definition.description = options.description
    if options.framework is not None:
        name, _, version = options.framework.partition(":")
        if not name.strip() or not version.strip():
            raise OptionsError(
                f"--framework {options.framework!r}: expected NAME:VERSION, e.g. python:3.11"
            )
        definition.framework.name, definition.framework.version = name.strip(), version.strip()
    if options.command is not None:
        if not options.command.strip():
            raise OptionsError("--command: give the command that starts training")
        request.training.command = options.command.strip()
    _apply_resources(request.training, options)
    spec = _metrics(options)
    if spec is not None:
        request.evaluation_metrics.CopyFrom(spec)
    return request


def _apply_resources(training: pb.Training, options: TrainOptions) -> None:
    given = [options.cpus, options.gpus, options.memory, options.learners]
    if all(value is None for value in given):
        return
    resources = training.resources
    resources.SetInParent()
    for flag, value in (("--cpus", options.cpus), ("--gpus", options.gpus)):
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise OptionsError(f"{flag} {value!r}: expected a number of at least 0")
        setattr(resources, flag[2:], float(value))
    if options.learners is not None:
        if (
            isinstance(options.learners, bool)
            or not isinstance(options.learners, int)
            or options.learners < 1
        ):
            raise OptionsError(
                f"--learners {options.learners!r}: expected a whole number of at least 1"
            )
        resources.learners = options.learners
    if options.memory is not None:
        try:
            resources.memory, resources.memory_unit = parse_size(options.memory, "--memory")
        except ManifestError as exc:
            raise OptionsError(f"--memory: {exc.problem}") from None


def _metrics(options: TrainOptions) -> pb.EMExtractionSpec | None:
    kind = options.metrics
    if kind is not None and kind not in METRICS:
        raise OptionsError(f"--metrics {kind!r}: expected one of {', '.join(METRICS)}")
    if options.metric_regex and kind not in (None, "regex"):
        raise OptionsError(f"--metric-regex goes with --metrics regex, not --metrics {kind}")
    if kind == "regex" and not options.metric_regex:
        raise OptionsError('--metrics regex needs at least one --metric-regex "[GROUP:]REGEX"')
    if options.metric_regex:
        return metric_regex_spec(options.metric_regex)
    if kind is None:
        return None
    return pb.EMExtractionSpec(type=METRICS[kind])


def metric_regex_spec(expressions: list[str]) -> pb.EMExtractionSpec:
    """A regex_extractor spec from one-line ``[GROUP:]REGEX`` metrics (see the module doc)."""
    # One line per record: a longer window would hold back one-line records behind
    # a line no group matches.
    spec = pb.EMExtractionSpec(type=METRICS["regex"], line_lookahead=1)
    for expression in expressions:
        prefix = _GROUP_PREFIX.match(expression)
        group_name, regex = (
            (prefix.group(1), prefix.group(2)) if prefix else (DEFAULT_GROUP, expression)
        )
        regex = regex.strip()
        if not regex:
            raise OptionsError(f"--metric-regex {expression!r}: the regex is empty")
        if group_name in spec.groups:
            raise OptionsError(
                f"--metric-regex {expression!r}: group {group_name!r} is given twice; "
                'start each with its own "GROUP:"'
            )
        group = spec.groups[group_name]
        group.regex = regex
        for macro, macro_name, plain_name in _CAPTURE.findall(regex):
            name = macro_name or plain_name
            value_type = (
                "INT" if macro in _INT_MACROS else "STRING" if macro in _STRING_MACROS else "FLOAT"
            )
            target = group.etimes if name in ETIME_NAMES else group.values
            target[name].type = value_type
            target[name].value = f"${name}"
            if name == "time" and macro == "TIMESTAMP":
                group.meta.time = "$time"
        if not group.values:
            raise OptionsError(
                f"--metric-regex {expression!r}: it captures no value; name one, e.g. %{{FLOAT:loss}} "
                f"({', '.join(sorted(ETIME_NAMES))} are the x axis, not values)"
            )
    return spec


def describe(request: pb.CreateRequest, files: Mapping[str, bytes]) -> str:
    """What --dry-run shows: the zip's files with sizes, the main script's first lines, and
    the request in protobuf text format with the zip left out."""
    zipped = len(request.model_definition.content)
    lines = [f"Model definition ({len(files)} files, zip {_size(zipped)}):"]
    width = max((len(name) for name in files), default=0)
    lines.extend(
        f"  {name:<{width}}  {_size(len(data)):>10}" for name, data in sorted(files.items())
    )
    main = _main_script(request.training.command, files)
    if main is not None:
        head = files[main].decode("utf-8", "replace").splitlines()
        shown = head[:20]
        lines.append(f"\n{main} (first {len(shown)} of {len(head)} lines):")
        lines.extend(f"  {line}" for line in shown)
    shown_request = pb.CreateRequest()
    shown_request.CopyFrom(request)
    shown_request.model_definition.ClearField("content")
    lines.append(f"\nCreateRequest (model_definition.content: {zipped} bytes, not shown):")
    lines.extend(f"  {line}" for line in text_format.MessageToString(shown_request).splitlines())
    return "\n".join(lines) + "\n"


def _main_script(command: str, files: Mapping[str, bytes]) -> str | None:
    """The file the command runs: the first word of it naming a file of the zip."""
    for word in command.split():
        if word in files:
            return word
    return None


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
