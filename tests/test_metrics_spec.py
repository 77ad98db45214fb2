"""parse_spec: collector kinds, FfDL's macros text for text, and an error naming
the group and the problem for each way a spec can be wrong."""

from __future__ import annotations

import importlib.util

import pytest

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.spec import SpecError, Template, parse_spec, typed_text

TRAIN = {
    "regex": "Iteration %{INT:iteration}, loss = %{FLOAT:loss}",
    "values": {"loss": {"type": "FLOAT", "value": "$loss"}},
    "etimes": {"iteration": {"type": "INT", "value": "$iteration"}},
}


def regex_spec(**groups: dict) -> pb.EMExtractionSpec:
    return pb.EMExtractionSpec(type="regex_extractor", groups=groups)


def one_group(regex: str, **fields: object) -> pb.EMExtractionSpec:
    fields.setdefault("values", {"v": {"type": "STRING", "value": "x"}})
    return regex_spec(g={"regex": regex, **fields})


def pretend_tensorboard(monkeypatch: pytest.MonkeyPatch, *, installed: bool) -> None:
    """parse_spec sees the tensorboard package installed or not, whatever this venv has."""
    real = importlib.util.find_spec
    found = object() if installed else None
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: found if name == "tensorboard" else real(name, *a),
    )


@pytest.fixture
def tensorboard_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_tensorboard(monkeypatch, installed=True)


def test_no_spec_means_logs_only() -> None:
    spec = parse_spec(None)
    assert (spec.kind, spec.folder, spec.line_lookahead, spec.groups) == ("logs", "", 4, ())


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        ("", "logs"),
        ("logger", "logs"),
        ("LOGGER", "logs"),
        ("none", "logs"),
        ("Null", "logs"),
        ("nil", "logs"),
        ("optivist", "file"),
        ("emetrics_file", "file"),
        ("File", "file"),
        (" emetrics_file ", "file"),
    ],
)
def test_type_synonyms(type_: str, kind: str) -> None:
    assert parse_spec(pb.EMExtractionSpec(type=type_)).kind == kind


@pytest.mark.parametrize("type_", ["regex_extractor", "REGEX_EXTRACTOR"])
def test_regex_synonyms(type_: str) -> None:
    spec = parse_spec(pb.EMExtractionSpec(type=type_, groups={"train": TRAIN}))
    assert spec.kind == "regex"
    assert [group.name for group in spec.groups] == ["train"]


@pytest.mark.parametrize("type_", ["tensorboard", "TensorBoard_Extractor"])
def test_tensorboard_synonyms(type_: str, tensorboard_installed: None) -> None:
    spec = parse_spec(pb.EMExtractionSpec(type=type_, **{"in": "$JOB_STATE_DIR/logs/tb"}))
    assert (spec.kind, spec.folder) == ("tensorboard", "$JOB_STATE_DIR/logs/tb")


def test_tensorboard_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_tensorboard(monkeypatch, installed=False)
    with pytest.raises(SpecError) as error:
        parse_spec(pb.EMExtractionSpec(type="tensorboard"))
    assert str(error.value) == (
        "evaluation_metrics type tensorboard needs the tensorboard package: "
        "pip install 'dlaas-jupyter[tensorboard]'"
    )


def test_unknown_type() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(pb.EMExtractionSpec(type="caffe_log"))
    assert str(error.value) == (
        "evaluation_metrics type 'caffe_log' is not known; "
        "use one of: logger, regex_extractor, emetrics_file, tensorboard"
    )


def test_folder_and_line_lookahead() -> None:
    spec = parse_spec(pb.EMExtractionSpec(type="file", line_lookahead=7, **{"in": "$LOG_DIR/em"}))
    assert (spec.folder, spec.line_lookahead) == ("$LOG_DIR/em", 7)
    assert parse_spec(pb.EMExtractionSpec(type="file", line_lookahead=0)).line_lookahead == 4


@pytest.mark.parametrize("lookahead", [-1, 101])
def test_line_lookahead_out_of_range(lookahead: int) -> None:
    with pytest.raises(
        SpecError, match=rf"line_lookahead is {lookahead}; give a number of lines from 1 to 100"
    ):
        parse_spec(
            pb.EMExtractionSpec(
                type="regex_extractor", line_lookahead=lookahead, groups={"train": TRAIN}
            )
        )


