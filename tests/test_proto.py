"""The Trainer protocol: the committed stubs are current, and trainer.proto says
exactly what shared/reference/trainer-wire.md says about FfDL's wire.

The wire facts are parsed from the reference document rather than copied here,
so the check cannot drift from the facts it checks.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from grpc_tools import protoc

from dlaas_jupyter.proto import trainer_pb2, trainer_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "dlaas_jupyter" / "proto"
WIRE_DOC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "trainer-wire.md"


# --- stale stubs -------------------------------------------------------------


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "generate_proto.py"
    spec = importlib.util.spec_from_file_location("generate_proto", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_trainer_proto(tmp_path: Path) -> None:
    generator = _load_generator()
    written = generator.generate(tmp_path)
    assert [p.name for p in written] == list(generator.OUTPUTS)
    stale = [p.name for p in written if p.read_bytes() != (PROTO_DIR / p.name).read_bytes()]
    assert not stale, (
        f"stubs out of date with trainer.proto: {', '.join(stale)}; "
        "run `python scripts/generate_proto.py`"
    )


# --- the wire facts ------------------------------------------------------------

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "float", "double"}
_FIELD = re.compile(r"(\w+)=(\d+):((?:repeated )?[\w.]+|map<\w+,\s*[\w.]+>)")
_NESTED_ENUM = re.compile(r"nested enum (\w+) \{ (.*) \}")
_ENUM_VALUE = re.compile(r"(\w+)=(\d+)")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)")


@dataclass
class WireFacts:
    """What the reference document fixes: names, numbers, types, streaming."""

    package: str
    service: str
    # method -> (request, response, server streaming)
    methods: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    # message -> field -> (number, type as written in the document)
    messages: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    # "Status" or "Any.DataType" -> value -> number
    enums: dict[str, dict[str, int]] = field(default_factory=dict)


def parse_wire_facts(text: str) -> WireFacts:
    """Parse trainer-wire.md; any bullet or table row it cannot read is an error."""
    package = re.search(r"^- proto package: `([\w.]+)`", text, re.M)
    service = re.search(r"^- service: `(\w+)`", text, re.M)
    if not (package and service):
        raise ValueError("trainer-wire.md names no proto package or service")
    facts = WireFacts(package.group(1), service.group(1))
    sections = dict(_sections(text))
    for row in [line for line in sections["Methods"].splitlines() if line.startswith("|")][2:]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        response = re.fullmatch(r"(stream )?(\w+)", cells[2])
        if not (re.fullmatch(r"\w+", cells[0]) and re.fullmatch(r"\w+", cells[1]) and response):
            raise ValueError(f"cannot read method row {row!r}")
        facts.methods[cells[0]] = (cells[1], response.group(2), bool(response.group(1)))
    messages, _, enums = sections["Messages (field = number : type)"].partition("Top-level enums:")
    for line in _bullets(messages):
        _parse_message(line, facts)
    for line in _bullets(enums):
        name, _, values = line.partition(": ")
        facts.enums[name] = _enum_values(values, line)
    return facts


def _sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def _bullets(text: str) -> list[str]:
    return [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]


def _parse_message(line: str, facts: WireFacts) -> None:
    head, sep, body = line.partition(": ")
    if not sep:
        raise ValueError(f"cannot read message line {line!r}")
    names = re.split(r"\s*[,/]\s*", head)
    body = _PARENTHETICAL.sub("", body).strip()
    same = re.fullmatch(r"same shapes as (.+)", body)
    if same:
        for name, model in zip(names, re.split(r"\s*/\s*", same.group(1)), strict=True):
            facts.messages[name] = dict(facts.messages[model])
        return
    fields_text, *nested = body.split("; ")
    fields: dict[str, tuple[int, str]] = {}
    if fields_text:
        for item in re.split(r",\s*(?![^<]*>)", fields_text):
            match = _FIELD.fullmatch(item.strip())
            if not match:
                raise ValueError(f"cannot read field {item!r} in {line!r}")
            kind = re.sub(r"\s+", "", match.group(3)) if "<" in match.group(3) else match.group(3)
            fields[match.group(1)] = (int(match.group(2)), kind)
    for name in names:
        facts.messages[name] = dict(fields)
        for enum_text in nested:
            enum = _NESTED_ENUM.fullmatch(enum_text)
            if not enum:
                raise ValueError(f"cannot read nested enum {enum_text!r} in {line!r}")
            facts.enums[f"{name}.{enum.group(1)}"] = _enum_values(enum.group(2), line)


def _enum_values(text: str, line: str) -> dict[str, int]:
    values = {}
    for item in text.split(","):
        match = _ENUM_VALUE.fullmatch(item.strip())
        if not match:
            raise ValueError(f"cannot read enum value {item!r} in {line!r}")
        values[match.group(1)] = int(match.group(2))
    return values


@pytest.fixture(scope="module")
def wire() -> WireFacts:
    if not WIRE_DOC.exists():
        pytest.skip(f"the wire reference {WIRE_DOC} is not beside the repository")
    return parse_wire_facts(WIRE_DOC.read_text(encoding="utf-8"))


# --- comparing a compiled .proto with the facts ---------------------------------


def _relative(full_name: str, package: str) -> str:
    return full_name.removeprefix(f"{package}.")


def _element_type(f: FieldDescriptor, package: str) -> str:
    if f.message_type is not None:
        return _relative(f.message_type.full_name, package)
    if f.enum_type is not None:
        return _relative(f.enum_type.full_name, package)
    return descriptor_pb2.FieldDescriptorProto.Type.Name(f.type).removeprefix("TYPE_").lower()


def field_type(f: FieldDescriptor, package: str) -> str:
    """A field's type written the way the reference document writes it."""
    entry = f.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{_element_type(key, package)},{_element_type(value, package)}>"
    return ("repeated " if f.is_repeated else "") + _element_type(f, package)


