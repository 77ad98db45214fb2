"""What the wire means beyond its message types, for both of its ends (the
client and the embedded Trainer)."""

from __future__ import annotations

from dlaas_jupyter.proto import trainer_pb2 as pb

# Statuses a job never leaves.
TERMINAL = frozenset({pb.COMPLETED, pb.FAILED, pb.HALTED})
# Metadata asking a Trainer to keep a log/metrics query open and push new
# records as they are stored; the embedded Trainer honours it, FfDL ignores it
# and answers one page.
FOLLOW_METADATA = ("dlaas-follow", "1")
