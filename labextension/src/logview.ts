/**
 * A live log tail that stays fast for any log length: only the last
 * `maxLines` lines are in the DOM, lines arriving between two frames are
 * added in one batch, and the full log is fetched only when downloaded.
 */
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { lineText, saveUrl } from './format';
import { readAll } from './pages';

/** Lines kept in the view. */
const MAX_LINES = 2000;

export class LogView extends Widget {
  constructor(
    private readonly _jobId: string,
    readonly maxLines = MAX_LINES
  ) {
    super();
    this.addClass('dlaas-log');
    const header = document.createElement('div');
    header.className = 'dlaas-section-header';
    const title = document.createElement('span');
    title.className = 'dlaas-section-title';
    title.textContent = 'Log';
    this._note.className = 'dlaas-log-note';
    const follow = document.createElement('label');
    follow.className = 'dlaas-log-follow';
    this._follow.type = 'checkbox';
    this._follow.checked = true;
    this._follow.onchange = () => this._followChanged();
    follow.append(this._follow, ' Follow');
    const download = document.createElement('a');
    download.className = 'dlaas-log-download';
    download.href = '#';
    download.textContent = 'Download full log';
    download.onclick = event => {
      event.preventDefault();
      void this._downloadFull(download);
    };
    header.append(title, this._note, follow, download);
    this._lines.className = 'dlaas-log-lines';
    this._lines.onscroll = () => this._scrolled();
    this.node.append(header, this._lines);
  }

  /** How many learners the job has: lines are prefixed with theirs when there are several. */
  learners = 1;

  /** Whether the view scrolls to each new line (the Follow box; scrolling up unticks it). */
  get follow(): boolean {
    return this._follow.checked;
  }

  /** Add lines; they are drawn with the next frame. */
  append(lines: readonly api.LogLine[]): void {
    for (const line of lines) {
      this._pending.push(lineText(line, this.learners));
    }
    if (this._pending.length > this.maxLines) {
      this._pending.splice(0, this._pending.length - this.maxLines);
    }
    for (const line of lines) {
      this._lastIndex.set(line.subid, Math.max(line.rindex, this._lastIndex.get(line.subid) ?? 0));
    }
    if (!this._frame) {
      this._frame = requestAnimationFrame(() => this._flush());
    }
  }

  /** Forget every line (before the log is read again from its start). */
  clear(): void {
    this._pending = [];
    this._lastIndex.clear();
    this._lines.textContent = '';
    this._note.textContent = '';
  }

  /** Show exactly these lines, e.g. the last page of the log when it is polled. */
  replace(lines: readonly api.LogLine[]): void {
    this.clear();
    this.append(lines);
  }

  dispose(): void {
    if (this._frame) {
      cancelAnimationFrame(this._frame);
    }
    super.dispose();
  }

  private _flush(): void {
    this._frame = 0;
    const fragment = document.createDocumentFragment();
    for (const text of this._pending) {
      const div = document.createElement('div');
      div.textContent = text;
      fragment.appendChild(div);
    }
    this._pending = [];
    this._lines.appendChild(fragment);
    let excess = this._lines.childElementCount - this.maxLines;
    while (excess-- > 0) {
      this._lines.firstElementChild!.remove();
    }
    const shown = this._lines.childElementCount;
    let total = 0; // each learner's last line number: its line count
    this._lastIndex.forEach(last => (total += last));
    this._note.textContent =
      total > shown ? `last ${shown.toLocaleString()} lines shown` : '';
    if (this.follow) {
      this._scrollToEnd();
    }
  }

  private _followChanged(): void {
    if (this.follow) {
      this._scrollToEnd();
    }
  }

  private _scrollToEnd(): void {
    this._autoScrolling = true;
    this._lines.scrollTop = this._lines.scrollHeight;
  }

  /** Scrolling up stops following; scrolling back to the end resumes it. */
  private _scrolled(): void {
    if (this._autoScrolling) {
      this._autoScrolling = false;
      return;
    }
    const el = this._lines;
    const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < 4;
    if (atEnd !== this.follow) {
      this._follow.checked = atEnd;
    }
  }

  /** Read every page of the log and hand it to the browser as a text file. */
  private async _downloadFull(link: HTMLAnchorElement): Promise<void> {
    const label = link.textContent;
    link.textContent = 'Preparing log…';
    try {
      const lines = await readAll(query => api.getLogs(this._jobId, query), this.learners > 1);
      const text = lines.map(line => lineText(line, this.learners) + '\n').join('');
      const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      saveUrl(url, `${this._jobId}-log.txt`);
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      link.textContent = label;
    } catch (error) {
      link.textContent = `${label} (failed: ${(error as Error).message})`;
    }
  }

  private _note = document.createElement('span');
  private _follow = document.createElement('input');
  private _lines = document.createElement('div');
  private _pending: string[] = [];
  /** The highest line number seen per learner. */
  private _lastIndex = new Map<string, number>();
  private _frame = 0;
  private _autoScrolling = false;
}
