/** How jobs are shown: times, durations, status chips, learner-prefixed log lines. */
import { Time } from '@jupyterlab/coreutils';

import { Job, LogLine } from './api';

/** A date in ms as the user's locale writes it, or an empty string. */
export function formatTime(ms: number | null): string {
  return ms === null ? '' : Time.format(new Date(ms));
}

/** "3 minutes ago" for a date in ms, or an empty string. */
export function formatAgo(ms: number | null): string {
  return ms === null ? '' : Time.formatHuman(new Date(ms));
}

/**
 * "1h 02m", "3m 04s", "12s": how long a job has run, from its dispatch (the
 * download of its code and data) to its completion, or to `now` while it runs.
 */
export function formatDuration(job: Job, now: number): string {
  const { download_start, process_start, completion } = job.timestamps;
  const start = download_start ?? process_start;
  if (start === null) {
    return '';
  }
  const end = completion ?? (job.terminal ? start : now);
  const seconds = Math.max(0, Math.round((end - start) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (h > 0) {
    return `${h}h ${two(m)}m`;
  }
  return m > 0 ? `${m}m ${two(s)}s` : `${s}s`;
}

/** Whether a job may still change (and be halted). */
export function isActive(job: Job): boolean {
  return !job.terminal;
}

/** "python:3.11" */
export function formatFramework(job: Job): string {
  const { name, version } = job.framework;
  return version ? `${name}:${version}` : name;
}

/** "2 CPUs, 1 GPU, 4 GiB, 2 learners": what the job asked for (zeros left out). */
export function formatResources(job: Job): string {
  const { cpus, gpus, memory, memory_unit, learners } = job.resources;
  const count = (n: number, what: string) => (n ? `${n} ${what}${n === 1 ? '' : 's'}` : '');
  return [
    count(cpus, 'CPU'),
    count(gpus, 'GPU'),
    memory ? `${memory} ${memory_unit}` : '',
    count(learners, 'learner')
  ]
    .filter(part => part)
    .join(', ');
}

/** A status chip: a span whose class picks its colour (style/base.css). */
export function statusClass(status: string): string {
  return `dlaas-status dlaas-status-${status.toLowerCase()}`;
}

/** The learner count a job asked for (1 when not given). */
export function learnerCount(job: Job): number {
  return Math.max(1, job.resources.learners);
}

/** A log line as shown: prefixed with its learner when the job has several. */
export function lineText(line: LogLine, learners: number): string {
  return learners > 1 && line.subid ? `[${line.subid}] ${line.line}` : line.line;
}

/**
 * Have the browser save a URL under `name`, or the name the server gives it:
 * a streamed download, so no size limit and no copy in memory.
 */
export function saveUrl(url: string, name = ''): void {
  const anchor = document.createElement('a');
  anchor.href = url;
  anchor.download = name;
  anchor.style.display = 'none';
  document.body.appendChild(anchor);
  anchor.click();
  anchor.remove();
}
