/**
 * The user's jobs and the connection state behind the side panel.
 *
 * Live through the `jobs/events` socket; while it is closed, a Poll checks
 * health, lists the jobs and reopens the socket, backing off while the
 * Trainer is unreachable, and standing by while the panel or the page is hidden.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import * as api from './api';

/** Poll timing (ms): every 5 s while the socket is down, backing off to 1 min on failures. */
const FREQUENCY = { interval: 5000, backoff: true, max: 60_000 };

export class JobsModel implements IDisposable {
  constructor() {
    this._poll = new Poll({
      name: 'dlaas:jobs',
      factory: () => this._tick(),
      frequency: FREQUENCY,
      standby: () => !this._visible || this._socketOpen || 'when-hidden',
      auto: false
    });
  }

  /** The jobs, newest first. */
  get jobs(): readonly api.Job[] {
    return this._jobs;
  }

  /** The last health answer; null before the first one. */
  get health(): api.Health | null {
    return this._health;
  }

  /** Why the last refresh failed (the server or the Trainer unreachable), else null. */
  get error(): string | null {
    return this._error;
  }

  /** Whether updates arrive live over the socket (else by polling). */
  get live(): boolean {
    return this._socketOpen;
  }

  /** Emitted when anything above changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted with the id of a job deleted from here (its open view closes). */
  get deleted(): ISignal<this, string> {
    return this._deleted;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Start or stop the updates, e.g. as the panel is shown or hidden. */
  set visible(visible: boolean) {
    this._visible = visible;
    if (visible) {
      void this._poll.start();
      void this._poll.refresh();
    } else {
      this._closeSocket();
    }
  }

  /** Check again now, e.g. from the banner's retry button. */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /** Show a job's new state at once (after a submit or a halt), before the server reports it. */
  upsert(job: api.Job): void {
    const others = this._jobs.filter(j => j.training_id !== job.training_id);
    this._setJobs([job, ...others]);
  }

  /** Drop a deleted job from the list at once. */
  removeJob(id: string): void {
    this._setJobs(this._jobs.filter(j => j.training_id !== id));
    this._deleted.emit(id);
  }

  dispose(): void {
    this._closeSocket();
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _tick(): Promise<void> {
    try {
      this._health = await api.getHealth();
    } catch (error) {
      const missing = error instanceof api.ApiError && error.status === 404;
      this._fail(
        missing
          ? 'The dlaas server extension is not enabled on this Jupyter server.'
          : String((error as Error).message)
      );
    }
    const health = this._health!;
    if (!health.reachable) {
      this._fail(health.error ?? `The Trainer (${health.trainer}) is unreachable.`);
    }
    try {
      this._setJobs(await api.listJobs(), null);
    } catch (error) {
      this._fail(String((error as Error).message));
    }
    this._openSocket();
  }

  /** Record a failure and reject the tick, so the poll backs off. */
  private _fail(message: string): never {
    this._error = message;
    this._changed.emit();
    throw new Error(message);
  }

  private _setJobs(jobs: api.Job[], error = this._error): void {
    const submitted = (job: api.Job) => job.timestamps.submission ?? 0;
    this._jobs = [...jobs].sort((a, b) => submitted(b) - submitted(a));
    this._error = error;
    this._changed.emit();
  }

  private _openSocket(): void {
    if (this._socket || !this._visible) {
      return;
    }
    const socket = (this._socket = api.openSocket('jobs/events'));
    socket.onopen = () => {
      this._socketOpen = true;
      this._changed.emit();
    };
    socket.onmessage = event => {
      const message = JSON.parse(event.data) as api.JobsMessage;
      if (message.type === 'jobs') {
        this._setJobs(message.jobs, null);
      } else {
        // The server keeps asking the Trainer and sends the list when it answers again.
        this._error = message.message;
        this._changed.emit();
      }
    };
    socket.onclose = () => {
      if (this._socket !== socket) {
        return;
      }
      const wasOpen = this._socketOpen;
      this._socket = null;
      this._socketOpen = false;
      this._changed.emit();
      if (wasOpen && this._visible) {
        // Fall back to polling at once (the server may have gone, or the Trainer).
        void this._poll.refresh();
      }
    };
  }

  private _closeSocket(): void {
    const socket = this._socket;
    this._socket = null;
    this._socketOpen = false;
    socket?.close();
  }

  private _poll: Poll;
  private _jobs: api.Job[] = [];
  private _health: api.Health | null = null;
  private _error: string | null = null;
  private _visible = false;
  private _socket: WebSocket | null = null;
  private _socketOpen = false;
  private _changed = new Signal<this, void>(this);
  private _deleted = new Signal<this, string>(this);
}
