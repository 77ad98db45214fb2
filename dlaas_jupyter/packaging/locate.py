"""Which notebook is this kernel running? Asked by the magics, which package the saved file.

A kernel is not told its notebook directly; each front end leaves a different
trace, tried in this order:

1. the path given explicitly (``--notebook PATH``);
2. ``__session__`` in the user namespace (ipykernel 6.22+ under JupyterLab 4 / Notebook 7);
3. ``__vsc_ipynb_file__`` in the user namespace (VS Code);
4. the ``JPY_SESSION_NAME`` environment variable (set by jupyter_server for the kernel);
5. the Jupyter server's sessions API: each running server (jupyter_server's
   ``list_running_servers``) is asked for its sessions, and the one whose
   kernel id is in this kernel's connection file name names the notebook.

Relative paths are resolved against each running server's root_dir, then the
current directory.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["NotebookNotFound", "current_notebook"]

SESSIONS_TIMEOUT = 2.0  # seconds per server: a local server answers in milliseconds
_KERNEL_FILE = re.compile(r"^kernel-(.+)\.json$")


class NotebookNotFound(ValueError):
    """The kernel's notebook could not be told; the message lists what was tried."""


def current_notebook(
    explicit: str | Path | None = None,
    *,
    user_ns: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    connection_file: str | Path | None = None,
) -> Path:
    """The absolute path of the notebook this kernel runs.

    ``user_ns`` is the kernel's namespace (``get_ipython().user_ns``);
    ``environ`` defaults to ``os.environ``; ``connection_file`` defaults to this
    kernel's (from ipykernel). Raises NotebookNotFound naming every source tried.
    """
    environ = os.environ if environ is None else environ
    user_ns = user_ns or {}
    if explicit is not None and str(explicit).strip():
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise NotebookNotFound(f"--notebook {explicit}: no such file")
        return path.resolve()

    tried: list[str] = []
    servers: list[dict[str, Any]] | None = None  # looked up once, when first needed

    def running_servers() -> list[dict[str, Any]]:
        nonlocal servers
        if servers is None:
            servers = _servers(environ)
        return servers

    def server_roots() -> list[Path]:
        return [Path(server["root_dir"]) for server in running_servers() if server.get("root_dir")]

    candidates = (
        ("__session__", user_ns.get("__session__")),
        ("__vsc_ipynb_file__", user_ns.get("__vsc_ipynb_file__")),
        ("JPY_SESSION_NAME", environ.get("JPY_SESSION_NAME")),
    )
    for source, value in candidates:
        if not value:
            tried.append(f"{source} (not set)")
            continue
        found = _existing_notebook(str(value), server_roots)
        if found is not None:
            return found
        tried.append(f"{source} ({value}: not a notebook file found)")

    found, why = _from_sessions(running_servers, connection_file)
    if found is not None:
        return found
    tried.append(f"the Jupyter server's sessions ({why})")
    raise NotebookNotFound(
        "cannot tell which notebook this kernel runs; tried "
        + "; ".join(tried)
        + ". Pass --notebook PATH"
    )


def _existing_notebook(value: str, server_roots: Callable[[], list[Path]]) -> Path | None:
    """``value`` as an existing .ipynb file, resolved against the servers' roots or the cwd."""
    path = Path(value).expanduser()
    if path.suffix.lower() != ".ipynb":
        return None
    bases = [Path()] if path.is_absolute() else [*server_roots(), Path.cwd()]
    for base in bases:
        if (base / path).is_file():
            return (base / path).resolve()
    return None


def _servers(environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The running Jupyter servers' info, or none when jupyter_server is not installed."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return []
    return list(list_running_servers(runtime_dir=environ.get("JUPYTER_RUNTIME_DIR")))


def _kernel_id(connection_file: str | Path | None) -> str | None:
    if connection_file is None:
        try:
            from ipykernel.connect import get_connection_file
            from traitlets.config import MultipleInstanceError

            connection_file = get_connection_file()
        except ImportError:  # no ipykernel
            return None
        except (RuntimeError, MultipleInstanceError):  # terminal IPython: not a kernel
            return None
    match = _KERNEL_FILE.match(Path(connection_file).name)
    return match.group(1) if match else None


def _from_sessions(
    running_servers: Callable[[], list[dict[str, Any]]], connection_file: str | Path | None
) -> tuple[Path | None, str]:
    """The notebook of the session running this kernel, or None and why not."""
    kernel = _kernel_id(connection_file)
    if kernel is None:
        return None, "not running in a Jupyter kernel with a kernel-<id>.json connection file"
    servers = running_servers()
    if not servers:
        return None, "no running Jupyter server found"
    problems: list[str] = []
    for server in servers:
        try:
            sessions = _sessions(server)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            problems.append(f"{server.get('url')}: {exc}")
            continue
        for path in _notebook_paths(sessions, kernel):
            root = Path(server.get("root_dir") or Path.cwd())
            notebook = Path(path).expanduser()
            notebook = notebook if notebook.is_absolute() else root / notebook
            if notebook.is_file():
                return notebook.resolve(), ""
            problems.append(f"{server.get('url')} names {path}, which is not a file under {root}")
    listed = f" ({'; '.join(problems)})" if problems else ""
    return None, f"no running server lists kernel {kernel}{listed}"


def _sessions(server: Mapping[str, Any]) -> list[Any]:
    url = str(server["url"])
    request = urllib.request.Request(url.rstrip("/") + "/api/sessions")
    if server.get("token"):
        request.add_header("Authorization", f"token {server['token']}")
    context = None
    if url.startswith("https:"):  # a local server's certificate is often self-signed
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, timeout=SESSIONS_TIMEOUT, context=context) as reply:
        sessions = json.load(reply)
    if not isinstance(sessions, list):
        raise ValueError("the sessions API did not answer a list")  # noqa: TRY004 (bad data, not a bad call)
    return sessions


def _notebook_paths(sessions: list[Any], kernel: str) -> Iterable[str]:
    for session in sessions:
        if not isinstance(session, Mapping) or (session.get("kernel") or {}).get("id") != kernel:
            continue
        path = session.get("path") or (session.get("notebook") or {}).get("path")
        if path:
            yield str(path)
