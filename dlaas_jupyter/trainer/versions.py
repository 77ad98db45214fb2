"""GetVersions: the frameworks this machine can actually run.

Versions come from installed package metadata rather than imports, so asking
costs milliseconds even when torch or tensorflow are installed.
"""

from __future__ import annotations

import platform
from importlib import metadata

from dlaas_jupyter.proto import trainer_pb2 as pb

# FfDL framework name -> distributions that provide it.
FRAMEWORKS = {
    "pytorch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "scikit-learn": ("scikit-learn",),
    "xgboost": ("xgboost",),
    "jax": ("jax",),
    "keras": ("keras",),
}


def installed_frameworks() -> dict[str, list[str]]:
    found = {"python": [platform.python_version(), ".".join(platform.python_version_tuple()[:2])]}
    for name, distributions in FRAMEWORKS.items():
        for dist in distributions:
            try:
                found[name] = [metadata.version(dist)]
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def versions_response() -> pb.Frameworks:
    reply = pb.Frameworks()
    for name, versions in installed_frameworks().items():
        listing = reply.frameworks[name]
        for version in versions:
            listing.versions.add(version=version, external=True)
    return reply
