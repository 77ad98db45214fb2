"""RegexExtractor: FfDL's window algorithm on real log text, typed records,
meta.subid/meta.time, the match time limit, and a prefilter that never
changes what is found."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest
from conftest import Notes, anys

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.regex_extractor import Lead, RegexExtractor, lead, timestamp_ms
from dlaas_jupyter.trainer.metrics.spec import MetricsSpec, parse_spec

TRAIN = {
    "regex": "Iteration %{INT:iteration}, loss = %{FLOAT:loss}",
    "values": {"loss": {"type": "FLOAT", "value": "$loss"}},
    "etimes": {"iteration": {"type": "INT", "value": "$iteration"}},
}
SGD = {
    "regex": (
        r"-- Epoch %{INT:epoch}\nNorm: %{FLOAT:norm}, NNZs: %{INT:nnz}, Bias: %{FLOAT:bias}, "
        r"T: %{INT:samples}, Avg\. loss: %{FLOAT:loss}"
    ),
    "values": {
        "loss": {"type": "FLOAT", "value": "$loss"},
        "norm": {"type": "FLOAT", "value": "$norm"},
    },
    "etimes": {"epoch": {"type": "INT", "value": "$epoch"}},
}

# What MLPClassifier(verbose=True) prints.
MLP_LOG = [
    "Iteration 1, loss = 2.30012345",
    "Iteration 2, loss = 1.87654321",
    "Iteration 3, loss = 1.20000000",
    "Iteration 4, loss = 0.98765432",
    (
        "/usr/lib/python3/dist-packages/sklearn/neural_network/_multilayer_perceptron.py:691: "
        "ConvergenceWarning: Stochastic Optimizer: Maximum iterations (4) reached and the "
        "optimization hasn't converged yet."
    ),
    "  warnings.warn(",
]


def sgd_epoch(epoch: int) -> list[str]:
    """What SGDClassifier(verbose=1) prints for one epoch."""
    return [
        f"-- Epoch {epoch}",
        (
            f"Norm: {epoch * 0.5:.2f}, NNZs: 64, Bias: -0.120000, T: {1797 * epoch}, "
            f"Avg. loss: {1 / epoch:.6f}"
        ),
        "Total training time: 0.01 seconds.",
    ]


def spec(line_lookahead: int = 0, **groups: dict) -> MetricsSpec:
    """A regex_extractor spec of ``groups``, parsed as the Trainer parses it."""
    em = pb.EMExtractionSpec(type="regex_extractor", line_lookahead=line_lookahead, groups=groups)
    return parse_spec(em)


def extractor(
    notes: Notes | None = None, line_lookahead: int = 0, **groups: dict
) -> RegexExtractor:
    return RegexExtractor(spec(line_lookahead, **groups), Notes() if notes is None else notes)


def test_mlp_classifier_log() -> None:
    records = extractor(train=TRAIN).feed("learner-1", MLP_LOG)
    assert [anys(r.etimes) for r in records] == [
        {"iteration": ("INT", str(i))} for i in range(1, 5)
    ]
    assert [anys(r.values) for r in records] == [
        {"loss": ("FLOAT", "2.30012345")},
        {"loss": ("FLOAT", "1.87654321")},
        {"loss": ("FLOAT", "1.2")},
        {"loss": ("FLOAT", "0.98765432")},
    ]
    assert {(r.grouplabel, r.meta.subid, r.meta.time, r.meta.rindex) for r in records} == {
        ("train", "learner-1", 0, 0)
    }


def test_sgd_classifier_log_with_ffdl_window_semantics() -> None:
    log = [line for epoch in range(1, 6) for line in sgd_epoch(epoch)]
    records = extractor(sgd=SGD).feed("learner-1", log)
    # FfDL's algorithm: the "Total training time" line left in the window
    # after epoch 1 holds the window start until it slides out (lookahead 4);
    # epoch 2's record is then found at the window start, and the lines after
    # it go with that match, so epoch 3 is missed.
    assert [r.etimes["epoch"].value for r in records] == ["1", "2", "4"]
    assert anys(records[0].values) == {"loss": ("FLOAT", "1.0"), "norm": ("FLOAT", "0.5")}


def test_leading_lazy_dot_skips_unmatched_lines() -> None:
    log = [line for epoch in range(1, 6) for line in sgd_epoch(epoch)]
    records = extractor(sgd={**SGD, "regex": ".*?" + SGD["regex"]}).feed("learner-1", log)
    assert [r.etimes["epoch"].value for r in records] == ["1", "2", "3", "4", "5"]


def test_record_split_across_two_feeds() -> None:
    sgd = extractor(sgd=SGD)
    first, second, _ = sgd_epoch(3)
    assert sgd.feed("learner-1", [first]) == []
    (record,) = sgd.feed("learner-1", [second])
    assert anys(record.etimes) == {"epoch": ("INT", "3")}


def test_windows_are_per_learner() -> None:
    sgd = extractor(sgd=SGD)
    first, second, _ = sgd_epoch(2)
    assert sgd.feed("learner-1", [first]) == []
    assert sgd.feed("learner-2", [second]) == []
    (record,) = sgd.feed("learner-1", [second])
    assert record.meta.subid == "learner-1"


THREE_LINES = {
    "regex": r"a=%{INT:a}\nb=%{INT:b}\nc=%{INT:c}",
    "values": {"a": {"type": "INT", "value": "$a"}, "c": {"type": "INT", "value": "$c"}},
}


def test_three_line_record_with_lookahead_4() -> None:
    abc = extractor(abc=THREE_LINES)
    assert abc.feed("learner-1", ["a=1", "b=2"]) == []
    (record,) = abc.feed("learner-1", ["c=3", "a=4", "b=5", "c=6"])[:1]
    assert anys(record.values) == {"a": ("INT", "1"), "c": ("INT", "3")}


def test_window_too_short_for_the_record() -> None:
    assert (
        extractor(line_lookahead=2, abc=THREE_LINES).feed("learner-1", ["a=1", "b=2", "c=3"]) == []
    )


def test_window_slides_and_drops_old_lines() -> None:
    x = {"regex": "x=%{INT:x}", "values": {"x": {"type": "INT", "value": "$x"}}}
    one = extractor(line_lookahead=2, x=x)
    # [noise] [noise, x=1] [x=1, x=2] -> x=1, window emptied; [x=3] -> x=3
    records = one.feed("learner-1", ["noise", "x=1", "x=2", "x=3"])
    assert [r.values["x"].value for r in records] == ["1", "3"]


def test_lines_end_with_newline_as_in_the_log_file() -> None:
    done = {"regex": r"done %{INT:n}\n", "values": {"n": {"type": "INT", "value": "$n"}}}
    (record,) = extractor(done=done).feed("learner-1", ["done 5"])
    assert record.values["n"].value == "5"


def test_first_group_by_name_wins() -> None:
    group = {"regex": "Iteration %{INT:i}", "values": {"i": {"type": "INT", "value": "$i"}}}
    records = extractor(zeta=group, alpha=group).feed("learner-1", ["Iteration 1", "Iteration 2"])
    assert [r.grouplabel for r in records] == ["alpha", "alpha"]


def test_literal_values_and_all_types() -> None:
    group = {
        "regex": r"step %{INT:step} acc=%{FLOAT:acc} tag=(?P<tag>\w+) cfg=(?P<cfg>\{.*\})$",
        "values": {
            "acc": {"type": "FLOAT", "value": "$acc"},
            "tag": {"type": "STRING", "value": "$tag"},
            "cfg": {"type": "JSONSTRING", "value": "$cfg"},
            "version": {"type": "INT", "value": "3"},
            "model": {"type": "STRING", "value": "mlp"},
        },
        "etimes": {
            "step": {"type": "INT", "value": "$step"},
            "phase": {"type": "FLOAT", "value": "0.5"},
        },
    }
    (record,) = extractor(test=group).feed(
        "learner-1", ['step 12 acc=0.875 tag=best cfg={"lr": 0.01}']
    )
    assert anys(record.values) == {
        "acc": ("FLOAT", "0.875"),
        "tag": ("STRING", "best"),
        "cfg": ("JSONSTRING", '{"lr": 0.01}'),
        "version": ("INT", "3"),
        "model": ("STRING", "mlp"),
    }
    assert anys(record.etimes) == {"step": ("INT", "12"), "phase": ("FLOAT", "0.5")}


def test_value_not_of_its_type_is_sent_as_string_and_noted_once() -> None:
    notes = Notes()
    group = {
        "regex": r"epoch (?P<epoch>\S+)",
        "values": {"epoch": {"type": "INT", "value": "$epoch"}},
    }
    records = extractor(notes, line_lookahead=1, e=group).feed(
        "learner-2", ["epoch one", "epoch two", "epoch 3"]
    )
    assert [anys(r.values) for r in records] == [
        {"epoch": ("STRING", "one")},
        {"epoch": ("STRING", "two")},
        {"epoch": ("INT", "3")},
    ]
    assert notes == [
        (
            "learner-2",
            (
                "dlaas: evaluation-metrics group 'e': values.epoch should be INT "
                "but the log has 'one'; sent as STRING"
            ),
        )
    ]


def test_group_that_took_no_part_is_left_out() -> None:
    group = {
        "regex": r"loss=%{FLOAT:loss}( acc=%{FLOAT:acc})?",
        "values": {
            "loss": {"type": "FLOAT", "value": "$loss"},
            "acc": {"type": "FLOAT", "value": "$acc"},
        },
    }
    records = extractor(line_lookahead=1, g=group).feed(
        "learner-1", ["loss=0.5 acc=0.9", "loss=0.4"]
    )
    assert [anys(r.values) for r in records] == [
        {"loss": ("FLOAT", "0.5"), "acc": ("FLOAT", "0.9")},
        {"loss": ("FLOAT", "0.4")},
    ]


def test_meta_subid_from_group_or_literal() -> None:
    by_host = {
        **TRAIN,
        "regex": r"\[(?P<host>[\w-]+)\] " + TRAIN["regex"],
        "meta": {"subid": "$host"},
    }
    fixed = {**TRAIN, "meta": {"subid": "learner-9"}}
    (record,) = extractor(t=by_host).feed("learner-1", ["[worker-3] Iteration 1, loss = 0.5"])
    assert record.meta.subid == "worker-3"
    (record,) = extractor(t=fixed).feed("learner-1", ["Iteration 1, loss = 0.5"])
    assert record.meta.subid == "learner-9"


def ms(*args: int) -> int:
    return round(datetime(*args, tzinfo=UTC).timestamp() * 1000)


THIS_YEAR = datetime.now(UTC).year


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2018-02-20T10:11:12.123Z", ms(2018, 2, 20, 10, 11, 12, 123000)),
        ("2018-02-20T10:11:12.123+01:00", ms(2018, 2, 20, 9, 11, 12, 123000)),
        ("2018-02-20 10:11:12", ms(2018, 2, 20, 10, 11, 12)),
        ("1519121472123", 1519121472123),
        ("1519121472.5", 1519121472500),
        ("1519121472", 1519121472000),
        ("I0220 10:11:12.123456", ms(THIS_YEAR, 2, 20, 10, 11, 12, 123456)),
        ("W1231  23:59:59.5", ms(THIS_YEAR, 12, 31, 23, 59, 59, 500000)),
        ("yesterday", None),
        ("nan", None),
        ("I1340 10:11:12.1", None),
    ],
)
def test_timestamp_ms(stamp: str, expected: int | None) -> None:
    assert timestamp_ms(stamp) == expected


@pytest.mark.parametrize(
    ("regex", "line", "expected"),
    [
        (
            "%{TIMESTAMP:ts} " + TRAIN["regex"],
            "2018-02-20T10:11:12.123Z Iteration 1, loss = 0.5",
            1519121472123,
        ),
        (r"(?P<ts>\d+) " + TRAIN["regex"], "1519121472123 Iteration 1, loss = 0.5", 1519121472123),
        (
            r"(?P<ts>[\d.]+) " + TRAIN["regex"],
            "1519121472.123 Iteration 1, loss = 0.5",
            1519121472123,
        ),
        (
            r"%{GLOG_STAMP:ts}\s+%{INT}\s+solver\.cpp:\d+\] " + TRAIN["regex"],
            "I0220 10:11:12.123456  4242 solver.cpp:228] Iteration 1, loss = 0.5",
            ms(THIS_YEAR, 2, 20, 10, 11, 12, 123000),
        ),
    ],
)
def test_meta_time_from_the_log(regex: str, line: str, expected: int) -> None:
    (record,) = extractor(t={**TRAIN, "regex": regex, "meta": {"time": "$ts"}}).feed(
        "learner-1", [line]
    )
    assert record.meta.time == expected
    assert anys(record.values) == {"loss": ("FLOAT", "0.5")}


def test_meta_time_not_a_timestamp() -> None:
    notes = Notes()
    group = {**TRAIN, "regex": r"(?P<ts>\w+) " + TRAIN["regex"], "meta": {"time": "$ts"}}
    records = extractor(notes, t=group).feed(
        "learner-1", ["soon Iteration 1, loss = 0.5", "later Iteration 2, loss = 0.4"]
    )
    assert [r.meta.time for r in records] == [0, 0]
    assert notes == [
        (
            "learner-1",
            (
                "dlaas: evaluation-metrics group 't': meta.time $ts is 'soon', not a timestamp; "
                "its records get the collection time"
            ),
        )
    ]


def test_catastrophic_regex_is_skipped_and_collection_goes_on() -> None:
    notes = Notes()
    slow = {"regex": "(a+)+$", "values": {"hit": {"type": "INT", "value": "1"}}}
    pathological = "a" * 100_000 + "b"
    iterations = [f"Iteration {i}, loss = 0.5" for i in range(1, 11)]
    extract = extractor(notes, slow=slow, train=TRAIN)
    start = time.monotonic()
    records = extract.feed("learner-1", [pathological, *iterations])
    records += extract.feed("learner-1", [pathological, pathological, "Iteration 11, loss = 0.5"])
    assert time.monotonic() - start < 2
    assert notes == [
        (
            "learner-1",
            (
                "dlaas: evaluation-metrics regex of group 'slow' took longer than 50 ms "
                "on a line and was skipped"
            ),
        )
    ]
    # The slow line stays at the window start until it slides out (FfDL's
    # window), then iteration 1 is found and 2-4 go with it; the rest each
    # match alone. Iteration 11 waits for the slow lines to slide out.
    assert [r.etimes["iteration"].value for r in records] == ["1", "5", "6", "7", "8", "9", "10"]
    assert [r.grouplabel for r in records] == ["train"] * 7


def test_not_a_regex_spec() -> None:
    with pytest.raises(ValueError, match="regex_extractor"):
        RegexExtractor(parse_spec(pb.EMExtractionSpec(type="logger")), Notes())


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("Iteration (?P<i>[-+]?\\d+)", Lead("Iteration ", frozenset("I"))),
        ("^Validation score: %", Lead("Validation score: %", frozenset("V"))),
        ("Iterations?", Lead("Iteration", frozenset("I"))),
        ("ab{2}c", Lead("a", frozenset("a"))),
        ("a\\nb", Lead("a", frozenset("a"))),
        ("\\d+x", Lead("", frozenset("0123456789"))),
        ("(?:ab|cd)?e", Lead("", frozenset("ace"))),
        ("[+-]?\\d", Lead("", frozenset("+-0123456789"))),
        ("abc|abd", Lead("", frozenset("a"))),
        (".*?Iteration", Lead("", None)),
        ("(?i)iteration", Lead("", None)),
        ("(?P=x)", Lead("", None)),
        ("a{e<=1}", Lead("", None)),
        ("x?", Lead("", None)),
    ],
)
def test_lead(pattern: str, expected: Lead) -> None:
    assert lead(pattern) == expected


PATTERNS = [
    "a?b",
    "(?:ab|cd)?e",
    r"[^\s]x",
    r"\s*x",
    r"\S",
    r"\W\w",
    r"\D",
    "(?=a)ab",
    "(?!a)[a-c]",
    "(?<=a)b",
    "(?#c(omment)x",
    "[]a]b",
    "[^]a]b",
    "a{0,2}b",
    "a{2}b",
    "a{,2}b",
    r"\x41B",
    r"^$\n",
    r"\Aabc",
    r"\bword",
    "é+x",
    "(?|(a)|(b))c",
    "(?>a|ab)c",
    "a|b",
    r"x\ny",
    "[a-c-]x",
    r"[\d\-]+",
    "(?P<n>é|x)",
    r"[\x1c]",
    "\\.",
    r"(a+)+$",
    "x*?y",
    "(?:)a",
    "$a",
    "(?<n>b)c",
    "[^a-z]",
    r"\t",
    "[\\]]",
    "\\-x",
    ".",
]


def reference_records(
    groups: list[tuple[str, object]], lines: list[str], lookahead: int
) -> list[str]:
    """FfDL's algorithm with no shortcuts: the group labels it finds."""
    found: list[str] = []
    window: list[str] = []
    for line in lines:
        window = [*window, line][-lookahead:]
        text = "".join(f"{held}\n" for held in window)
        for name, pattern in groups:
            if pattern.match(text):
                found.append(name)
                window = []
                break
    return found


