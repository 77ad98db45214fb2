"""Regex extraction speed: how many log lines per second does RegexExtractor
turn into records, on a realistic log with three groups? Goal: >= 100,000
lines/s per job.

The log is an MLPClassifier's verbose output (``Iteration N, loss = X``)
with a validation-score line every few iterations, a timestamped epoch line
(its group dates records with meta.time), and the usual other output:
warnings, progress text, blank lines. It is fed in batches of 2,000 lines,
as the collector hands them over, once with FfDL's default line_lookahead (4)
and once with 1. The record counts show FfDL's window semantics: with 4, a
line no group matches holds the window start until it slides out, and the
one-line records behind it are dropped with the next match; with 1 every
record line is found.

The job's own printing is not slowed by any of this, by construction:
learners write their log straight to a file and the collector tails it in a
thread of its own (dlaas_jupyter/trainer/collect.py), so extraction speed
decides how far collection lags behind, never how fast the job runs.

Run: .venv/bin/python -m benchmarks.regex_extraction [LINES]
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta

from benchmarks.common import report
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.regex_extractor import RegexExtractor
from dlaas_jupyter.trainer.metrics.spec import parse_spec

BATCH = 2_000
RUNS = 3
GOAL = 100_000

WARNING = (
    "/usr/lib/python3/dist-packages/sklearn/neural_network/_multilayer_perceptron.py:691: "
    "ConvergenceWarning: Stochastic Optimizer: Maximum iterations (200) reached and the "
    "optimization hasn't converged yet."
)


def build_log(lines: int, seed: int = 1) -> tuple[list[str], int]:
    """About ``lines`` lines of a chatty training log, and how many of them are records."""
    rng = random.Random(seed)
    start = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    log: list[str] = []
    records = 0
    iteration = 0
    loss = 2.3
    while len(log) < lines:
        iteration += 1
        if iteration % 50 == 1:
            epoch = iteration // 50 + 1
            stamp = (start + timedelta(seconds=iteration * 0.8)).isoformat(timespec="milliseconds")
            elapsed = iteration * 0.8
            log.append(
                f"{stamp.replace('+00:00', 'Z')} epoch {epoch} done, {elapsed:.3f} s elapsed"
            )
            records += 1
        loss *= 0.9995
        log.append(f"Iteration {iteration}, loss = {loss + rng.random() * 0.01:.8f}")
        records += 1
        if iteration % 5 == 0:
            log.append(f"Validation score: {0.8 + rng.random() * 0.15:.6f}")
            records += 1
        if iteration % 25 == 0:
            tasks, seconds = iteration // 25, iteration * 0.01
            log.append(
                f"[Parallel(n_jobs=2)]: Done {tasks:4d} tasks      | elapsed:    {seconds:.1f}s"
            )
        if iteration % 40 == 0:
            log.append("")
        if iteration % 100 == 0:
            log.extend([WARNING, "  warnings.warn("])
    return log, records


def spec(line_lookahead: int) -> pb.EMExtractionSpec:
    em = pb.EMExtractionSpec(type="regex_extractor", line_lookahead=line_lookahead)
    train = em.groups["train"]
    train.regex = "Iteration %{INT:iteration}, loss = %{FLOAT:loss}"
    train.values["loss"].MergeFrom(pb.EMAny(type="FLOAT", value="$loss"))
    train.etimes["iteration"].MergeFrom(pb.EMAny(type="INT", value="$iteration"))
    validation = em.groups["validation"]
    validation.regex = "Validation score: %{FLOAT:score}"
    validation.values["score"].MergeFrom(pb.EMAny(type="FLOAT", value="$score"))
    epoch = em.groups["epoch"]
    epoch.regex = "%{TIMESTAMP:time} epoch %{INT:epoch} done, %{FLOAT:elapsed} s elapsed"
    epoch.meta.time = "$time"
    epoch.values["elapsed"].MergeFrom(pb.EMAny(type="FLOAT", value="$elapsed"))
    epoch.etimes["epoch"].MergeFrom(pb.EMAny(type="INT", value="$epoch"))
    return em


def run(log: list[str], line_lookahead: int) -> tuple[float, int]:
    """Seconds to extract ``log`` (best of RUNS, as other processes share the
    machine) and the number of records found."""
    return min(run_once(log, line_lookahead) for _ in range(RUNS))


def run_once(log: list[str], line_lookahead: int) -> tuple[float, int]:
    notes: list[str] = []
    extractor = RegexExtractor(
        parse_spec(spec(line_lookahead)), lambda subid, text: notes.append(text)
    )
    found = 0
    start = time.perf_counter()
    for base in range(0, len(log), BATCH):
        found += len(extractor.feed("learner-1", log[base : base + BATCH]))
    seconds = time.perf_counter() - start
    assert not notes, notes
    return seconds, found


def main(lines: int = 1_000_000) -> None:
    log, expected = build_log(lines)
    rows = []
    for lookahead in (4, 1):
        seconds, found = run(log, lookahead)
        label = f"line_lookahead {lookahead}" + (" (default)" if lookahead == 4 else "")
        rows += [
            (f"{label}: lines/s", f"{len(log) / seconds:,.0f}", f">= {GOAL:,} lines/s per job"),
            (f"{label}: records/s", f"{found / seconds:,.0f}", "-"),
            (f"{label}: records found", f"{found:,} of {expected:,}", "-"),
        ]
    report(
        f"Regex extraction ({len(log):,} lines, 3 groups, batches of {BATCH:,}, best of {RUNS})",
        rows,
    )


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
