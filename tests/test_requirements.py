"""A job's requirements.txt: what the Trainer has is reused, the rest is
installed into the job's own folder before the command runs."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from conftest import SMALL_CPUS, job_request, make_zip, with_data

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.requirements import missing_requirements


def test_satisfied_requirements_need_no_install(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# comment\npsutil\nprotobuf>=1\ngrpcio ; python_version < '3'\n"
        "psutil>=999\nnot-installed-anywhere==1.0\n./local.whl\n--index-url x\n"
    )
    assert missing_requirements(path) == [
        "psutil>=999",
        "not-installed-anywhere==1.0",
        "./local.whl",
        "--index-url x",
    ]


def _wheel(name: str, module_source: str) -> tuple[str, bytes]:
    """A minimal, valid pure-Python wheel (no network or build tool needed)."""
    dist = f"{name}-1.0"
    files = {
        f"{name}/__init__.py": module_source.encode(),
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
        ),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    return f"{dist}-py3-none-any.whl", make_zip(files)


def test_missing_requirements_are_installed_for_the_job_only(api, tmp_path: Path) -> None:
    wheel_name, wheel = _wheel("dlaas_reqtest", "ANSWER = 42\n")
    request = job_request(
        "python -c 'import dlaas_reqtest, psutil; print(\"answer\", dlaas_reqtest.ANSWER)'",
        {"requirements.txt": f"psutil\n./{wheel_name}\n", wheel_name: wheel},
        cpus=SMALL_CPUS,
    )
    tid = api.create(with_data(request, tmp_path))
    job = api.wait(tid)
    lines = api.texts(tid)
    assert job.status.status == pb.COMPLETED, (job.status.status_message, lines)
    assert "answer 42" in lines
    assert any(line.startswith(f"dlaas: installing ./{wheel_name}") for line in lines), lines
    # psutil came from the Trainer's environment, not a second install.
    assert not any("psutil" in line for line in lines if line.startswith("dlaas: installing"))
    with pytest.raises(ImportError):
        __import__("dlaas_reqtest")


def test_a_requirement_pip_cannot_install_fails_the_job_before_it_runs(api, tmp_path: Path) -> None:
    files = {"requirements.txt": "./missing-1.0-py3-none-any.whl\n"}
    request = job_request("echo should-not-run", files, cpus=SMALL_CPUS)
    tid = api.create(with_data(request, tmp_path))
    job = api.wait(tid)
    assert job.status.status == pb.FAILED
    assert job.status.error_code == "S301"
    assert "Installing requirements.txt failed" in job.status.status_message
    assert "should-not-run" not in api.texts(tid)
