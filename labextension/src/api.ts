/**
 * The server extension's REST and WebSocket API under `${baseUrl}dlaas/api/`,
 * typed as its serializer writes it (dlaas_jupyter/server_ext/serialize.py).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** FfDL's job states (grpc.trainer.v2 Status), by name. */
export type JobStatus =
  | 'NOT_STARTED'
  | 'QUEUED'
  | 'PENDING'
  | 'DEPLOY'
  | 'DOWNLOADING'
  | 'PROCESSING'
  | 'STORING'
  | 'COMPLETED'
  | 'FAILED'
  | 'HALTED';

export interface Job {
  training_id: string;
  user_id: string;
  name: string;
  description: string;
  framework: { name: string; version: string };
  command: string;
  resources: {
    cpus: number;
    gpus: number;
    memory: number;
    /** MB, MiB, GB or GiB */
    memory_unit: string;
    learners: number;
  };
  /** A status name; a number (as text) for one this protocol version does not know. */
  status: JobStatus | string;
  /** Whether the job has finished (COMPLETED, FAILED or HALTED): it never changes again. */
  terminal: boolean;
  status_message: string;
  error_code: string;
  /** Milliseconds since the epoch, or null when the step has not happened. */
  timestamps: {
    submission: number | null;
    download_start: number | null;
    process_start: number | null;
    store_start: number | null;
    completion: number | null;
  };
}

export interface Health {
  reachable: boolean;
  /** The Trainer's grpc:// or grpcs:// URL, or "embedded"; null when not configured. */
  trainer: string | null;
  /** The user_id the server sends to the Trainer. */
  user: string | null;
  /** Why the Trainer is not reachable (only then). */
  error?: string;
}

/** What POST jobs answers. */
export interface Submitted {
  training_id: string;
  name: string;
  /** What packaging the notebook changed or left out (dropped magics...). */
  notes: string[];
}

export interface LogLine {
  rindex: number;
  time: number;
  subid: string;
  line: string;
}

/**
 * A metric value as typed by the Trainer: INT and FLOAT as numbers (non-finite
 * ones as "NaN", "Infinity", "-Infinity"), STRING as text, JSONSTRING parsed.
 */
export type MetricValue = unknown;

export interface MetricRecord {
  group: string;
  rindex: number;
  time: number;
  subid: string;
  etimes: Record<string, MetricValue>;
  values: Record<string, MetricValue>;
}

/** The options of "train this notebook"; omitted ones take the server's defaults. */
export interface TrainOptions {
  name?: string;
  cpus?: number;
  gpus?: number;
  /** A number and MB, MiB, GB or GiB, e.g. "2GiB". */
  memory?: string;
  learners?: number;
  /** "name:version", e.g. "python:3.11". */
  framework?: string;
  metrics?: 'logger' | 'regex' | 'file' | 'tensorboard';
  /** "[GROUP:]REGEX" one-line metric extractors. */
  metric_regex?: string[];
}

/** A socket's report that the Trainer cannot be asked (the job socket then closes). */
export interface ErrorMessage {
  type: 'error';
  message: string;
}

/** Messages of the `jobs/events` socket: the whole list, newest first, whenever it changes. */
export type JobsMessage = { type: 'jobs'; jobs: Job[] } | ErrorMessage;

/**
 * Messages of the `jobs/{id}/events` socket: the log and metrics from the
 * start, then as they come, and `end` once the job has finished and all was sent.
 */
export type JobMessage =
  | { type: 'status'; job: Job }
  | { type: 'log'; lines: LogLine[] }
  | { type: 'metrics'; records: MetricRecord[] }
  | { type: 'end' }
  | ErrorMessage;

/** A page query (FfDL's rules): pos > 0 a line number, pos < 0 from the end, since in ms. */
export interface PageQuery {
  pos?: number;
  pagesize: number;
  since?: number;
}

/** A request the server answered with an error; `message` is its explanation. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const API_PATH = 'dlaas/api';
const settings = ServerConnection.makeSettings();

/** The HTTP URL of an API path, e.g. `jobs/abc/model`. */
function apiUrl(path: string): string {
  return URLExt.join(settings.baseUrl, API_PATH, path);
}

/** Open a WebSocket on an API path, authenticated the way JupyterLab's own sockets are. */
export function openSocket(path: string, query: Record<string, string> = {}): WebSocket {
  const params = new URLSearchParams(query);
  if (settings.appendToken && settings.token) {
    params.set('token', settings.token);
  }
  const search = params.toString();
  const url = URLExt.join(settings.wsUrl, API_PATH, path);
  return new WebSocket(search ? `${url}?${search}` : url);
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(apiUrl(path), init, settings);
  } catch (error) {
    throw new ApiError(0, `The Jupyter server cannot be reached: ${String(error)}`);
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): the status line explains it.
  }
  if (!response.ok) {
    const message = body?.message || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body as T;
}

function queryString(query: PageQuery): string {
  const given = Object.entries(query).filter(([, value]) => value !== undefined);
  return URLExt.objectToQueryString(Object.fromEntries(given));
}

/** A job's API path, e.g. `jobs/abc/events` for `jobPath('abc', '/events')`. */
export function jobPath(id: string, rest = ''): string {
  return `jobs/${encodeURIComponent(id)}${rest}`;
}

export function getHealth(): Promise<Health> {
  return request<Health>('health');
}

export async function listJobs(): Promise<Job[]> {
  return (await request<{ jobs: Job[] }>('jobs')).jobs;
}

export function getJob(id: string): Promise<Job> {
  return request<Job>(jobPath(id));
}

/** Halt a job; resolves to its status name (a finished job keeps its own). */
export async function haltJob(id: string): Promise<string> {
  return (await request<{ status: string }>(jobPath(id, '/halt'), { method: 'POST' })).status;
}

export async function deleteJob(id: string): Promise<void> {
  await request<unknown>(jobPath(id), { method: 'DELETE' });
}

/** Train the saved notebook at `path` (relative to the server's root). */
export function submitNotebook(path: string, options: TrainOptions): Promise<Submitted> {
  return request<Submitted>('jobs', {
    method: 'POST',
    body: JSON.stringify({ path, ...options })
  });
}

/** One page of a job's log lines (pos -1 with pagesize N: the last N lines). */
export async function getLogs(id: string, query: PageQuery): Promise<LogLine[]> {
  const path = jobPath(id, `/logs${queryString(query)}`);
  return (await request<{ lines: LogLine[] }>(path)).lines;
}

/** One page of a job's metric records. */
export async function getMetrics(id: string, query: PageQuery): Promise<MetricRecord[]> {
  const path = jobPath(id, `/metrics${queryString(query)}`);
  return (await request<{ records: MetricRecord[] }>(path)).records;
}

/** The URL of a job's zip download: its trained model or its model definition. */
export function downloadUrl(id: string, what: 'model' | 'definition'): string {
  return apiUrl(jobPath(id, `/${what}`));
}
