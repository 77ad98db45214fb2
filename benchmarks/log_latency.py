"""Log latency: a job prints a timestamped line every 10 ms; how long until the
client's live follow yields it? Goal: p50 <= 50 ms, p99 <= 250 ms.

Run: .venv/bin/python -m benchmarks.log_latency [LINES]
"""

from __future__ import annotations

import sys
import time

from benchmarks.common import embedded_trainer, percentile, report, script_job

JOB = """
import time
for i in range({lines}):
    print(time.time_ns(), i, flush=True)
    time.sleep(0.01)
"""


def main(lines: int = 1000) -> None:
    with embedded_trainer() as client:
        tid = client.create(script_job(JOB.format(lines=lines), name="latency", cpus=0.5))
        delays: list[float] = []
        for record in client.follow_logs(tid):
            received = time.time_ns()
            stamp, _, index = record.line.partition(" ")
            if index.isdigit():
                delays.append((received - int(stamp)) / 1e6)
        assert len(delays) == lines, f"followed {len(delays)} of {lines} lines"
        report(
            f"Log line to client follow ({lines} lines, one every 10 ms)",
            [
                ("p50", f"{percentile(delays, 50):.1f} ms", "<= 50 ms"),
                ("p90", f"{percentile(delays, 90):.1f} ms", "-"),
                ("p99", f"{percentile(delays, 99):.1f} ms", "<= 250 ms"),
                ("max", f"{max(delays):.1f} ms", "-"),
            ],
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
