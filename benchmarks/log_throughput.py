"""Log throughput: a job prints lines as fast as it can. How many lines per
second are stored and readable, is any lost, and how much is the job slowed
against printing to /dev/null? Goal: >= 200,000 lines/s, none lost, job
slowed <= 10%.

Learners write their log straight to a file, so the job's cost is that of
writing a file; the benchmark also prints that cost alone, with no Trainer,
so the Trainer's own share can be told apart.

The job writes its lines in blocks, as buffered stdout does, and reports its
own printing time on stderr (merged into the log under the Trainer).

Run: .venv/bin/python -m benchmarks.log_throughput [LINES]
"""

from __future__ import annotations

import subprocess
from statistics import median
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import embedded_trainer, report, script_job, wait_terminal

JOB = """
import sys, time
lines = {lines}
start = time.perf_counter()
block = 1000
for base in range(0, lines, block):
    part = range(base, min(base + block, lines))
    sys.stdout.write("".join(f"line {{i}} of the throughput benchmark, some text\\n" for i in part))
    sys.stdout.flush()
print(f"elapsed {{time.perf_counter() - start:.6f}}", file=sys.stderr)
"""


def alone_seconds(script: str, to_file: bool) -> float:
    """The job's printing time, run once with no Trainer, with stdout to
    /dev/null or to a plain file that nobody reads."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "main.py"
        path.write_text(script)
        with open(Path(tmp) / "out.txt" if to_file else "/dev/null", "wb") as out:
            result = subprocess.run(
                [sys.executable, str(path)],
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                check=True,
            )
        return float(result.stderr.split()[1])


def main(lines: int = 2_000_000, runs: int = 3) -> None:
    """Alternates runs alone and under the Trainer, so load on a shared
    machine hits both alike; medians of ``runs``."""
    script = JOB.format(lines=lines)
    baseline, to_file, in_trainer, stored = [], [], [], []
    with embedded_trainer() as client:
        for _ in range(runs):
            baseline.append(alone_seconds(script, to_file=False))
            to_file.append(alone_seconds(script, to_file=True))
            tid = client.create(script_job(script, name="throughput"))
            status = wait_terminal(client, tid).status
            storing = int(status.store_start_timestamp) - int(status.process_start_timestamp)
            stored.append(storing / 1000)
            in_trainer.append(float(client.logs(tid, pos=-1, pagesize=1)[0].line.split()[1]))

        start = time.perf_counter()
        expected = 0
        for record in client.follow_logs(tid):
            if record.line.startswith("line "):
                number = int(record.line.split()[1])
                assert number == expected, f"line {expected} missing or out of order (got {number})"
                expected += 1
        read_seconds = time.perf_counter() - start
    assert expected == lines, f"read {expected} of {lines} lines"
    base, file_alone, trainer = median(baseline), median(to_file), median(in_trainer)
    report(
        f"Log throughput ({lines:,} lines, medians of {runs} runs)",
        [
            (
                "stored (process start to stored)",
                f"{lines / median(stored):,.0f} lines/s",
                ">= 200,000 lines/s",
            ),
            ("read back through follow", f"{expected / read_seconds:,.0f} lines/s", "-"),
            ("lost", f"{lines - expected}", "0"),
            ("job printing to /dev/null", f"{base:.3f} s", "-"),
            ("job printing to a file, no Trainer", f"{file_alone:.3f} s", "-"),
            ("job printing under the Trainer", f"{trainer:.3f} s", "-"),
            ("job slowed, against /dev/null", f"{(trainer / base - 1) * 100:+.1f} %", "<= 10 %"),
            ("job slowed, against a file alone", f"{(trainer / file_alone - 1) * 100:+.1f} %", "-"),
        ],
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
