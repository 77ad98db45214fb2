"""Checking a job's EMExtractionSpec at submission, so a bad one is refused with
a message naming the group and the problem instead of failing while the job runs.

The result says which collector to run and, for regex_extractor, holds each
group's compiled regex and its value templates ready for the extractor.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import regex

from dlaas_jupyter.proto import trainer_pb2 as pb

Kind = Literal["logs", "regex", "file", "tensorboard"]

KINDS: dict[str, Kind] = {
    "": "logs",
    "logger": "logs",
    "none": "logs",
    "null": "logs",
    "nil": "logs",
    "regex_extractor": "regex",
    "optivist": "file",
    "emetrics_file": "file",
    "file": "file",
    "tensorboard": "tensorboard",
    "tensorboard_extractor": "tensorboard",
}

# FfDL's regex_extractor macros (its patterns/common-patterns), text for text.
MACROS: dict[str, str] = {
    "GLOG_STAMP": r"[EFIW]\d\d\d\d\s+\d\d\:\d\d\:\d*\.\d+",
    "TIMESTAMP": r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[.]\d+?Z|[-+]\d{2}:\d{2}?)",
    "FLOAT": r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?",
    "INT": r"[-+]?\d+",
    "INT_ANY": r"[-+]?(0[xX][\dA-Fa-f]+|0[0-7]*|\d+)",
    "HEX": r"[-+]?(0[xX])?[\dA-Fa-f]+",
}

TYPES: dict[str, pb.Any.DataType.ValueType] = {
    "STRING": pb.Any.STRING,
    "JSONSTRING": pb.Any.JSONSTRING,
    "INT": pb.Any.INT,
    "FLOAT": pb.Any.FLOAT,
}

DEFAULT_LINE_LOOKAHEAD = 4
# Each new line re-joins the window and re-runs the regexes over it: a bound
# keeps that cost linear in practice (FfDL's records span a handful of lines).
MAX_LINE_LOOKAHEAD = 100

# VERSION0 is regex's default, pinned so a process-wide change cannot alter matching.
FLAGS = regex.MULTILINE | regex.DOTALL | regex.VERSION0

_MACRO_REF = re.compile(r"%\{(\w+)(?::(\w+))?\}")


class SpecError(ValueError):
    """An evaluation_metrics spec that cannot be collected; the message says why."""


@dataclass(frozen=True)
class Template:
    """Where one value of a record comes from: a named regex group or a literal."""

    type: pb.Any.DataType.ValueType
    ref: str | None  # the named group whose text is the value; None for a literal
    literal: str  # the literal value, normalised as typed_text() does (ref is None)


@dataclass(frozen=True)
class GroupSpec:
    """One regex group: a match of ``pattern`` becomes one record labelled ``name``."""

    name: str
    pattern: regex.Pattern[str]
    values: tuple[tuple[str, Template], ...]  # sorted by key
    etimes: tuple[tuple[str, Template], ...]  # sorted by key
    subid: Template | None  # meta.subid; None: the learner's own subid
    time_ref: str | None  # the named group holding the record's time; None: collection time


@dataclass(frozen=True)
class MetricsSpec:
    """Which collector a job runs, and what it needs."""

    kind: Kind
    folder: str  # spec.in, variables like $LOG_DIR still unexpanded; "" if none
    line_lookahead: int
    groups: tuple[GroupSpec, ...]  # regex kind only, sorted by name (the order they are tried)


LOGS_ONLY = MetricsSpec(kind="logs", folder="", line_lookahead=DEFAULT_LINE_LOOKAHEAD, groups=())


def parse_spec(spec: pb.EMExtractionSpec | None) -> MetricsSpec:
    """The collector a job asks for, checked; raises SpecError naming the problem."""
    if spec is None:
        return LOGS_ONLY
    kind = KINDS.get(spec.type.strip().lower())
    if kind is None:
        raise SpecError(
            f"evaluation_metrics type {spec.type!r} is not known; "
            "use one of: logger, regex_extractor, emetrics_file, tensorboard"
        )
    if kind == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise SpecError(
            "evaluation_metrics type tensorboard needs the tensorboard package: "
            "pip install 'dlaas-jupyter[tensorboard]'"
        )
    lookahead = spec.line_lookahead or DEFAULT_LINE_LOOKAHEAD
    if not 1 <= lookahead <= MAX_LINE_LOOKAHEAD:
        raise SpecError(
            f"evaluation_metrics line_lookahead is {spec.line_lookahead}; give a number of lines "
            f"from 1 to {MAX_LINE_LOOKAHEAD} (0 means the default, {DEFAULT_LINE_LOOKAHEAD})"
        )
    groups: tuple[GroupSpec, ...] = ()
    if kind == "regex":
        if not spec.groups:
            raise SpecError("evaluation_metrics type regex_extractor needs at least one group")
        groups = tuple(_parse_group(name, spec.groups[name]) for name in sorted(spec.groups))
    return MetricsSpec(
        kind=kind, folder=getattr(spec, "in"), line_lookahead=lookahead, groups=groups
    )


def typed_text(type_: pb.Any.DataType.ValueType, text: str) -> str | None:
    """``text`` as a value of Any type ``type_``, or None when it is not one.

    INT and FLOAT are normalised (``+07`` -> ``7``, ``0x1F`` -> ``31``,
    ``2.50`` -> ``2.5``, ``1E-5`` -> ``1e-05``) so readers need not know
    Python's or C's number syntax; JSONSTRING must parse as JSON.
    """
    if type_ == pb.Any.FLOAT:
        try:
            return repr(float(text))
        except ValueError:
            return None
    if type_ == pb.Any.INT:
        try:
            return str(int(text))
        except ValueError:
            try:  # 0x1F, 0o17, 0b101: what INT_ANY and HEX capture
                return str(int(text.strip(), 0))
            except ValueError:
                return None
    if type_ == pb.Any.JSONSTRING:
        try:
            json.loads(text)
        except ValueError:
            return None
    return text


def expand_macros(pattern: str, group: str) -> str:
    """``pattern`` with %{NAME:var} as ``(?P<var>...)`` and %{NAME} as ``(?:...)``.

    The macro text is returned from a function, never used as an re.sub
    replacement string, whose escapes broke FfDL's expansion ("bad escape \\d").
    """

    def expand(ref: re.Match[str]) -> str:
        body = MACROS.get(ref[1])
        if body is None:
            known = ", ".join(sorted(MACROS))
            raise SpecError(
                f"group {group!r}: unknown macro %{{{ref[1]}}} in regex; known: {known}"
            )
        return f"(?P<{ref[2]}>{body})" if ref[2] else f"(?:{body})"

    return _MACRO_REF.sub(expand, pattern)


def _parse_group(name: str, group: pb.EMGroup) -> GroupSpec:
    if not group.regex:
        raise SpecError(f"group {name!r}: regex is empty")
    try:
        pattern = regex.compile(expand_macros(group.regex, name), FLAGS)
    except regex.error as exc:
        raise SpecError(f"group {name!r}: invalid regex: {exc}") from None
    named = pattern.groupindex

    def ref(field: str, value: str) -> str | None:
        if not value.startswith("$"):
            return None
        if value[1:] not in named:
            raise SpecError(
                f"group {name!r}: {field} refers to {value}, "
                f"but the regex has no group named {value[1:]!r}"
            )
        return value[1:]

    def templates(field: str, entries: Mapping[str, pb.EMAny]) -> tuple[tuple[str, Template], ...]:
        out = []
        for key in sorted(entries):
            entry = entries[key]
            type_ = TYPES.get(entry.type.strip().upper())
            if type_ is None:
                raise SpecError(
                    f"group {name!r}: {field}.{key} has type {entry.type!r}; "
                    f"use one of {', '.join(TYPES)}"
                )
            source = ref(f"{field}.{key}", entry.value)
            literal = ""
            if source is None:
                normal = typed_text(type_, entry.value)
                if normal is None:
                    raise SpecError(
                        f"group {name!r}: {field}.{key} is the literal {entry.value!r}, "
                        f"which is not of type {entry.type.strip().upper()}"
                    )
                literal = normal
            out.append((key, Template(type=type_, ref=source, literal=literal)))
        return tuple(out)

    values = templates("values", group.values)
    if not values:
        raise SpecError(
            f"group {name!r} has no values; give at least one "
            "(the manifest's evaluation_metrics groups call them scalars)"
        )
    etimes = templates("etimes", group.etimes)
    subid = None
    if group.meta.subid:
        subid = Template(
            type=pb.Any.STRING, ref=ref("meta.subid", group.meta.subid), literal=group.meta.subid
        )
    time_ref = None
    if group.meta.time:
        time_ref = ref("meta.time", group.meta.time)
        if time_ref is None:
            raise SpecError(
                f"group {name!r}: meta.time is {group.meta.time!r}; give $name of the regex group "
                "holding each record's time"
            )
    return GroupSpec(
        name=name, pattern=pattern, values=values, etimes=etimes, subid=subid, time_ref=time_ref
    )
