"""The wheel carries the prebuilt lab extension (built with npm by the build
hook when missing) and the server extension's config, and Jupyter finds both
once the wheel is installed (no Node needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LABEXT_NAME = "dlaas-jupyter-labextension"
DATA = "dlaas_jupyter-0.1.0.data/data/"
LABEXT_DIR = f"{DATA}share/jupyter/labextensions/{LABEXT_NAME}/"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output (stdout and stderr) if it fails."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600,  # npm install and a webpack build on a busy machine
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}"
    return ANSI.sub("", proc.stdout)


def _section(listing: str, heading: str) -> str:
    """The lines a Jupyter listing prints under `heading` (up to a blank line)."""
    lines = listing.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    assert start is not None, f"no {heading!r} section in:\n{listing}"
    body = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        body.append(line)
    return "\n".join(body)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built by plain `pip wheel` from the committed sources alone (as
    from a fresh clone or an sdist): the build hook must build the extension."""
    sources = tmp_path_factory.mktemp("sources")
    tracked = _run(["git", "ls-files", "-z"], cwd=REPO).split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():  # a file deleted but not yet committed is skipped
            (sources / name).parent.mkdir(parents=True, exist_ok=True)
            (sources / name).write_bytes((REPO / name).read_bytes())
    assert not (sources / "dlaas_jupyter" / "labextension").exists()
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "SKIP_JUPYTER_BUILDER"}
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
          "-q", "-w", str(out), "."], cwd=sources, env=env)
    (built,) = out.glob("dlaas_jupyter-*.whl")
    return built


@pytest.fixture(scope="module")
def prefix(wheel: Path) -> Path:
    root = wheel.parent / "prefix"
    # --ignore-installed: without it pip first uninstalls the editable copy
    # from the test environment itself, even though --prefix points elsewhere.
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps",
          "--ignore-installed", "-q", "--prefix", str(root), str(wheel)])
    return root


def test_wheel_ships_extensions_once(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{LABEXT_DIR}package.json" in names
    assert f"{LABEXT_DIR}install.json" in names
    assert any(re.fullmatch(rf"{LABEXT_DIR}static/remoteEntry\.[0-9a-f]+\.js", n) for n in names)
    assert f"{DATA}etc/jupyter/jupyter_server_config.d/dlaas_jupyter.json" in names
    assert not [n for n in names if n.startswith("dlaas_jupyter/labextension/")]


def test_installed_wheel_is_found_by_jupyter(prefix: Path, tmp_path: Path) -> None:
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    config = prefix / "etc" / "jupyter"
    share = prefix / "share" / "jupyter"
    env = {
        **os.environ,
        # First on the path, so the wheel's copy is imported, not the editable one.
        "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_PATH": str(config),
        # `jupyter server extension list` reads only the user, sys-prefix and
        # system dirs, so the prefix stands in as the user's config dir.
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_PATH": str(share),
    }
    bindir = Path(sys.executable).parent
    # A neutral cwd, so `python -c` does not import the checkout's package.
    imported = _run([sys.executable, "-c", "import dlaas_jupyter; print(dlaas_jupyter.__file__)"],
                    env=env, cwd=tmp_path).strip()
    assert Path(imported).is_relative_to(prefix), imported

    servers = _section(_run([str(bindir / "jupyter"), "server", "extension", "list"],
                            env=env, cwd=tmp_path), f"Config dir: {config}")
    assert re.search(r"^\s*dlaas_jupyter enabled$", servers, re.MULTILINE), servers
    assert re.search(r"^\s*dlaas_jupyter \S+ OK$", servers, re.MULTILINE), servers

    labexts = _section(_run([str(bindir / "jupyter"), "labextension", "list"],
                            env=env, cwd=tmp_path), str(share / "labextensions"))
    assert re.search(rf"^\s*{LABEXT_NAME} v\S+ enabled OK", labexts, re.MULTILINE), labexts