# FfDL's regex_extractor/src/patterns/common-patterns, with examples each must
# match in full and examples it must not.
MACROS = {
    "GLOG_STAMP": (
        r"[EFIW]\d\d\d\d\s+\d\d\:\d\d\:\d*\.\d+",
        ["I0220 10:11:12.123456", "W1231  23:59:59.5", "E0101 00:00:.1"],
        ["X0220 10:11:12.1", "I0220 10:11:12"],
    ),
    "TIMESTAMP": (
        r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[.]\d+?Z|[-+]\d{2}:\d{2}?)",
        ["2018-02-20T10:11:12.123Z", "2018-02-20T10:11:12.1Z", "+01:00", "-05:30"],
        ["2018-02-20T10:11:12Z", "2018-02-20 10:11:12.123Z", "-05:3"],
    ),
    "FLOAT": (
        r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?",
        ["2.30012345", "-1.5e-3", ".5", "7", "+3.", "1E10"],
        ["abc", "e5", "1.2.3"],
    ),
    "INT": (r"[-+]?\d+", ["42", "-7", "+0"], ["4.2", "x1"]),
    "INT_ANY": (
        r"[-+]?(0[xX][\dA-Fa-f]+|0[0-7]*|\d+)",
        ["0x1F", "017", "-12", "0"],
        ["0xZZ", "1.5"],
    ),
    "HEX": (r"[-+]?(0[xX])?[\dA-Fa-f]+", ["ff", "0xFF", "-0x1a", "12"], ["xyz", "0x"]),
}


@pytest.mark.parametrize("name", sorted(MACROS))
def test_named_macro(name: str) -> None:
    text, good, bad = MACROS[name]
    pattern = parse_spec(one_group(f"at %{{{name}:v}}$")).groups[0].pattern
    assert pattern.pattern == f"at (?P<v>{text})$"
    assert list(pattern.groupindex) == ["v"]
    for example in good:
        assert pattern.match(f"at {example}\n")["v"] == example
    for example in bad:
        assert pattern.match(f"at {example}\n") is None, example


@pytest.mark.parametrize("name", sorted(MACROS))
def test_unnamed_macro(name: str) -> None:
    text, good, _ = MACROS[name]
    pattern = parse_spec(one_group(f"%{{{name}}};%{{{name}:v}}")).groups[0].pattern
    assert pattern.pattern == f"(?:{text});(?P<v>{text})"
    assert list(pattern.groupindex) == ["v"]
    assert pattern.match(f"{good[0]};{good[-1]}")["v"] == good[-1]


def test_plain_named_groups_and_flags() -> None:
    group = parse_spec(one_group(r"loss=(?P<loss>\d+\.\d+).*acc=(?P<acc>\d+)$")).groups[0]
    assert sorted(group.pattern.groupindex) == ["acc", "loss"]
    # DOTALL lets .* cross lines, MULTILINE lets $ end one.
    found = group.pattern.match("loss=0.5\nacc=9\nmore")
    assert (found["loss"], found["acc"]) == ("0.5", "9")


def test_groups_sorted_by_name_with_templates() -> None:
    spec = parse_spec(
        regex_spec(
            validation={
                "regex": r"Validation score: %{FLOAT:score} from (?P<host>\S+) at (?P<ts>\S+)",
                "values": {
                    "score": {"type": "float", "value": "$score"},
                    "const": {"type": "INT", "value": "+07"},
                },
                "etimes": {"pass": {"type": "JSONSTRING", "value": '{"fold": 1}'}},
                "meta": {"subid": "$host", "time": "$ts"},
            },
            train={**TRAIN, "meta": {"subid": "learner-9"}},
        )
    )
    train, validation = spec.groups
    assert (train.name, validation.name) == ("train", "validation")
    assert validation.values == (
        ("const", Template(type=pb.Any.INT, ref=None, literal="7")),
        ("score", Template(type=pb.Any.FLOAT, ref="score", literal="")),
    )
    assert validation.etimes == (
        ("pass", Template(type=pb.Any.JSONSTRING, ref=None, literal='{"fold": 1}')),
    )
    assert validation.subid == Template(type=pb.Any.STRING, ref="host", literal="$host")
    assert validation.time_ref == "ts"
    assert train.subid == Template(type=pb.Any.STRING, ref=None, literal="learner-9")
    assert train.time_ref is None
    assert train.etimes == (("iteration", Template(type=pb.Any.INT, ref="iteration", literal="")),)


def test_group_order_is_by_name() -> None:
    group = {"regex": "x", "values": {"v": {"type": "STRING", "value": "x"}}}
    spec = parse_spec(regex_spec(zeta=group, alpha=group, mid=group))
    assert [g.name for g in spec.groups] == ["alpha", "mid", "zeta"]


