"""MetricsFileWatcher over real metrics files, written as a job writes them."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from conftest import Notes, anys

from dlaas_jupyter.trainer.metrics.emetrics_file import (
    MAX_LINE_BYTES,
    MAX_NOTES_PER_FILE,
    MetricsFileWatcher,
)


def line(rindex: int, **fields: object) -> str:
    record: dict = {"meta": {"training_id": "training-1", "rindex": rindex}, "grouplabel": "train"}
    record.update(fields)
    return json.dumps(record) + "\n"


def append(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def test_types_by_number_or_name_and_values_as_numbers_or_strings(tmp_path: Path) -> None:
    path = tmp_path / "evaluation-metrics.txt"
    append(
        path,
        json.dumps(
            {
                "meta": {
                    "training_id": "training-1",
                    "rindex": 7,
                    "time": 1519135679722,
                    "subid": "",
                },
                "grouplabel": "test",
                "etimes": {
                    "iteration": {"type": 2, "value": "100"},
                    "epoch": {"type": "INT", "value": 3},
                },
                "values": {
                    "loss": {"type": 3, "value": "0.42"},
                    "acc": {"type": "float", "value": 0.9},
                    "steps": {"type": "INT", "value": 5.0},
                    "phase": {"type": 0, "value": "warmup"},
                    "note": {"value": "no type means STRING"},
                    "confusion": {"type": "JSONSTRING", "value": [[1, 2], [3, 4]]},
                    "config": {"type": 1, "value": '{"lr": 0.1}'},
                },
            }
        )
        + "\n",
    )
    # Protobuf's JSON mapping writes int64 as strings; a missing time means now.
    append(
        path,
        json.dumps({"meta": {"rindex": "8"}, "values": {"loss": {"type": 3, "value": 1}}}) + "\n",
    )
    notes = Notes()
    before = time.time_ns() // 1_000_000
    first, second = MetricsFileWatcher(tmp_path, notes).poll()
    after = time.time_ns() // 1_000_000
    assert notes == []
    assert (first.meta.training_id, first.meta.rindex, first.meta.time, first.meta.subid) == (
        "training-1",
        7,
        1519135679722,
        "",
    )
    assert first.grouplabel == "test"
    assert anys(first.etimes) == {"iteration": ("INT", "100"), "epoch": ("INT", "3")}
    assert anys(first.values) == {
        "loss": ("FLOAT", "0.42"),
        "acc": ("FLOAT", "0.9"),
        "steps": ("INT", "5"),
        "phase": ("STRING", "warmup"),
        "note": ("STRING", "no type means STRING"),
        "confusion": ("JSONSTRING", "[[1, 2], [3, 4]]"),
        "config": ("JSONSTRING", '{"lr": 0.1}'),
    }
    assert second.meta.rindex == 8 and before <= second.meta.time <= after
    assert second.meta.training_id == "" and second.grouplabel == ""
    assert anys(second.values) == {"loss": ("FLOAT", "1")}


def test_learner_folders_give_the_subid_in_a_stable_order(tmp_path: Path) -> None:
    for folder in ["learner-10", "learner-2", "learner-1"]:
        append(tmp_path / folder / "evaluation-metrics.txt", line(1) + line(2))
    append(
        tmp_path / "evaluation-metrics.txt", line(1) + line(2, meta={"rindex": 2, "subid": "ps"})
    )
    append(
        tmp_path / "learner-2" / "evaluation-metrics.txt", line(3, meta={"rindex": 3, "subid": "x"})
    )
    (tmp_path / "learner-3").mkdir()  # a learner that writes no metrics
    (tmp_path / "learner-3" / "training-log.txt").write_text("hello\n")

    records = MetricsFileWatcher(tmp_path, Notes()).poll()
    assert [(r.meta.subid, r.meta.rindex) for r in records] == [
        ("", 1),
        ("ps", 2),
        ("learner-1", 1),
        ("learner-1", 2),
        ("learner-2", 1),
        ("learner-2", 2),
        ("x", 3),
        ("learner-10", 1),
        ("learner-10", 2),
    ]


def test_bad_lines_are_noted_with_their_number_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "learner-1" / "evaluation-metrics.txt"
    append(
        path,
        "".join(
            [
                line(1),
                "this is not json\n",
                json.dumps({"meta": {"time": 5}, "grouplabel": "train"}) + "\n",
                line(4, values={"loss": {"type": "DOUBLE", "value": "1"}}),
                "\n",  # blank lines are no records and no mistakes
                line(6, values=[1, 2]),
                line(7, values={"n": {"type": "INT", "value": "abc"}}),
                line(8, values={"loss": {"type": 3, "value": True}}),
                "[1, 2]\n",
                line(0),
                line(11),
            ]
        ),
    )
    notes = Notes()
    records = MetricsFileWatcher(tmp_path, notes).poll()
    assert [r.meta.rindex for r in records] == [1, 11]
    assert all(subid == "learner-1" for subid, _ in notes)
    messages = [message for _, message in notes]
    assert [m.split(" skipped: ")[0] for m in messages] == [
        f"dlaas: evaluation-metrics.txt line {n}" for n in (2, 3, 4, 6, 7, 8, 9, 10)
    ]
    assert messages[0].split(" skipped: ")[1].startswith("not JSON")
    assert messages[1].endswith("meta.rindex is missing")
    assert "values.loss has unknown type 'DOUBLE'" in messages[2]
    assert "values is an array, not an object" in messages[3]
    assert "values.n is INT but its value 'abc' is not an integer" in messages[4]
    assert "values.loss value is a boolean" in messages[5]
    assert "not a JSON object but an array" in messages[6]
    assert "meta.rindex is 0; it counts from 1" in messages[7]


def test_non_utf8_line_is_skipped_alone(tmp_path: Path) -> None:
    append(tmp_path / "evaluation-metrics.txt", line(1).encode() + b"\xff\xfe\n" + line(3).encode())
    notes = Notes()
    records = MetricsFileWatcher(tmp_path, notes).poll()
    assert [r.meta.rindex for r in records] == [1, 3]
    assert len(notes) == 1 and "line 2 skipped: not JSON" in notes[0][1]


def test_notes_are_capped_per_file(tmp_path: Path) -> None:
    append(tmp_path / "evaluation-metrics.txt", "garbage\n" * 50)
    notes = Notes()
    watcher = MetricsFileWatcher(tmp_path, notes)
    watcher.poll()
    append(tmp_path / "evaluation-metrics.txt", "more garbage\n" * 5)
    watcher.poll()
    assert len(notes) == MAX_NOTES_PER_FILE + 1
    assert notes[-1] == ("", "dlaas: evaluation-metrics.txt: further bad lines are not reported")


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "evaluation-metrics.txt"
    text = line(1) + line(2)
    watcher = MetricsFileWatcher(tmp_path, notes := Notes())
    append(path, text[:-10])
    assert [r.meta.rindex for r in watcher.poll()] == [1]
    assert watcher.poll() == []
    append(path, text[-10:])
    assert [r.meta.rindex for r in watcher.poll()] == [2]
    # A job that ended without the last newline: the final poll takes the line.
    append(path, line(3).rstrip("\n"))
    assert watcher.poll() == []
    assert [r.meta.rindex for r in watcher.poll(final=True)] == [3]
    assert notes == []


def test_files_appearing_later_are_picked_up(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    watcher = MetricsFileWatcher(logs, Notes())
    assert watcher.poll() == []  # no logs folder yet
    (logs / "learner-1").mkdir(parents=True)
    assert watcher.poll() == []
    append(logs / "learner-1" / "evaluation-metrics.txt", line(1))
    assert [(r.meta.subid, r.meta.rindex) for r in watcher.poll()] == [("learner-1", 1)]
    append(logs / "learner-2" / "evaluation-metrics.txt", line(1))
    append(logs / "learner-1" / "evaluation-metrics.txt", line(2))
    assert [(r.meta.subid, r.meta.rindex) for r in watcher.poll()] == [
        ("learner-1", 2),
        ("learner-2", 1),
    ]
    assert watcher.poll() == []


def test_a_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "evaluation-metrics.txt"
    append(path, line(1) + line(2))
    notes = Notes()
    watcher = MetricsFileWatcher(tmp_path, notes)
    assert len(watcher.poll()) == 2
    path.unlink()
    append(path, line(1))
    assert [r.meta.rindex for r in watcher.poll()] == [1]
    assert notes == [("", "dlaas: evaluation-metrics.txt was replaced or truncated; read again")]


def test_an_overlong_line_is_dropped_without_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "evaluation-metrics.txt"
    notes = Notes()
    watcher = MetricsFileWatcher(tmp_path, notes)
    append(path, line(1) + "x" * (MAX_LINE_BYTES + 1))
    assert [r.meta.rindex for r in watcher.poll()] == [1]
    append(path, "y" * MAX_LINE_BYTES * 2)  # still the same line
    assert watcher.poll() == []
    append(path, "end of it\n" + line(3))
    assert [r.meta.rindex for r in watcher.poll()] == [3]
    assert notes == [
        ("", f"dlaas: evaluation-metrics.txt line 2 skipped: longer than {MAX_LINE_BYTES} bytes")
    ]


def _lines(first: int, last: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "meta": {"training_id": "training-1", "rindex": i, "time": 1_700_000_000_000 + i},
                "grouplabel": "train",
                "etimes": {"iteration": {"type": 2, "value": str(i)}},
                "values": {
                    "loss": {"type": 3, "value": repr(1 / i)},
                    "acc": {"type": 3, "value": "0.5"},
                },
            },
            separators=(",", ":"),
        )
        + "\n"
        for i in range(first, last + 1)
    ).encode()


def test_100000_records_while_another_thread_appends(tmp_path: Path) -> None:
    path = tmp_path / "learner-1" / "evaluation-metrics.txt"
    path.parent.mkdir()
    data = _lines(1, 100_000)
    done = threading.Event()

    def job() -> None:
        # Writes cut at random bytes, so polls often meet half-written lines.
        rng = random.Random(7)
        with open(path, "wb", buffering=0) as f:
            position = 0
            while position < len(data):
                size = rng.randint(1, 300_000)
                f.write(data[position : position + size])
                position += size
                time.sleep(0.001)
        done.set()

    watcher = MetricsFileWatcher(tmp_path, notes := Notes())
    writer = threading.Thread(target=job)
    writer.start()
    seen: list[int] = []
    polls = 0
    while not done.is_set():
        seen.extend(r.meta.rindex for r in watcher.poll())
        polls += 1
    writer.join()
    seen.extend(r.meta.rindex for r in watcher.poll(final=True))
    assert notes == []
    assert polls > 3
    assert seen == list(range(1, 100_001))


def test_reading_100000_records_takes_about_a_second(tmp_path: Path) -> None:
    path = tmp_path / "learner-1" / "evaluation-metrics.txt"
    append(path, _lines(1, 100_000))
    watcher = MetricsFileWatcher(tmp_path, Notes())
    start = time.perf_counter()
    records = watcher.poll()
    elapsed = time.perf_counter() - start
    print(f"read {len(records)} records ({os.path.getsize(path) / 1e6:.1f} MB) in {elapsed:.2f} s")
    assert len(records) == 100_000
    assert anys(records[-1].values) == {
        "loss": ("FLOAT", repr(1 / 100_000)),
        "acc": ("FLOAT", "0.5"),
    }
    # About 1 s on the 2-core build machine; the bound catches anything worse than linear.
    assert elapsed < 4.0


def test_another_file_name(tmp_path: Path) -> None:
    append(tmp_path / "learner-1" / "metrics.jsonl", line(1))
    append(tmp_path / "learner-1" / "evaluation-metrics.txt", line(1))
    records = MetricsFileWatcher(tmp_path, Notes(), file_name="metrics.jsonl").poll()
    assert [(r.meta.subid, r.meta.rindex) for r in records] == [("learner-1", 1)]
