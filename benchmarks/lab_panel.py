"""How fast the JupyterLab side panel and job view follow the Trainer.

1. status change -> panel chip: a gated job is released; the delay runs from
   the Trainer's completion timestamp (and from the first client poll that saw
   COMPLETED) to the moment a MutationObserver in the page sees the chip say
   COMPLETED. Goal: median <= 500 ms.
2. log line -> job view: a job prints ``time.time_ns()`` every 100 ms; an
   observer on the view's log records when each line appears. Goal: p50 <= 500 ms.
3. 1,000 jobs in the panel: the records are written into a private Trainer's
   store before it starts (as benchmarks/list_jobs.py does); the time from
   clicking the panel's tab to the newest job's row rendered, how many rows the
   windowed list keeps in the DOM, and the frame times of scrolling the list to
   the bottom, where the oldest job must then be shown.

Everything runs on one machine, so the page's Date.now() and Python's clock agree.

Run: .venv/bin/python -m benchmarks.lab_panel
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from benchmarks.common import embedded_trainer, percentile, report, script_job, wait_status
from benchmarks.lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PANEL_TAB,
    Lab,
    job_item,
    running_lab,
    show_panel,
    status_chip,
)
from benchmarks.list_jobs import fill
from dlaas_jupyter.client import TrainerClient
from dlaas_jupyter.proto import trainer_pb2 as pb

USER = "lab-bench"
CPUS = 0.25
ROUNDS = 5
LOG_LINES = 100
MANY = 1_000
POLL = 0.01  # s between a client's status polls

GATED = """\
import os, sys, time
while not os.path.exists({gate!r}):
    time.sleep(0.05)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    print(time.time_ns(), flush=True)
    time.sleep(0.1)
