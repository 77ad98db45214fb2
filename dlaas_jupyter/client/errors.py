"""Domain errors: what callers catch instead of raw gRPC errors.

The magics print these, the server extension maps them to HTTP statuses, so
each names the problem in words a notebook user can act on.
"""

from __future__ import annotations

import grpc

from dlaas_jupyter.client.config import TOKEN_ENV


class DlaasError(Exception):
    """Base of every error the Trainer client raises."""


class TrainerUnavailable(DlaasError):
    """The Trainer could not be reached or did not answer in time."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"Trainer at {address} is unreachable: {detail}")
        self.address = address
        self.detail = detail


class AuthenticationFailed(DlaasError):
    """The Trainer refused the token."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(
            f"Trainer at {address} refused the credentials ({detail}); check {TOKEN_ENV}"
        )
        self.address = address
        self.detail = detail


class JobNotFound(DlaasError):
    def __init__(self, training_id: str | None, detail: str = "") -> None:
        what = f"training job {training_id!r}" if training_id else "the training job"
        super().__init__(f"{what} was not found" + (f": {detail}" if detail else ""))
        self.training_id = training_id


class PermissionDenied(DlaasError):
    def __init__(self, training_id: str | None, detail: str = "") -> None:
        what = f"training job {training_id!r}" if training_id else "this training job"
        super().__init__(f"not allowed to access {what}" + (f": {detail}" if detail else ""))
        self.training_id = training_id


class InvalidRequest(DlaasError):
    """The Trainer rejected the request; the message is the server's."""


class Unsupported(DlaasError):
    """The Trainer does not implement this call (FfDL: ResumeTrainingJob)."""


class TrainerError(DlaasError):
    """Any other failure reported by the Trainer."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(f"Trainer error {code.name}: {detail}")
        self.code = code
        self.detail = detail


def translate(err: grpc.RpcError, *, address: str, training_id: str | None = None) -> DlaasError:
    """Turn a failed call into the matching :class:`DlaasError`."""
    code_of = getattr(err, "code", None)
    details_of = getattr(err, "details", None)
    code = code_of() if callable(code_of) else None
    detail = (details_of() if callable(details_of) else None) or str(err) or "no details"
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.UNAVAILABLE:
        return TrainerUnavailable(address, detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TrainerUnavailable(address, f"no answer before the deadline ({detail})")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationFailed(address, detail)
    if code == grpc.StatusCode.NOT_FOUND:
        return JobNotFound(training_id, detail)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(training_id, detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest(detail)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unsupported(f"the Trainer at {address} does not support this call: {detail}")
    return TrainerError(code, detail)
