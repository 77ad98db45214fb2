"""A real IPython kernel, started by jupyter_client as Jupyter starts one, for
tests and benchmarks; and notebooks saved as Jupyter saves them.

Code runs in it over the kernel protocol and its outputs come back as the
front end sees them: stdout, stderr, results and displays (mime bundles), and
errors with their tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import nbformat
from jupyter_client.manager import KernelManager

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


@dataclass
class Execution:
    """What one execute request produced."""

    status: str = ""
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result bundles
    displays: list[dict[str, Any]] = field(default_factory=list)  # display_data bundles
    error: dict[str, Any] | None = None  # ename, evalue, traceback
    pages: list[str] = field(default_factory=list)  # pager output, e.g. of `%magic?`

    @property
    def bundles(self) -> list[dict[str, Any]]:
        return self.displays + self.results

    @property
    def text(self) -> str:
        """stdout, stderr and every text/plain, ANSI colours removed."""
        plain = [bundle.get("text/plain", "") for bundle in self.bundles]
        return ANSI.sub("", "\n".join([self.stdout, self.stderr, *plain, *self.pages]))

    @property
    def result(self) -> str:
        """The text/plain of the cell's value ('' when it has none)."""
        return "\n".join(bundle.get("text/plain", "") for bundle in self.results)

    def has(self, mime: str) -> bool:
        return any(mime in bundle for bundle in self.bundles)


class Kernel:
    """A python3 kernel in ``cwd`` with exactly the environment ``env``."""

    def __init__(self, cwd: Path, env: Mapping[str, str], *, startup_timeout: float = 60) -> None:
        self.cwd = cwd
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=dict(env))
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=startup_timeout)
        except RuntimeError:
            self.close()
            raise

    def execute(self, code: str, *, timeout: float = 180, allow_error: bool = False) -> Execution:
        """Run ``code`` as one cell; raise AssertionError if it raised, unless ``allow_error``."""
        out = Execution()

        def collect(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    out.stdout += content["text"]
                else:
                    out.stderr += content["text"]
            elif kind == "execute_result":
                out.results.append(content["data"])
            elif kind == "display_data":
                out.displays.append(content["data"])
            elif kind == "error":
                out.error = content

        reply = self.client.execute_interactive(code, output_hook=collect, timeout=timeout)
        out.status = reply["content"]["status"]
        for item in reply["content"].get("payload", []):
            if item.get("source") == "page":
                out.pages.append(item["data"].get("text/plain", ""))
        if out.error is not None and not allow_error:
            trace = ANSI.sub("", "\n".join(out.error["traceback"]))
            raise AssertionError(f"the cell raised:\n{trace}\n--- stderr:\n{out.stderr}")
        return out

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_notebook(
    path: Path, cells: Sequence[str | tuple[str, str]], counts: Sequence[int | None] = ()
) -> Path:
    """Save a notebook with kernelspec metadata, as Jupyter saves one.

    A cell is code (a string) or ("markdown", text). ``counts`` are the code
    cells' execution counts, in order, as a front end records them when the
    kernel runs them (None: not run).
    """
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    numbers = iter(counts)
    for cell in cells:
        if isinstance(cell, tuple):
            notebook.cells.append(nbformat.v4.new_markdown_cell(cell[1]))
        else:
            notebook.cells.append(
                nbformat.v4.new_code_cell(cell, execution_count=next(numbers, None))
            )
    nbformat.write(notebook, path)
    return path