def method_mismatches(facts: WireFacts, fd: FileDescriptor) -> list[str]:
    if fd.package != facts.package:
        return [f"package is {fd.package!r}, the wire says {facts.package!r}"]
    service = fd.services_by_name.get(facts.service)
    if service is None:
        return [f"no service {facts.service}"]
    problems = []
    for name, (request, response, streaming) in facts.methods.items():
        method = service.methods_by_name.get(name)
        if method is None:
            problems.append(f"method {name} is missing")
            continue
        got = (
            _relative(method.input_type.full_name, fd.package),
            _relative(method.output_type.full_name, fd.package),
            method.server_streaming,
            method.client_streaming,
        )
        if got != (request, response, streaming, False):
            problems.append(
                f"method {name}: (request, response, server streaming, client streaming) "
                f"is {got}, the wire says {(request, response, streaming, False)}"
            )
    extra = service.methods_by_name.keys() - facts.methods.keys()
    problems += [f"method {m} is not in the wire facts" for m in sorted(extra)]
    return problems


def message_mismatches(facts: WireFacts, fd: FileDescriptor) -> list[str]:
    problems = []
    for name, fields in facts.messages.items():
        message: Descriptor | None = fd.message_types_by_name.get(name)
        if message is None:
            problems.append(f"message {name} is missing")
            continue
        for field_name, (number, kind) in fields.items():
            f = message.fields_by_name.get(field_name)
            if f is None:
                problems.append(f"field {name}.{field_name} is missing")
            elif (f.number, field_type(f, fd.package)) != (number, kind):
                problems.append(
                    f"field {name}.{field_name} is {f.number}:{field_type(f, fd.package)}, "
                    f"the wire says {number}:{kind}"
                )
        extra = message.fields_by_name.keys() - fields.keys()
        problems += [f"field {name}.{f} is not in the wire facts" for f in sorted(extra)]
    extra = fd.message_types_by_name.keys() - facts.messages.keys()
    problems += [f"message {m} is not in the wire facts" for m in sorted(extra)]
    return problems


def _all_enums(fd: FileDescriptor) -> dict[str, EnumDescriptor]:
    enums = dict(fd.enum_types_by_name)
    for message in fd.message_types_by_name.values():
        enums.update({f"{message.name}.{e.name}": e for e in message.enum_types})
    return enums


def enum_mismatches(facts: WireFacts, fd: FileDescriptor) -> list[str]:
    declared = _all_enums(fd)
    problems = []
    for name, values in facts.enums.items():
        enum = declared.get(name)
        got = None if enum is None else {v.name: v.number for v in enum.values}
        if got != values:
            problems.append(f"enum {name} is {got}, the wire says {values}")
    extra = declared.keys() - facts.enums.keys()
    problems += [f"enum {e} is not in the wire facts" for e in sorted(extra)]
    return problems


def all_mismatches(facts: WireFacts, fd: FileDescriptor) -> list[str]:
    return method_mismatches(facts, fd) + message_mismatches(facts, fd) + enum_mismatches(facts, fd)