"""

# Records Date.now() when the named job's status chip first reads COMPLETED.
WATCH_CHIP = """name => {
  window.__completedAt = undefined;
  const chip = () => [...document.querySelectorAll('#dlaas-jobs .dlaas-job')]
    .find(li => li.querySelector('.dlaas-job-name')?.textContent === name)
    ?.querySelector('.dlaas-job-line span');
  const observer = new MutationObserver(() => {
    if (chip()?.textContent === 'COMPLETED') {
      window.__completedAt = Date.now();
      observer.disconnect();
    }
  });
  observer.observe(document.querySelector('#dlaas-jobs'),
                   {subtree: true, childList: true, characterData: true});
}"""

# Records [line's own ns timestamp as ms, Date.now()] for every log line added.
WATCH_LOG = """() => {
  window.__lines = [];
  const lines = document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden) .dlaas-log-lines')
    || document.querySelector('.dlaas-log-lines');
  new MutationObserver(records => {
    const now = Date.now();
    for (const r of records) for (const node of r.addedNodes) {
      const m = /(\\d{19})/.exec(node.textContent || '');
      if (m) window.__lines.push([Number(BigInt(m[1]) / 1000000n), now]);
    }
  }).observe(lines, {childList: true});
}"""

# Records when the pointer goes down on the panel's tab (Lumino tabs open on pointerdown).
WATCH_CLICK = """() => window.addEventListener('pointerdown',
  () => { window.__clicked = performance.now(); }, {capture: true, once: true})"""

# Polled each frame: true, with the time recorded, once the named job's row is rendered.
RENDERED = """name => [...document.querySelectorAll('#dlaas-jobs .dlaas-job-name')]
  .some(a => a.textContent === name) && (window.__rendered = performance.now())"""

# Scrolls the job list (its own scroll container) to the bottom, one step per
# frame; records frame times and the most rows the DOM held, then, a frame after
# the bottom, the job names shown there.
SCROLL = """step => new Promise(resolve => {
  const el = document.querySelector('#dlaas-jobs .dlaas-job-list');
  if (!el || el.scrollHeight <= el.clientHeight + 1) { resolve(null); return; }
  const rows = () => el.querySelectorAll('.dlaas-job').length;
  const frames = [];
  let maxRows = rows();
  const start = performance.now();
  let last = start;
  const tick = now => {
    frames.push(now - last);
    last = now;
    maxRows = Math.max(maxRows, rows());
    const before = el.scrollTop;
    el.scrollTop += step;
    if (el.scrollTop === before) {  // at the bottom
      requestAnimationFrame(() => resolve({
        frames, total: now - start, height: el.scrollHeight, maxRows,
        names: [...el.querySelectorAll('.dlaas-job-name')].map(a => a.textContent)
      }));
      return;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(t => { last = t; requestAnimationFrame(tick); });
})"""


def new_page(browser: Browser, lab: Lab) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(90_000)
    page.on("pageerror", lambda e: print(f"  page error: {e}"))
    page.goto(lab.page_url())
    page.locator(PANEL_TAB).wait_for()
    return page


def gated_job(client: TrainerClient, gate: Path, name: str, lines: int = 0) -> str:
    request = script_job(GATED.format(gate=str(gate)), name=name, cpus=CPUS)
    request.training.command = f"python main.py {lines}"
    return client.create(request)


def first_seen(client: TrainerClient, training_id: str, status: int) -> float:
    """Poll every 10 ms until the job has ``status``; the wall time (ms) it was first seen."""
    wait_status(client, training_id, {status}, interval=POLL)
    return time.time() * 1000


def status_to_chip(
    page: Page, client: TrainerClient, folder: Path
) -> tuple[list[float], list[float]]:
    from_stamp, from_poll = [], []
    for n in range(ROUNDS):
        name, gate = f"status-{n}", folder / f"gate-{n}"
        training_id = gated_job(client, gate, name)
        wait_status(client, training_id, {pb.PROCESSING}, interval=POLL)
        status_chip(job_item(page, name)).filter(has_text="PROCESSING").wait_for()
        page.evaluate(WATCH_CHIP, name)
        with ThreadPoolExecutor(max_workers=1) as poller:
            polled = poller.submit(first_seen, client, training_id, pb.COMPLETED)
            gate.touch()
            page.wait_for_function("() => window.__completedAt !== undefined")
        shown = page.evaluate("window.__completedAt")
        stamp = int(client.get(training_id).status.completion_timestamp)
        from_stamp.append(shown - stamp)
        from_poll.append(shown - polled.result())
    return from_stamp, from_poll


def log_to_view(page: Page, client: TrainerClient, folder: Path) -> list[float]:
    gate = folder / "log-gate"
    training_id = gated_job(client, gate, "log-lines", LOG_LINES)
    page.locator('#dlaas-jobs .dlaas-job-name:text-is("log-lines")').click()
    page.locator(".dlaas-log-lines").first.wait_for(state="attached")
    page.evaluate(WATCH_LOG)
    gate.touch()
    page.wait_for_function(f"() => window.__lines.length >= {LOG_LINES}", timeout=120_000)
    pairs = page.evaluate("window.__lines")
    assert client.get(training_id).status.status in (pb.PROCESSING, pb.COMPLETED)
    return [shown - printed for printed, shown in pairs]


def many_jobs(browser: Browser, folder: Path) -> tuple[float, int, dict]:
    """Time to the first rows, rows in the DOM then, and the scroll to the bottom."""
    fill(folder / "trainer.db", MANY, USER)  # "experiment 0" is the oldest, listed last
    with (
        embedded_trainer(folder) as client,
        running_lab(client.config.url, client.config.token, USER, folder / "lab") as lab,
    ):
        page = new_page(browser, lab)
        page.evaluate(WATCH_CLICK)
        page.locator(PANEL_TAB).click()
        page.wait_for_function(RENDERED, arg=f"experiment {MANY - 1}", polling="raf")
        rendered = page.evaluate("window.__rendered - window.__clicked")
        rows = page.locator("#dlaas-jobs .dlaas-job").count()
        scrolled = page.evaluate(SCROLL, 200)
        page.context.close()
    if scrolled is None:
        raise RuntimeError(f"the panel's job list with {MANY:,} jobs does not scroll")
    if "experiment 0" not in scrolled["names"]:
        raise RuntimeError(
            f"the oldest job is not shown at the bottom of the list: {scrolled['names']}"
        )
    return rendered, rows, scrolled


def main() -> None:
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="dlaas-bench-lab-") as tmp, sync_playwright() as p:
        folder = Path(tmp)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        with (
            embedded_trainer(folder / "trainer", user=USER) as client,
            running_lab(client.config.url, client.config.token, USER, folder / "lab") as lab,
        ):
            page = new_page(browser, lab)
            show_panel(page)
            from_stamp, from_poll = status_to_chip(page, client, folder)
            report(
                f"status change -> panel chip COMPLETED ({ROUNDS} jobs)",
                [
                    (
                        "median from completion_timestamp",
                        f"{statistics.median(from_stamp):.0f} ms",
                        "<= 500 ms",
                    ),
                    ("max from completion_timestamp", f"{max(from_stamp):.0f} ms", "-"),
                    (
                        "median from first client poll",
                        f"{statistics.median(from_poll):.0f} ms",
                        "<= 500 ms",
                    ),
                    ("max from first client poll", f"{max(from_poll):.0f} ms", "-"),
                ],
            )
            delays = log_to_view(page, client, folder)
            report(
                f"log line printed -> shown in the job view ({len(delays)} lines, one per 100 ms)",
                [
                    ("p50", f"{percentile(delays, 50):.0f} ms", "<= 500 ms"),
                    ("p90", f"{percentile(delays, 90):.0f} ms", "-"),
                    ("max", f"{max(delays):.0f} ms", "-"),
                ],
            )
            page.context.close()
        (folder / "many").mkdir()
        rendered, rows, scrolled = many_jobs(browser, folder / "many")
        browser.close()
    frames = scrolled["frames"]
    report(
        f"panel with {MANY:,} jobs",
        [
            ("tab click -> first rows rendered", f"{rendered:.0f} ms", "renders smoothly"),
            ("rows in the DOM at first", f"{rows}", "the visible ones + overscan"),
            (
                "most rows in the DOM while scrolling",
                f"{scrolled['maxRows']}",
                "the visible ones + overscan",
            ),
            ("oldest job shown at the bottom", "yes", "yes"),
            ("scroll to bottom (200 px/frame)", f"{scrolled['total']:.0f} ms", "-"),
            ("frames while scrolling", f"{len(frames)}", "-"),
            ("frame time p50", f"{percentile(frames, 50):.1f} ms", "-"),
            ("frame time p95", f"{percentile(frames, 95):.1f} ms", "scrolls smoothly (~16.7 ms)"),
            ("frame time max", f"{max(frames):.1f} ms", "-"),
        ],
    )


if __name__ == "__main__":
    main()
