"""Regenerate the Python stubs for dlaas_jupyter/proto/trainer.proto.

Run from anywhere: ``python scripts/generate_proto.py [OUT_DIR]``. Without
OUT_DIR the stubs are written next to the .proto; the test suite calls this with
a temporary OUT_DIR to check that the committed stubs are not stale.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("dlaas_jupyter/proto/trainer.proto")
OUTPUTS = ("trainer_pb2.py", "trainer_pb2.pyi", "trainer_pb2_grpc.py", "trainer_pb2_grpc.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Write the four stub files for trainer.proto into ``out_dir``."""
    # protoc-gen-mypy and protoc-gen-mypy_grpc live next to this interpreter;
    # protoc runs in this process, so PATH is widened for the call only.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with mock.patch.dict(os.environ, {"PATH": path}), tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            str(ROOT / PROTO),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            target = out_dir / name
            shutil.copyfile(Path(tmp) / PROTO.parent / name, target)
            written.append(target)
        return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / PROTO.parent
    for path in generate(out):
        print(path)