# --- tests -----------------------------------------------------------------------


def test_wire_facts_parse_into_a_closed_set(wire: WireFacts) -> None:
    # Every type the document uses is defined in it: a bullet the parser missed
    # would leave a dangling reference here.
    defined = SCALARS | wire.messages.keys() | wire.enums.keys()
    used = {t for request, response, _ in wire.methods.values() for t in (request, response)}
    for fields in wire.messages.values():
        for _, kind in fields.values():
            used.add(re.sub(r"^repeated |^map<\w+,|>$", "", kind))
    assert used - defined == set()
    assert wire.methods and wire.messages and "Status" in wire.enums


def test_service_methods_match_the_wire(wire: WireFacts) -> None:
    problems = method_mismatches(wire, trainer_pb2.DESCRIPTOR)
    assert not problems, "\n".join(problems)


def test_messages_match_the_wire(wire: WireFacts) -> None:
    problems = message_mismatches(wire, trainer_pb2.DESCRIPTOR)
    assert not problems, "\n".join(problems)


def test_enums_match_the_wire(wire: WireFacts) -> None:
    problems = enum_mismatches(wire, trainer_pb2.DESCRIPTOR)
    assert not problems, "\n".join(problems)


class _RecordingChannel:
    """Stands in for a grpc.Channel to capture the paths the generated stub calls."""

    def __init__(self) -> None:
        self.calls: dict[str, str] = {}

    def __getattr__(self, kind: str) -> Callable[..., None]:  # unary_unary, unary_stream, ...
        def register(path: str, *args: object, **kwargs: object) -> None:
            self.calls[path] = kind

        return register


def test_stub_method_paths_are_ffdls(wire: WireFacts) -> None:
    channel = _RecordingChannel()
    trainer_pb2_grpc.TrainerStub(channel)
    expected = {
        f"/{wire.package}.{wire.service}/{name}": "unary_stream" if streaming else "unary_unary"
        for name, (_, _, streaming) in wire.methods.items()
    }
    assert channel.calls == expected


def _compile_in_own_pool(proto: Path) -> FileDescriptor:
    """Compile a .proto into a private pool, so it cannot clash with our stubs."""
    descriptor_set = proto.with_suffix(".pb")
    args = ["protoc", f"-I{proto.parent}", f"--descriptor_set_out={descriptor_set}", proto.name]
    assert protoc.main(args) == 0, f"protoc failed on {proto}"
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    return descriptor_pool.DescriptorPool().AddSerializedFile(files.file[0].SerializeToString())


@pytest.mark.parametrize(
    ("original", "broken", "reported"),
    [
        ("int64 rindex = 4;", "int64 rindex = 6;", "field MetaInfo.rindex is 6:int64"),
        ("int64 time = 3;", "int32 time = 3;", "field MetaInfo.time is 3:int32"),
        ("repeated Job jobs = 1;", "Job jobs = 1;", "field GetAllResponse.jobs is 1:Job"),
        ("map<string, Any> etimes = 2;", "map<string, EMAny> etimes = 2;", "field EMetrics.etimes"),
        ("returns (stream LogLine)", "returns (LogLine)", "method GetTrainingLogs"),
        ("rpc GetAllTrainingsJobs", "rpc GetAllTrainingJobs", "method GetAllTrainingsJobs"),
        ("QUEUED = 70;", "QUEUED = 7;", "enum Status"),
        ("    FLOAT = 3;", "    FLOAT = 3;\n    BOOL = 4;", "enum Any.DataType"),
    ],
)
def test_a_wrong_proto_is_caught(
    wire: WireFacts, tmp_path: Path, original: str, broken: str, reported: str
) -> None:
    text = (PROTO_DIR / "trainer.proto").read_text(encoding="utf-8")
    assert text.count(original) == 1, f"{original!r} no longer occurs once in trainer.proto"
    proto = tmp_path / "trainer.proto"
    proto.write_text(text.replace(original, broken), encoding="utf-8")
    problems = all_mismatches(wire, _compile_in_own_pool(proto))
    assert any(p.startswith(reported) for p in problems), problems


def test_the_unbroken_copy_compiles_clean(wire: WireFacts, tmp_path: Path) -> None:
    # The baseline for the test above: only the edit makes the difference.
    proto = tmp_path / "trainer.proto"
    proto.write_bytes((PROTO_DIR / "trainer.proto").read_bytes())
    assert all_mismatches(wire, _compile_in_own_pool(proto)) == []