@pytest.mark.parametrize("lookahead", [1, 2, 3])
def test_prefilter_never_changes_what_is_found(lookahead: int) -> None:
    rng = random.Random(lookahead)
    alphabet = [
        "a",
        "b",
        "c",
        "x",
        "y",
        "A",
        "B",
        "é",
        " ",
        "\t",
        "\x1c",
        "]",
        "-",
        ".",
        "word",
        "ab",
        "",
    ]
    lines = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(4))) for _ in range(3000)]
    for start in range(0, len(PATTERNS), 4):
        chosen = PATTERNS[start : start + 4]
        groups = {
            f"g{i}": {"regex": pattern, "values": {"n": {"type": "INT", "value": "1"}}}
            for i, pattern in enumerate(chosen)
        }
        extract = extractor(line_lookahead=lookahead, **groups)
        parsed = spec(**groups).groups
        expected = reference_records([(g.name, g.pattern) for g in parsed], lines, lookahead)
        got = [
            r.grouplabel
            for base in range(0, len(lines), 7)
            for r in extract.feed("l", lines[base : base + 7])
        ]
        assert got == expected, chosen
        assert expected, chosen  # the corpus exercises every pattern set


def test_lead_admits_every_match() -> None:
    rng = random.Random(7)
    alphabet = "abcxyAB é\t\x1c\n]-.wordé"
    texts = [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(6))) + "\n" for _ in range(3000)
    ]
    for pattern_text in PATTERNS:
        group = {"regex": pattern_text, "values": {"n": {"type": "INT", "value": "1"}}}
        pattern = spec(g=group).groups[0].pattern
        leading = lead(pattern.pattern)
        for text in texts:
            if pattern.match(text):
                assert text.startswith(leading.prefix), (pattern_text, text)
                assert leading.first is None or text[0] in leading.first or text[0] > "\x7f", (
                    pattern_text,
                    text,
                )
