"""Job statuses: which are terminal, which mean processes may be running; FfDL's error codes."""

from __future__ import annotations

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto.semantics import TERMINAL

# Statuses in which the Trainer owns work in progress for the job.
ACTIVE = frozenset({pb.PENDING, pb.DOWNLOADING, pb.PROCESSING, pb.STORING})

# FfDL's error codes used here (reference: ffdl-behaviour.md).
INSUFFICIENT_RESOURCES = "S100"
LEARNER_FAILED_SYSTEM = "S104"
LOAD_MODEL_FAILED = "S301"
LOAD_DATA_FAILED = "S302"
STORE_RESULTS_FAILED = "S303"
INVALID_ZIP = "C102"
LEARNER_CRASHED = "C201"
HALTED_CODE = "0"
HALTED_MESSAGE = "Halted by user"

SIZE_UNIT_BYTES = {pb.MB: 10**6, pb.MiB: 2**20, pb.GB: 10**9, pb.GiB: 2**30}


def is_terminal(status: int) -> bool:
    return status in TERMINAL


def memory_bytes(resources: pb.ResourceRequirements) -> int:
    return int(resources.memory * SIZE_UNIT_BYTES[resources.memory_unit])
