"""Monitor load: a job prints 10,000 timestamped lines a second while a real
kernel shows its live monitor (``job.monitor``: the JobMonitor, started on the
kernel's event loop). What does that cost the kernel, and how much does it send
to the front end? Goals: kernel CPU <= 20% of one core; iopub traffic well under
Jupyter's default limits of 1000 msgs/s and 1 MB/s. An idle kernel (extension
loaded, nothing monitored) is the baseline.

Every message on the kernel's iopub channel is counted as the client receives
it; its size is its JSON-serialised content plus its binary buffers. The log
view's updates carry the newest line's timestamp, so the delay from the job's
print to the front end receiving the line is measured too.

Run: .venv/bin/python -m benchmarks.monitor_load [RATE] [SECONDS]
"""

from __future__ import annotations

import json
import queue
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from jupyter_client.blocking.client import BlockingKernelClient

from benchmarks.common import (
    embedded_trainer,
    notebook_kernel,
    percentile,
    report,
    script_job,
    wait_terminal,
)
from dlaas_jupyter.proto import trainer_pb2 as pb

JOB = """
import time
rate, seconds, tick = {rate}, {seconds}, 0.01
per_tick = max(1, round(rate * tick))
start = time.perf_counter()
n = 0
for t in range(round(seconds / tick)):
    delay = start + t * tick - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    for _ in range(per_tick):
        print(time.time_ns(), "line", n, "of the monitor load benchmark", flush=True)
        n += 1
print("printed", n, "lines in", round(time.perf_counter() - start, 2), "s", flush=True)
"""

SETUP = """\
%load_ext dlaas_jupyter
import os
import dlaas_jupyter.widgets
from dlaas_jupyter.client import TrainerClient
from dlaas_jupyter.job import Job
print(os.getpid())"""

LOGGED = re.compile(r"(\d{19}) line (\d+) of the monitor load")
SETTLE = 2.0  # seconds after PROCESSING before the window opens


@dataclass
class Window:
    """What one measuring window saw."""

    seconds: float
    cpu_seconds: float
    messages: int
    bytes: int
    kinds: Counter[str] = field(default_factory=Counter)
    lags_ms: list[float] = field(default_factory=list)  # job print -> front end, per log update
    log_updates: int = 0

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds


class IopubCounter(threading.Thread):
    """Receives every iopub message; counts those that arrive while counting."""

    def __init__(self, kernel: BlockingKernelClient) -> None:
        super().__init__(daemon=True)
        self.kernel = kernel
        self.counting = threading.Event()
        self.done = threading.Event()
        self.received: list[tuple[int, dict]] = []  # (arrival time_ns, message)

    def run(self) -> None:
        while not self.done.is_set():
            try:
                message = self.kernel.iopub_channel.get_msg(timeout=0.1)
            except queue.Empty:
                continue
            if self.counting.is_set():
                self.received.append((time.time_ns(), message))


def message_bytes(message: dict) -> int:
    content = len(json.dumps(message["content"], default=str).encode())
    return content + sum(memoryview(buffer).nbytes for buffer in message.get("buffers") or ())


def measure(kernel: BlockingKernelClient, process: psutil.Process, seconds: float) -> Window:
    counter = IopubCounter(kernel)
    counter.start()
    time.sleep(0.5)  # drain what was sent before the window
    before = process.cpu_times()
    started = time.perf_counter()
    counter.counting.set()
    time.sleep(seconds)
    counter.counting.clear()
    wall = time.perf_counter() - started
    after = process.cpu_times()
    counter.done.set()
    counter.join()
    window = Window(
        seconds=wall,
        cpu_seconds=(after.user + after.system) - (before.user + before.system),
        messages=len(counter.received),
        bytes=sum(message_bytes(m) for _, m in counter.received),
    )
    for arrived, message in counter.received:
        kind = message["msg_type"]
        state = message["content"].get("data", {}).get("state", {}) if kind == "comm_msg" else {}
        value = state.get("value")
        if isinstance(value, str):
            stamps = LOGGED.findall(value)
            if stamps:
                window.log_updates += 1
                window.lags_ms.append((arrived - int(stamps[-1][0])) / 1e6)
                kind = "comm_msg (log view)"
            else:
                kind = "comm_msg (other value)"
        window.kinds[kind] += 1
    return window


def rows_for(window: Window) -> list[tuple[str, str, str]]:
    return [
        ("kernel CPU", f"{window.cpu_percent:.1f} %", "<= 20% of one core"),
        ("iopub messages", f"{window.msgs_per_s:.1f} /s", "well under 1000 /s"),
        ("iopub bytes", f"{window.bytes_per_s / 1000:.1f} kB/s", "well under 1 MB/s"),
    ]


def main(rate: int = 10_000, seconds: int = 20) -> None:
    window_seconds = seconds - SETTLE - 3
    with embedded_trainer() as client, tempfile.TemporaryDirectory(prefix="dlaas-mon-") as tmp:
        folder = Path(tmp)
        with notebook_kernel(client.config, folder) as kernel:
            process = psutil.Process(int(kernel.execute(SETUP).stdout.split()[-1]))
            time.sleep(1)  # let the kernel settle after the imports
            idle = measure(kernel.client, process, window_seconds)

            tid = client.create(
                script_job(JOB.format(rate=rate, seconds=seconds), name="monitor-load", cpus=0.5)
            )
            kernel.execute(f"job = Job({tid!r}, TrainerClient())\njob.monitor")
            while client.status(tid) not in (pb.PROCESSING, pb.STORING, pb.COMPLETED):
                time.sleep(0.01)
            time.sleep(SETTLE)
            busy = measure(kernel.client, process, window_seconds)

            finished = wait_terminal(client, tid, timeout=seconds + 120)
            time.sleep(1)  # the monitor's last flush
            shown = json.loads(
                kernel.execute(
                    "import json\nsnap = job.monitor.snapshot()\n"
                    "print(json.dumps({k: snap[k] for k in ('status', 'running', 'error')}"
                    " | {'last': snap['log_tail'][-1] if snap['log_tail'] else ''}))"
                ).stdout
            )

    report(f"Idle kernel, extension loaded ({idle.seconds:.0f} s window)", rows_for(idle))
    report(
        f"Kernel showing the monitor of a job printing {rate:,} lines/s "
        f"({busy.seconds:.0f} s window)",
        rows_for(busy)
        + [
            ("log view updates", f"{busy.log_updates / busy.seconds:.1f} /s", "-"),
            (
                "print -> front end, median",
                f"{statistics.median(busy.lags_ms):.0f} ms" if busy.lags_ms else "none",
                "-",
            ),
            (
                "print -> front end, p90",
                f"{percentile(busy.lags_ms, 90):.0f} ms" if busy.lags_ms else "none",
                "-",
            ),
        ],
    )
    print("\n  iopub messages by kind while monitoring:")
    for kind, count in busy.kinds.most_common():
        print(f"    {kind:<28} {count / busy.seconds:7.1f} /s")
    print(
        f"\n  job {pb.Status.Name(finished.status.status)}; monitor at the end: "
        f"status {shown['status']}, running {shown['running']}, error {shown['error']}, "
        f"last line shown {shown['last'][:60]!r}"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
