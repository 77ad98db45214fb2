"""Pluggable back ends that run learner processes, chosen by name in the configuration.

Local processes first; a cluster engine registers here later.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Backend, LearnerProcess
from .local import LocalProcessBackend

__all__ = ["BACKENDS", "Backend", "LearnerProcess", "load_backend"]

BACKENDS: dict[str, Callable[[], Backend]] = {
    LocalProcessBackend.name: LocalProcessBackend,
}


def load_backend(name: str) -> Backend:
    """A new instance of the back end registered as `name`."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown back end {name!r}; known back ends: {known}") from None
    return factory()