def with_train(**changes: object) -> dict:
    group = {**TRAIN, **changes}
    return {"type": "regex_extractor", "groups": {"test": {**TRAIN}, "train": group}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            with_train(regex="Iteration %{INT:iteration}, loss = %{FLOATY:loss}"),
            (
                "group 'train': unknown macro %{FLOATY} in regex; "
                "known: FLOAT, GLOG_STAMP, HEX, INT, INT_ANY, TIMESTAMP"
            ),
        ),
        (
            with_train(regex="Iteration (%{INT:iteration}, loss = %{FLOAT:loss}"),
            "group 'train': invalid regex: missing ) at position",
        ),
        (with_train(regex=""), "group 'train': regex is empty"),
        (
            with_train(values={"loss": {"type": "DOUBLE", "value": "$loss"}}),
            (
                "group 'train': values.loss has type 'DOUBLE'; "
                "use one of STRING, JSONSTRING, INT, FLOAT"
            ),
        ),
        (
            with_train(etimes={"iteration": {"type": "", "value": "$iteration"}}),
            (
                "group 'train': etimes.iteration has type ''; "
                "use one of STRING, JSONSTRING, INT, FLOAT"
            ),
        ),
        (
            with_train(values={"loss": {"type": "FLOAT", "value": "$lss"}}),
            "group 'train': values.loss refers to $lss, but the regex has no group named 'lss'",
        ),
        (
            with_train(etimes={"epoch": {"type": "INT", "value": "$epoch"}}),
            (
                "group 'train': etimes.epoch refers to $epoch, but "
                "the regex has no group named 'epoch'"
            ),
        ),
        (
            with_train(meta={"subid": "$host"}),
            "group 'train': meta.subid refers to $host, but the regex has no group named 'host'",
        ),
        (
            with_train(meta={"time": "$timestamp"}),
            (
                "group 'train': meta.time refers to $timestamp, but "
                "the regex has no group named 'timestamp'"
            ),
        ),
        (
            with_train(meta={"time": "now"}),
            (
                "group 'train': meta.time is 'now'; "
                "give $name of the regex group holding each record's time"
            ),
        ),
        (with_train(values={}), "group 'train' has no values; give at least one"),
        (
            with_train(values={"loss": {"type": "INT", "value": "abc"}}),
            "group 'train': values.loss is the literal 'abc', which is not of type INT",
        ),
        (
            with_train(etimes={"step": {"type": "FLOAT", "value": "1.2.3"}}),
            "group 'train': etimes.step is the literal '1.2.3', which is not of type FLOAT",
        ),
        (
            with_train(values={"cfg": {"type": "JSONSTRING", "value": "{bad"}}),
            "group 'train': values.cfg is the literal '{bad', which is not of type JSONSTRING",
        ),
        (
            {"type": "regex_extractor"},
            "evaluation_metrics type regex_extractor needs at least one group",
        ),
    ],
)
def test_spec_errors(spec: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(pb.EMExtractionSpec(**spec))
    assert str(error.value).startswith(message)


def test_macro_expansion_keeps_backslashes() -> None:
    # FfDL passed macro text to re.sub as the replacement, which fails on
    # Python 3.7+ with "bad escape \d"; the expanded text here is verbatim.
    pattern = (
        parse_spec(one_group(r"%{GLOG_STAMP:ts}\s+%{INT}\s+solver\.cpp:\d+\] x")).groups[0].pattern
    )
    assert pattern.pattern.startswith(
        r"(?P<ts>[EFIW]\d\d\d\d\s+\d\d\:\d\d\:\d*\.\d+)\s+(?:[-+]?\d+)\s+"
    )
    assert (
        pattern.match("I0220 10:11:12.123456  4242 solver.cpp:228] x")["ts"]
        == "I0220 10:11:12.123456"
    )


@pytest.mark.parametrize(
    ("type_", "text", "expected"),
    [
        (pb.Any.INT, "+07", "7"),
        (pb.Any.INT, " 42\n", "42"),
        (pb.Any.INT, "0x1F", "31"),
        (pb.Any.INT, "1.5", None),
        (pb.Any.INT, "", None),
        (pb.Any.FLOAT, "2.50", "2.5"),
        (pb.Any.FLOAT, "1E-5", "1e-05"),
        (pb.Any.FLOAT, "7", "7.0"),
        (pb.Any.FLOAT, "nan", "nan"),
        (pb.Any.FLOAT, "1.2.3", None),
        (pb.Any.JSONSTRING, '{"a": [1, 2]}', '{"a": [1, 2]}'),
        (pb.Any.JSONSTRING, "{", None),
        (pb.Any.STRING, " any text ", " any text "),
    ],
)
def test_typed_text(type_: pb.Any.DataType.ValueType, text: str, expected: str | None) -> None:
    assert typed_text(type_, text) == expected
