"""The monitor without widgets: a job's log as plain text, for terminals,
plain IPython, or notebooks where ipywidgets cannot render."""

from __future__ import annotations

import sys
from typing import TextIO

from dlaas_jupyter.client import TrainerClient
from dlaas_jupyter.formatting import log_line_text
from dlaas_jupyter.proto import trainer_pb2 as pb


def follow_as_text(training_id: str, client: TrainerClient, out: TextIO = sys.stdout) -> str:
    """Write the job's log lines to ``out`` as they come until the job ends,
    then one status line; returns the final status name (e.g. "COMPLETED").

    Blocks until the job has ended. Client errors (DlaasError) propagate.
    """
    learners = client.get(training_id).training.resources.learners
    for record in client.follow_logs(training_id):
        out.write(log_line_text(record, learners=learners) + "\n")
    status = client.get(training_id).status
    name = pb.Status.Name(status.status)
    detail = " ".join(p for p in (status.error_code, status.status_message) if p)
    out.write(f"{training_id}: {name}" + (f" ({detail})" if detail else "") + "\n")
    out.flush()
    return name
