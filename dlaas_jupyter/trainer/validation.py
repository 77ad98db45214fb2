"""CreateTrainingJob validation, with FfDL's checks, order and messages.

Clients written for FfDL match on these messages, so they are kept verbatim;
checks FfDL lacks come after its own.
"""

from __future__ import annotations

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.spec import SpecError, parse_spec


class InvalidJob(ValueError):
    """The request would be refused by FfDL (INVALID_ARGUMENT)."""


def validate_create(request: pb.CreateRequest) -> None:
    """Raise InvalidJob with FfDL's message for the first problem found."""
    if not request.user_id:
        raise InvalidJob("UserId is nil")
    if not request.HasField("model_definition"):
        raise InvalidJob("Model definition is not set")
    model = request.model_definition
    if not model.name:
        raise InvalidJob("Model definition name is not set")
    if not model.HasField("framework"):
        raise InvalidJob("Framework is not set")
    if not model.framework.name:
        raise InvalidJob("Framework name is not set")
    if not model.framework.version:
        raise InvalidJob("Framework version is not set")
    if not model.content:
        raise InvalidJob("Model definition content is not set")
    if not request.HasField("training"):
        raise InvalidJob("Training is not set")
    training = request.training
    if not training.command:
        raise InvalidJob("Training command is not set")
    if not training.input_data:
        raise InvalidJob("Training input data is not set")
    if len(training.input_data) > 1:
        raise InvalidJob("Training input data can only contain one id")
    if len(training.output_data) > 1:
        raise InvalidJob("Training output data can only contain one id")
    # proto3 cannot tell an absent list from an empty one; FfDL's Go client
    # sends nil for "absent", so that is the message it would give.
    if not request.datastores:
        raise InvalidJob("Data stores is not set")
    ids = {ds.id for ds in request.datastores}
    for kind, refs in (("input", training.input_data), ("output", training.output_data)):
        for ref in refs:
            if ref not in ids:
                raise InvalidJob(
                    f"Training {kind} data reference '{ref}' does not reference an "
                    "existing datastore id."
                )
    _validate_resources(training.resources)
    # Better than FfDL, which fails silently at run time: a bad metrics spec
    # is refused here, with the group and the problem named.
    if request.HasField("evaluation_metrics"):
        try:
            parse_spec(request.evaluation_metrics)
        except SpecError as exc:
            raise InvalidJob(str(exc)) from exc


def _validate_resources(resources: pb.ResourceRequirements) -> None:
    for field in ("cpus", "gpus", "memory", "storage"):
        value = getattr(resources, field)
        if value < 0 or value != value:  # NaN
            raise InvalidJob(f"Training resources {field} must be a non-negative number, got {value}")
    if resources.learners < 0:
        raise InvalidJob(f"Training resources learners must be at least 1, got {resources.learners}")
