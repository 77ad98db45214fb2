"""A live log tail for a notebook cell, bounded and batched.

``Output.append_stdout`` resends the whole output on every call, and Jupyter
drops iopub traffic above 1000 msgs/s and 1 MB/s: a job printing thousands of
lines would stall or lose its own log. Instead the last ``tail`` lines are kept
and the whole (bounded) text is sent once per :meth:`LogView.flush`. The
complete log is fetched only on request and shown a page at a time.
"""

from __future__ import annotations

import asyncio
import html
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import ipywidgets as widgets

from dlaas_jupyter.client import AsyncTrainerClient
from dlaas_jupyter.client.follow import Cursor
from dlaas_jupyter.formatting import log_line_text

TAIL_LINES = 200
PAGE_LINES = 2000  # lines of the full log sent at once
# Longer lines are cut in the view: a full tail at 4 updates/s stays well under 1 MB/s.
MAX_LINE_CHARS = 500
FETCH_PAGE = 1000
# Newest line at the bottom and the box scrolled there, without any JavaScript.
_BOX = (
    '<div style="height:{height};overflow:auto;display:flex;flex-direction:column-reverse;'
    'border:1px solid var(--jp-border-color2,#ddd);padding:2px 4px">'
    '<pre style="margin:0;font-size:12px;line-height:1.3">{text}</pre></div>'
)


async def read_full_log(client: AsyncTrainerClient, training_id: str) -> list[str]:
    """Every stored line of a job, paged the way a live follow pages."""
    job = await client.get(training_id)
    learners = job.training.resources.learners
    cursor = Cursor.for_job(job, client.user)
    lines: list[str] = []
    while True:
        query = cursor.query(FETCH_PAGE)
        page = await client.logs(
            training_id, pos=query.pos, pagesize=query.pagesize, since=query.since
        )
        new = [log_line_text(r, learners=learners) for r in page if cursor.accept(r)]
        lines.extend(new)
        if len(page) < FETCH_PAGE or not new:
            return lines


def _render(lines: Iterable[str], height: str) -> str:
    text = "\n".join(
        html.escape(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [cut]")
        for line in lines
    )
    return _BOX.format(height=height, text=text)


class LogView(widgets.VBox):
    """The last ``tail`` lines of a log, a Follow toggle, and the full log on demand.

    :meth:`append` only stores lines; :meth:`flush` sends the tail if it
    changed and Follow is on (off: the view holds still to be read).
    ``load_full`` returns the complete log; without it there is no
    "Show full log" button.
    """

    # ipywidgets calls close() from __del__, also on an instance whose __init__ raised.
    _built = False

    def __init__(
        self,
        *,
        tail: int = TAIL_LINES,
        load_full: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        if tail < 1:
            raise ValueError(f"tail must be at least 1 line, not {tail}")
        self._lines: deque[str] = deque(maxlen=tail)
        self._dirty = False
        self._load_full = load_full
        self._full: list[str] = []
        self._page = 0
        self._loading: set[asyncio.Task[None]] = set()

        self.follow = widgets.ToggleButton(
            value=True, description="Follow", icon="arrow-down", tooltip="Keep showing new lines"
        )
        self.follow.observe(self._on_follow, names="value")
        self.full_button = widgets.Button(description="Show full log", icon="file-text")
        self.full_button.on_click(self._on_full)
        self.full_button.layout.display = None if load_full is not None else "none"
        self.view = widgets.HTML(_render([], "16em"))
        self.full_status = widgets.HTML()
        self.previous_page = widgets.Button(icon="chevron-left", tooltip="Earlier lines")
        self.next_page = widgets.Button(icon="chevron-right", tooltip="Later lines")
        self.previous_page.on_click(lambda _: self._turn(-1))
        self.next_page.on_click(lambda _: self._turn(+1))
        for button in (self.previous_page, self.next_page):
            button.layout.width = "3em"
        self.full_view = widgets.HTML()
        self._pager = widgets.HBox([self.previous_page, self.next_page, self.full_status])
        self._full_box = widgets.VBox([self._pager, self.full_view])
        self._full_box.layout.display = "none"
        self._toolbar = widgets.HBox([self.follow, self.full_button])
        super().__init__(children=[self._toolbar, self.view, self._full_box])
        self._built = True

    @property
    def lines(self) -> list[str]:
        """The tail as stored (what the next flush shows)."""
        return list(self._lines)

    def append(self, lines: Iterable[str]) -> None:
        new = list(lines)
        if new:
            self._lines.extend(new)
            self._dirty = True

    def clear(self) -> None:
        self._lines.clear()
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        """Send the tail if it changed (one message, whatever the number of new lines)."""
        if self._dirty and self.follow.value:
            self._dirty = False
            self.view.value = _render(self._lines, "16em")

    def _on_follow(self, change: dict) -> None:
        self.flush()

    # -- the full log ---------------------------------------------------------

    def _on_full(self, _: widgets.Button) -> None:
        if self._full_box.layout.display != "none":
            self._full_box.layout.display = "none"
            self.full_button.description = "Show full log"
            return
        assert self._load_full is not None
        self._spawn(self._show_full(self._load_full()))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Clicks are handled on the kernel's event loop, which runs the task.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    async def _show_full(self, lines: Awaitable[list[str]]) -> None:
        self.full_button.disabled = True
        self.full_status.value = "Loading the full log…"
        self.full_view.value = ""
        self._full_box.layout.display = None
        try:
            self._full = await lines
        except Exception as err:  # shown, never raised into the kernel
            self.full_status.value = f"Could not load the log: {html.escape(str(err))}"
            return
        finally:
            self.full_button.disabled = False
        self.full_button.description = "Hide full log"
        self._page = 0
        self._turn(0)

    @property
    def pages(self) -> int:
        """Pages of the loaded full log (0 before it is loaded)."""
        return -(-len(self._full) // PAGE_LINES)

    def _turn(self, step: int) -> None:
        self._page = min(max(self._page + step, 0), max(self.pages - 1, 0))
        first = self._page * PAGE_LINES
        shown = self._full[first : first + PAGE_LINES]
        self.full_view.value = _render(shown, "32em")
        self.full_status.value = (
            f"lines {first + 1}–{first + len(shown)} of {len(self._full)}"
            if shown
            else "the log is empty"
        )
        self.previous_page.disabled = self._page == 0
        self.next_page.disabled = self._page >= self.pages - 1

    def close(self) -> None:
        if self._built:
            for task in self._loading:
                task.cancel()
            for widget in (self.follow, self.full_button, self.view, self.full_status,
                           self.previous_page, self.next_page, self.full_view, self._pager,
                           self._full_box, self._toolbar):
                widget.close()
        super().close()
