"""Trained-model download: a job leaves a 1 GiB result; how fast does the
client stream it to a file, and how much does the client's memory grow?
Goal: >= 500 MB/s on loopback, client memory growth < 64 MiB.

Run: .venv/bin/python -m benchmarks.download [MIB]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psutil

from benchmarks.common import embedded_trainer, report, script_job, wait_terminal
from dlaas_jupyter.proto import trainer_pb2 as pb

JOB = """
import os
block = os.urandom(1 << 20)
with open(os.path.join(os.environ["RESULT_DIR"], "model.bin"), "wb") as out:
    for _ in range({mib}):
        out.write(block)
"""


class PeakRss(threading.Thread):
    """Samples this process's resident memory every few milliseconds."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)


def main(mib: int = 1024) -> None:
    with embedded_trainer() as client, tempfile.TemporaryDirectory() as tmp:
        tid = client.create(script_job(JOB.format(mib=mib), name="download"))
        job = wait_terminal(client, tid)
        assert job.status.status == pb.COMPLETED, job.status
        target = Path(tmp) / "model.zip"
        sampler = PeakRss()
        sampler.start()
        start = time.perf_counter()
        client.download_trained_model(tid, target)
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        size = target.stat().st_size
        with zipfile.ZipFile(target) as archive:
            stored = archive.getinfo("model.bin").file_size
        assert stored == mib << 20, f"model.bin has {stored} bytes"
    report(
        f"Trained-model download ({size / 2**20:,.0f} MiB zip)",
        [
            ("throughput", f"{size / seconds / 1e6:,.0f} MB/s", ">= 500 MB/s"),
            (
                "client memory growth",
                f"{(sampler.peak - sampler.baseline) / 2**20:.1f} MiB",
                "< 64 MiB",
            ),
        ],
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
