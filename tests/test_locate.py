"""Finding the kernel's notebook: each source in order, and the Jupyter sessions
API over real HTTP."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dlaas_jupyter.packaging.locate import NotebookNotFound, current_notebook

KERNEL_ID = "5f1c2a4e-0000-4000-8000-0123456789ab"
TOKEN = "secret-token"


@dataclass
class FakeJupyter:
    """A local HTTP server answering GET /api/sessions as jupyter_server does."""

    url: str
    sessions: object  # what GET /api/sessions answers
    seen_auth: list[str] = field(default_factory=list)


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[FakeJupyter]:
    state = FakeJupyter(url="", sessions=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen_auth.append(self.headers.get("Authorization", ""))
            if self.path != "/base/api/sessions":
                self.send_error(404)
                return
            if self.headers.get("Authorization") != f"token {TOKEN}":
                self.send_error(403)
                return
            body = json.dumps(state.sessions).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/base/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def server_info(runtime: Path, url: str, root: Path, token: str = TOKEN) -> None:
    """The jpserver-<pid>.json a running Jupyter server writes (this process stands in for it)."""
    runtime.mkdir(parents=True, exist_ok=True)
    info = {"url": url, "token": token, "root_dir": str(root), "pid": os.getpid(), "secure": False}
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(info))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


NO_SERVER = {"JUPYTER_RUNTIME_DIR": "/nonexistent/runtime"}


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = touch(tmp_path / "given.ipynb")
    other = touch(tmp_path / "other.ipynb")
    monkeypatch.chdir(tmp_path)
    found = current_notebook("given.ipynb", user_ns={"__session__": str(other)}, environ=NO_SERVER)
    assert found == given.resolve()
    with pytest.raises(NotebookNotFound, match="--notebook missing.ipynb: no such file"):
        current_notebook("missing.ipynb", user_ns={"__session__": str(other)}, environ=NO_SERVER)


def test_sources_in_order(tmp_path: Path) -> None:
    session = touch(tmp_path / "session.ipynb")
    vscode = touch(tmp_path / "vscode.ipynb")
    env = touch(tmp_path / "env.ipynb")
    environ = {**NO_SERVER, "JPY_SESSION_NAME": str(env)}
    both = {"__session__": str(session), "__vsc_ipynb_file__": str(vscode)}
    assert current_notebook(user_ns=both, environ=environ) == session
    assert current_notebook(user_ns={"__vsc_ipynb_file__": str(vscode)}, environ=environ) == vscode
    assert current_notebook(user_ns={}, environ=environ) == env
    # A console's session name is no notebook: the next source answers.
    console = {"__session__": str(tmp_path / "console-1-abc")}
    assert current_notebook(user_ns=console, environ=environ) == env


def test_relative_session_path_resolves_against_server_root_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    nested = touch(root / "work" / "nb.ipynb")
    runtime = tmp_path / "runtime"
    server_info(runtime, "http://127.0.0.1:9/", root)
    environ = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    assert current_notebook(user_ns={"__session__": "work/nb.ipynb"}, environ=environ) == nested
    elsewhere = touch(tmp_path / "cwd" / "local.ipynb")
    monkeypatch.chdir(elsewhere.parent)
    assert current_notebook(user_ns={"__session__": "local.ipynb"}, environ=environ) == elsewhere


def test_sessions_api_finds_the_kernel(tmp_path: Path, jupyter: FakeJupyter) -> None:
    root = tmp_path / "root"
    notebook = touch(root / "projects" / "train.ipynb")
    jupyter.sessions = [
        {"id": "s1", "path": "projects/other.ipynb", "kernel": {"id": "another-kernel"}},
        {
            "id": "s2",
            "path": "projects/train.ipynb",
            "type": "notebook",
            "kernel": {"id": KERNEL_ID},
        },
    ]
    runtime = tmp_path / "runtime"
    server_info(runtime, jupyter.url, root)
    found = current_notebook(
        user_ns={},
        environ={"JUPYTER_RUNTIME_DIR": str(runtime)},
        connection_file=runtime / f"kernel-{KERNEL_ID}.json",
    )
    assert found == notebook.resolve()
    assert jupyter.seen_auth == [f"token {TOKEN}"]


def test_error_names_every_source_and_the_fix(tmp_path: Path, jupyter: FakeJupyter) -> None:
    runtime = tmp_path / "runtime"
    server_info(runtime, jupyter.url, tmp_path)
    jupyter.sessions = [{"id": "s1", "path": "x.ipynb", "kernel": {"id": "another-kernel"}}]
    with pytest.raises(NotebookNotFound) as caught:
        current_notebook(
            user_ns={"__session__": "gone.ipynb"},
            environ={"JUPYTER_RUNTIME_DIR": str(runtime)},
            connection_file=f"/tmp/kernel-{KERNEL_ID}.json",
        )
    message = str(caught.value)
    assert "__session__ (gone.ipynb: not a notebook file found)" in message
    assert "__vsc_ipynb_file__ (not set)" in message
    assert "JPY_SESSION_NAME (not set)" in message
    assert f"no running server lists kernel {KERNEL_ID}" in message
    assert message.endswith("Pass --notebook PATH")


def test_error_when_the_server_refuses_or_is_not_a_kernel(
    tmp_path: Path, jupyter: FakeJupyter
) -> None:
    runtime = tmp_path / "runtime"
    server_info(runtime, jupyter.url, tmp_path, token="wrong")
    with pytest.raises(NotebookNotFound, match=r"HTTP Error 403"):
        current_notebook(
            user_ns={},
            environ={"JUPYTER_RUNTIME_DIR": str(runtime)},
            connection_file=f"kernel-{KERNEL_ID}.json",
        )
    server_info(runtime, jupyter.url, tmp_path)
    jupyter.sessions = {"message": "not a list"}
    with pytest.raises(NotebookNotFound, match="the sessions API did not answer a list"):
        current_notebook(
            user_ns={},
            environ={"JUPYTER_RUNTIME_DIR": str(runtime)},
            connection_file=f"kernel-{KERNEL_ID}.json",
        )
    # Outside a kernel (pytest is not one) the connection file cannot be found.
    with pytest.raises(NotebookNotFound, match="not running in a Jupyter kernel"):
        current_notebook(user_ns={}, environ={"JUPYTER_RUNTIME_DIR": str(runtime)})
    with pytest.raises(NotebookNotFound, match="no running Jupyter server found"):
        current_notebook(user_ns={}, environ=NO_SERVER, connection_file=f"kernel-{KERNEL_ID}.json")
