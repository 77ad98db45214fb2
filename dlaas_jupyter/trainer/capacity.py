"""What this machine has free for learners, and what a job gets by default.

The embedded Trainer queues a job until its CPUs and GPUs fit; FfDL's cluster
defaults (5 CPUs, 1 GPU, 12 GiB) would never fit a laptop, so local defaults
are sized from the machine instead.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import TypedDict

import psutil

__all__ = [
    "CapacityPool",
    "DefaultResources",
    "Grant",
    "default_resources",
    "detect_gpus",
    "machine_memory_bytes",
]

_MILLI = 1000  # CPUs are counted in thousandths so that sums of fractions do not drift
_DEFAULT_MEMORY_CAP = 4 * 2**30


@dataclass(frozen=True)
class Grant:
    """What one acquisition reserved: CPUs and the ids of the GPUs it owns."""

    cpus: float
    gpu_ids: tuple[int, ...]


class CapacityPool:
    """CPUs and GPUs of this machine, reserved and returned by running jobs. Thread-safe."""

    def __init__(self, cpus: float, gpus: int) -> None:
        if not cpus > 0:
            raise ValueError(f"a capacity pool needs a positive number of CPUs, not {cpus}")
        if gpus < 0:
            raise ValueError(f"a capacity pool cannot have {gpus} GPUs")
        self.total_cpus = float(cpus)
        self.total_gpus = int(gpus)
        self._lock = threading.Lock()
        self._total_milli = round(cpus * _MILLI)
        self._free_milli = self._total_milli
        self._free_gpu_ids = set(range(self.total_gpus))

    @property
    def free_cpus(self) -> float:
        with self._lock:
            return self._free_milli / _MILLI

    @property
    def free_gpus(self) -> int:
        with self._lock:
            return len(self._free_gpu_ids)

    def never_fits(self, cpus: float, gpus: float) -> str | None:
        """Why the request can never run here, or None.

        Only GPUs count: a job asking for more CPUs than exist still runs, on
        the whole machine (see clamp_cpus).
        """
        _check_request(cpus, gpus)
        if math.ceil(gpus) > self.total_gpus:
            plural = "" if gpus == 1 else "s"
            return f"asks for {gpus:g} GPU{plural}; this machine has {self.total_gpus}"
        return None

    def clamp_cpus(self, cpus: float) -> float:
        """A job asking for more CPUs than the machine has reserves the whole machine."""
        return min(float(cpus), self.total_cpus)

    def try_acquire(self, cpus: float, gpus: float) -> Grant | None:
        """Reserve the CPUs (clamped to the machine) and whole GPUs (fractions round up).

        None when the request does not fit now, or never fits (see never_fits).
        """
        _check_request(cpus, gpus)
        milli = round(self.clamp_cpus(cpus) * _MILLI)
        whole_gpus = math.ceil(gpus)
        with self._lock:
            if milli > self._free_milli or whole_gpus > len(self._free_gpu_ids):
                return None
            gpu_ids = tuple(sorted(self._free_gpu_ids)[:whole_gpus])
            self._free_gpu_ids.difference_update(gpu_ids)
            self._free_milli -= milli
        return Grant(cpus=milli / _MILLI, gpu_ids=gpu_ids)

    def release(self, grant: Grant) -> None:
        """Return what `grant` reserved; a grant released twice is an error."""
        milli = round(grant.cpus * _MILLI)
        with self._lock:
            if (
                self._free_gpu_ids.intersection(grant.gpu_ids)
                or not set(grant.gpu_ids) <= set(range(self.total_gpus))
                or self._free_milli + milli > self._total_milli
            ):
                raise ValueError(f"{grant} was not acquired from this pool or was already released")
            self._free_gpu_ids.update(grant.gpu_ids)
            self._free_milli += milli


def _check_request(cpus: float, gpus: float) -> None:
    if not (cpus >= 0 and gpus >= 0) or math.isinf(cpus) or math.isinf(gpus):
        raise ValueError(f"invalid resource request: cpus {cpus}, gpus {gpus}")


def detect_gpus() -> int:
    """How many NVIDIA GPUs `nvidia-smi -L` lists; 0 when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        result = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    if result.returncode != 0:
        return 0
    # MIG devices appear as indented lines under their GPU; count whole GPUs.
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    return int(psutil.virtual_memory().total)


class DefaultResources(TypedDict):
    cpus: float
    gpus: float
    memory: int  # bytes


def default_resources() -> DefaultResources:
    """What a local job gets when it names no resources.

    One CPU and no GPU run any notebook-sized job on any machine. Memory is
    4 GiB or half of RAM, whichever is less: the learner shares the machine
    with the notebook server, kernels and browser of the user who launched it,
    and half leaves them room even on a small laptop.
    """
    return DefaultResources(
        cpus=1.0, gpus=0.0, memory=min(_DEFAULT_MEMORY_CAP, machine_memory_bytes() // 2)
    )
