"""CapacityPool bookkeeping, GPU detection through a real nvidia-smi stand-in, defaults."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

from dlaas_jupyter.trainer.capacity import (
    CapacityPool,
    Grant,
    default_resources,
    detect_gpus,
    machine_memory_bytes,
)


def test_acquire_and_release_cpus() -> None:
    pool = CapacityPool(cpus=2, gpus=0)
    first = pool.try_acquire(1.5, 0)
    assert first == Grant(cpus=1.5, gpu_ids=())
    assert pool.free_cpus == 0.5
    assert pool.try_acquire(1, 0) is None
    second = pool.try_acquire(0.5, 0)
    assert second is not None and pool.free_cpus == 0
    pool.release(first)
    pool.release(second)
    assert pool.free_cpus == 2


def test_fractional_cpus_do_not_drift() -> None:
    pool = CapacityPool(cpus=1, gpus=0)
    grants = [pool.try_acquire(0.1, 0) for _ in range(10)]
    assert all(g is not None for g in grants)
    assert pool.free_cpus == 0
    for grant in grants:
        pool.release(grant)
    assert pool.free_cpus == 1


def test_gpu_ids_are_distinct_and_come_back() -> None:
    pool = CapacityPool(cpus=8, gpus=4)
    a = pool.try_acquire(1, 2)
    b = pool.try_acquire(1, 1.5)  # fractions round up to whole GPUs
    assert a is not None and b is not None
    assert len(a.gpu_ids) == 2 and len(b.gpu_ids) == 2
    assert set(a.gpu_ids).isdisjoint(b.gpu_ids)
    assert set(a.gpu_ids) | set(b.gpu_ids) == {0, 1, 2, 3}
    assert pool.free_gpus == 0
    assert pool.try_acquire(0, 1) is None
    pool.release(a)
    assert pool.free_gpus == 2
    c = pool.try_acquire(1, 2)
    assert c is not None and set(c.gpu_ids) == set(a.gpu_ids)


def test_a_failed_acquire_reserves_nothing() -> None:
    pool = CapacityPool(cpus=4, gpus=1)
    assert pool.try_acquire(1, 2) is None
    assert (pool.free_cpus, pool.free_gpus) == (4, 1)


def test_release_twice_is_an_error() -> None:
    pool = CapacityPool(cpus=2, gpus=1)
    grant = pool.try_acquire(1, 1)
    assert grant is not None
    pool.release(grant)
    with pytest.raises(ValueError, match="already released"):
        pool.release(grant)
    assert (pool.free_cpus, pool.free_gpus) == (2, 1)


def test_never_fits_counts_gpus_only() -> None:
    pool = CapacityPool(cpus=2, gpus=0)
    assert pool.never_fits(1, 2) == "asks for 2 GPUs; this machine has 0"
    assert pool.never_fits(1, 1) == "asks for 1 GPU; this machine has 0"
    assert pool.never_fits(1, 0.5) == "asks for 0.5 GPUs; this machine has 0"
    assert pool.never_fits(64, 0) is None
    assert CapacityPool(cpus=2, gpus=2).never_fits(1, 2) is None


def test_more_cpus_than_the_machine_take_the_whole_machine() -> None:
    pool = CapacityPool(cpus=2, gpus=0)
    assert pool.clamp_cpus(16) == 2
    assert pool.clamp_cpus(1.5) == 1.5
    grant = pool.try_acquire(16, 0)
    assert grant == Grant(cpus=2.0, gpu_ids=())
    assert pool.try_acquire(0.5, 0) is None
    pool.release(grant)
    assert pool.free_cpus == 2


@pytest.mark.parametrize(("cpus", "gpus"), [(-1, 0), (1, -1), (float("nan"), 0), (1, float("inf"))])
def test_rejects_invalid_requests(cpus: float, gpus: float) -> None:
    pool = CapacityPool(cpus=2, gpus=1)
    with pytest.raises(ValueError, match="invalid resource request"):
        pool.try_acquire(cpus, gpus)
    with pytest.raises(ValueError, match="invalid resource request"):
        pool.never_fits(cpus, gpus)


def test_rejects_an_empty_machine() -> None:
    with pytest.raises(ValueError, match="positive number of CPUs"):
        CapacityPool(cpus=0, gpus=0)


def test_concurrent_use_never_oversubscribes() -> None:
    pool = CapacityPool(cpus=2, gpus=2)
    held: set[int] = set()
    held_lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        for _ in range(2000):
            grant = pool.try_acquire(0.5, 1)
            if grant is None:
                continue
            with held_lock:
                if held & set(grant.gpu_ids):
                    errors.append(f"GPU {grant.gpu_ids} handed out twice")
                held.update(grant.gpu_ids)
            with held_lock:
                held.difference_update(grant.gpu_ids)
            pool.release(grant)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (pool.free_cpus, pool.free_gpus) == (2, 2)


def _fake_nvidia_smi(folder: Path, script: str) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def test_detect_gpus_counts_gpu_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(
        tmp_path,
        'test "$1" = -L || exit 2\n'
        "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)'\n"
        "echo '  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)'\n"
        "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)'\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == 2


def test_detect_gpus_is_zero_when_nvidia_smi_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == 0


def test_detect_gpus_is_zero_without_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == 0


def test_default_resources_fit_the_machine() -> None:
    total = machine_memory_bytes()
    assert total == psutil.virtual_memory().total
    defaults = default_resources()
    assert defaults["cpus"] == 1 and defaults["gpus"] == 0
    assert defaults["memory"] == min(4 * 2**30, total // 2)
    assert 0 < defaults["memory"] <= total // 2
