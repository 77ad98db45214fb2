/**
 * A job's view in the main area: its details, live metric charts and live log.
 *
 * Live through the `jobs/{id}/events` socket, which replays the end of the
 * job's log (as many lines as the view keeps) and all its metrics, then
 * follows them until the job ends. While the
 * socket is down a Poll reads the job, the last page of its log and then the
 * new lines, and its metrics, backing off on failures, and reopens the socket.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import {
  codeIcon,
  deleteIcon,
  downloadIcon,
  stopIcon,
  ToolbarButton
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { Panel, Widget } from '@lumino/widgets';

import * as actions from './actions';
import * as api from './api';
import { MetricCharts } from './charts';
import {
  formatDuration,
  formatFramework,
  formatResources,
  formatTime,
  isActive,
  learnerCount,
  statusClass
} from './format';
import { jobsIcon } from './icons';
import { LogView } from './logview';
import { Pager } from './pages';

const FALLBACK_FREQUENCY = { interval: 3000, backoff: true, max: 30_000 };

export class JobView extends Panel {
  constructor(readonly jobId: string) {
    super();
    this.addClass('dlaas-job-view');
    this._details.addClass('dlaas-details');
    this._logs = new LogView(jobId);
    this.addWidget(this._details);
    this.addWidget(this._charts);
    this.addWidget(this._logs);
    this._details.node.textContent = 'Loading…';
    this.title.icon = jobsIcon;
    this.title.label = jobId;
    this._poll = new Poll({
      name: `dlaas:job:${jobId}`,
      factory: () => this._pollTick(),
      frequency: FALLBACK_FREQUENCY,
      standby: () => this._live || this._ended || !this.isVisible || 'when-hidden',
      auto: false
    });
    this._connect();
    this._clock = window.setInterval(() => this._tickClock(), 1000);
  }

  /** Emitted with each new state of the job. */
  get jobChanged(): ISignal<this, api.Job> {
    return this._jobChanged;
  }

  /** Emitted when the job is gone: deleted from this view, or found missing. */
  get gone(): ISignal<this, void> {
    return this._gone;
  }

  /** Make this view's toolbar: halt, downloads, delete. */
  populateToolbar(widget: MainAreaWidget<JobView>): void {
    this._buttons = {
      halt: new ToolbarButton({
        icon: stopIcon,
        label: 'Halt',
        tooltip: 'Halt the job (its logs and results so far are kept)',
        enabled: false,
        onClick: () => void this._halt()
      }),
      model: new ToolbarButton({
        icon: downloadIcon,
        label: 'Model',
        tooltip: 'Download the trained model (a zip)',
        enabled: false,
        onClick: () => void (this._job && actions.download(this._job, 'model'))
      }),
      definition: new ToolbarButton({
        icon: codeIcon,
        label: 'Definition',
        tooltip: 'Download the model definition that was submitted (a zip)',
        enabled: false,
        onClick: () => void (this._job && actions.download(this._job, 'definition'))
      }),
      remove: new ToolbarButton({
        icon: deleteIcon,
        label: 'Delete',
        tooltip: 'Delete the job, its logs, metrics and results',
        enabled: false,
        onClick: () => void this._remove()
      })
    };
    for (const [name, button] of Object.entries(this._buttons)) {
      widget.toolbar.addItem(`dlaas-${name}`, button);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    if (!this._live && !this._ended && this._job) {
      void this._poll.refresh(); // catch up at once with what happened while hidden
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this._clock);
    this._closeSocket();
    this._poll.dispose();
    super.dispose();
  }

  private _connect(): void {
    if (this._socket || this._ended || this.isDisposed) {
      return;
    }
    // Of a long log only the lines the view keeps are replayed.
    const socket = (this._socket = api.openSocket(api.jobPath(this.jobId, '/events'), {
      tail: String(this._logs.maxLines)
    }));
    socket.onopen = () => {
      this._live = true;
      // The socket replays the log's end and every metric: drop what a poll may have shown.
      this._pagers = null;
      this._logs.clear();
      this._charts.clear();
    };
    socket.onmessage = event => this._onMessage(JSON.parse(event.data) as api.JobMessage);
    socket.onclose = () => {
      if (this._socket !== socket) {
        return;
      }
      const wasLive = this._live;
      this._socket = null;
      this._live = false;
      if (!this._ended) {
        // Poll instead; at once if a live socket dropped, else at the poll's (backed-off) pace.
        void this._poll.start();
        if (wasLive) {
          void this._poll.refresh();
        }
      }
    };
  }

  private _closeSocket(): void {
    const socket = this._socket;
    this._socket = null;
    this._live = false;
    socket?.close();
  }

  private _onMessage(message: api.JobMessage): void {
    switch (message.type) {
      case 'status':
        this._setJob(message.job);
        break;
      case 'log':
        this._logs.append(message.lines);
        break;
      case 'metrics':
        this._charts.add(message.records);
        break;
      case 'end':
        this._ended = true;
        break;
      case 'error':
        this._showError(message.message); // the socket closes next: polling takes over
        break;
    }
  }

  private async _pollTick(): Promise<void> {
    try {
      const job = await api.getJob(this.jobId);
      this._setJob(job);
      await this._readNew(job);
      if (!isActive(job)) {
        this._ended = true; // finished, and all there is has been read
      } else {
        this._connect();
      }
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 404) {
        this._ended = true;
        this._gone.emit(); // deleted elsewhere: the view closes
        return;
      }
      this._showError((error as Error).message);
      throw error; // the poll backs off
    }
  }

  /**
   * Show what was stored since the last poll; the first time, the last page
   * of the log and all the metrics, in place of what the socket had sent.
   */
  private async _readNew(job: api.Job): Promise<void> {
    const id = this.jobId;
    const first = this._pagers === null;
    const byTime = learnerCount(job) > 1;
    const pagers = (this._pagers ??= {
      logs: new Pager<api.LogLine>(query => api.getLogs(id, query), byTime),
      metrics: new Pager<api.MetricRecord>(query => api.getMetrics(id, query), byTime)
    });
    const last = first
      ? pagers.logs.accept(await api.getLogs(id, { pos: -1, pagesize: this._logs.maxLines }))
      : [];
    const [lines, records] = await Promise.all([pagers.logs.more(), pagers.metrics.more()]);
    if (this._pagers !== pagers) {
      return; // the socket came back meanwhile and replays everything
    }
    if (first) {
      this._logs.replace(last);
      this._charts.clear();
    }
    this._logs.append(lines);
    this._charts.add(records);
  }

  private _setJob(job: api.Job): void {
    this._job = job;
    this._logs.learners = learnerCount(job);
    this.title.label = job.name;
    this.title.caption = `${job.name} (${job.training_id}): ${job.status}`;
    this._renderDetails();
    if (this._buttons) {
      this._buttons.halt.enabled = isActive(job);
      this._buttons.model.enabled = !isActive(job);
      this._buttons.definition.enabled = true;
      this._buttons.remove.enabled = true;
    }
    this._jobChanged.emit(job);
  }

  private _tickClock(): void {
    if (this._job && isActive(this._job) && this.isVisible) {
      this._renderDetails();
    }
  }

  private _renderDetails(): void {
    const job = this._job!;
    const { submission, download_start, process_start, completion } = job.timestamps;
    const status = document.createElement('span');
    status.className = statusClass(job.status);
    status.textContent = job.status;
    const rows: [string, string | Node][] = [
      ['Name', job.name],
      ['ID', job.training_id],
      ['Status', status],
      ['Message', [job.status_message, errorCode(job.error_code)].join(' ')],
      ['Framework', formatFramework(job)],
      ['Command', job.command],
      ['Resources', formatResources(job)],
      ['Submitted', formatTime(submission)],
      ['Started', formatTime(download_start ?? process_start)],
      ['Completed', formatTime(completion)],
      ['Duration', formatDuration(job, Date.now())],
      ['User', job.user_id],
      ['Description', job.description]
    ];
    const list = document.createElement('dl');
    for (const [term, value] of rows) {
      if (value === '' || (typeof value === 'string' && !value.trim())) {
        continue;
      }
      const dt = document.createElement('dt');
      dt.textContent = term;
      const dd = document.createElement('dd');
      dd.append(value);
      list.append(dt, dd);
    }
    this._details.node.replaceChildren(list);
  }

  private _showError(message: string): void {
    if (this._job) {
      this._renderDetails();
    } else {
      this._details.node.replaceChildren();
    }
    const banner = document.createElement('div');
    banner.className = 'dlaas-banner';
    banner.textContent = `Cannot read the job (retrying): ${message}`;
    this._details.node.prepend(banner);
  }

  private async _halt(): Promise<void> {
    if (this._job) {
      const job = await actions.halt(this._job);
      if (job) {
        this._setJob(job);
      }
    }
  }

  private async _remove(): Promise<void> {
    if (this._job && (await actions.remove(this._job))) {
      this._ended = true;
      this._gone.emit();
    }
  }

  private _details = new Widget();
  private _charts = new MetricCharts();
  private _logs: LogView;
  private _poll: Poll;
  private _socket: WebSocket | null = null;
  private _live = false;
  private _ended = false;
  private _job: api.Job | null = null;
  private _clock: number;
  private _buttons: Record<'halt' | 'model' | 'definition' | 'remove', ToolbarButton> | null =
    null;
  private _pagers: { logs: Pager<api.LogLine>; metrics: Pager<api.MetricRecord> } | null = null;
  private _jobChanged = new Signal<this, api.Job>(this);
  private _gone = new Signal<this, void>(this);
}

/** "(code C201)" for an FfDL error code; nothing for the normal ones ("0", "000"). */
function errorCode(code: string): string {
  return code && !/^0+$/.test(code) ? `(code ${code})` : '';
}

/** A job view in its main-area frame, with the toolbar. */
export function createJobWidget(jobId: string): MainAreaWidget<JobView> {
  const content = new JobView(jobId);
  const widget = new MainAreaWidget({ content });
  widget.id = `dlaas-job-${jobId}`;
  content.populateToolbar(widget);
  return widget;
}
