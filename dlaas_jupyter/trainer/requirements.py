"""Installing a job's requirements.txt before its command runs.

Policy: what the Trainer's own environment already satisfies is used as it
is; everything else is installed with pip into the job's own folder, which
is put on the learners' PYTHONPATH. Jobs never change each other's
environment or the Trainer's, and a job needing nothing new starts at once.
pip's output goes into learner 1's log.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

REQUIREMENTS_FILE = "requirements.txt"


class RequirementsError(RuntimeError):
    """pip could not install what the job asked for."""


def missing_requirements(path: Path) -> list[str]:
    """Lines of ``path`` the running environment does not already satisfy."""
    missing = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-") or "://" in line or line.startswith((".", "/")):
            missing.append(line)  # options, URLs and paths: pip decides
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            missing.append(line)  # let pip report it in the log
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


async def install(model_dir: Path, target: Path, log_file: Path) -> list[str]:
    """Install the missing requirements of ``model_dir`` into ``target``;
    returns what was installed (empty when nothing was needed)."""
    path = model_dir / REQUIREMENTS_FILE
    if not path.is_file():
        return []
    missing = missing_requirements(path)
    if not missing:
        return []
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(f"dlaas: installing {', '.join(missing)} from requirements.txt\n".encode())
        log.flush()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input", "--target", str(target), *_pip_args(missing),
            cwd=model_dir, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )
        code = await process.wait()
    if code != 0:
        raise RequirementsError(f"pip exited with code {code} installing {', '.join(missing)}")
    return missing


def _pip_args(lines: list[str]) -> list[str]:
    args: list[str] = []
    for line in lines:
        args.extend(line.split(maxsplit=1) if line.startswith("-") else [line])
    return args
