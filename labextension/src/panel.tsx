/** The left side panel (`dlaas-jobs`): the user's jobs, their actions, and the connection state. */
import {
  codeIcon,
  deleteIcon,
  downloadIcon,
  LabIcon,
  launchIcon,
  ReactWidget,
  refreshIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { useVirtualizer } from '@tanstack/react-virtual';
import * as React from 'react';

import * as actions from './actions';
import { Job } from './api';
import {
  formatAgo,
  formatDuration,
  formatFramework,
  formatTime,
  isActive,
  statusClass
} from './format';
import { jobsIcon } from './icons';
import { JobsModel } from './jobs';

export const PANEL_ID = 'dlaas-jobs';

/**
 * A row's height in px until it is measured: three lines, the last with the
 * action buttons, with JupyterLab's default fonts (style/base.css).
 */
const ROW_HEIGHT = 72;
/** Rows rendered beyond each edge of the visible ones, so a fast scroll shows no blank. */
const OVERSCAN = 5;

export interface IJobsPanelOptions {
  model: JobsModel;
  /** Open a job's view in the main area. */
  open: (job: Job) => void;
}

export class JobsPanel extends ReactWidget {
  constructor(private readonly _options: IJobsPanelOptions) {
    super();
    this.id = PANEL_ID;
    this.addClass('dlaas-jobs-panel');
    this.title.icon = jobsIcon;
    this.title.caption = 'Training jobs';
    _options.model.changed.connect(this.update, this);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._options.model.visible = true;
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._options.model.visible = false;
  }

  protected render(): JSX.Element {
    return <JobList model={this._options.model} open={this._options.open} />;
  }
}

function JobList({ model, open }: IJobsPanelOptions): JSX.Element {
  const now = useNow(model.jobs.some(isActive));
  const health = model.health;
  return (
    <div className="dlaas-jobs">
      <div className="dlaas-jobs-header">
        <span className="dlaas-jobs-title">Training jobs</span>
        <span
          className={`dlaas-live ${model.live ? 'dlaas-live-on' : ''}`}
          title={model.live ? 'Updated live' : 'Updated by polling'}
        >
          {model.live ? 'live' : 'polling'}
        </span>
        <IconButton icon={refreshIcon} title="Refresh" onClick={() => void model.refresh()} />
      </div>
      {health?.trainer && (
        <div className="dlaas-jobs-where" title={`Trainer: ${health.trainer}`}>
          {health.user} on {health.trainer === 'embedded' ? 'the embedded Trainer' : health.trainer}
        </div>
      )}
      {model.error && (
        <div className="dlaas-banner" role="alert">
          <span>{model.error}</span>
          {!model.live && (
            <button className="jp-mod-styled" onClick={() => void model.refresh()}>
              Retry now
            </button>
          )}
        </div>
      )}
      {model.jobs.length === 0 && !model.error && (
        <div className="dlaas-jobs-empty">
          No training jobs yet. Open a notebook and use “Train this notebook”.
        </div>
      )}
      <VirtualJobList jobs={model.jobs} now={now} model={model} open={open} />
    </div>
  );
}

/**
 * The jobs, windowed: only the rows in view (plus a few either side) are in
 * the DOM, so a thousand jobs render and scroll as fast as ten. The list is
 * its own scroll container, below the header, which stays put.
 */
function VirtualJobList(props: {
  jobs: readonly Job[];
  now: number;
  model: JobsModel;
  open: (job: Job) => void;
}): JSX.Element {
  const { jobs, now, model, open } = props;
  const scroller = React.useRef<HTMLDivElement>(null);
  // Stable while the jobs are, so scrolling does not recompute every row's offset.
  const getItemKey = React.useCallback((index: number) => jobs[index].training_id, [jobs]);
  const virtualizer = useVirtualizer({
    count: jobs.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    getItemKey,
    overscan: OVERSCAN
  });
  return (
    <div className="dlaas-job-list" role="list" aria-label="Training jobs" ref={scroller}>
      <div
        className="dlaas-job-list-sizer"
        role="none"
        style={{ height: virtualizer.getTotalSize() }}
      >
        {virtualizer.getVirtualItems().map(row => (
          <JobItem
            key={row.key}
            index={row.index}
            count={jobs.length}
            start={row.start}
            measure={virtualizer.measureElement}
            job={jobs[row.index]}
            now={now}
            model={model}
            open={open}
          />
        ))}
      </div>
    </div>
  );
}

/** One job's row; memoised, so scrolling renders only the rows that come into view. */
const JobItem = React.memo(function JobItem(props: {
  index: number;
  count: number;
  /** The row's offset from the top of the list, in px. */
  start: number;
  /** Reports the row's rendered height to the virtualizer. */
  measure: (element: HTMLElement | null) => void;
  job: Job;
  now: number;
  model: JobsModel;
  open: (job: Job) => void;
}): JSX.Element {
  const { index, count, start, measure, job, now, model, open } = props;
  const duration = formatDuration(job, now);
  const halt = async () => {
    const halted = await actions.halt(job);
    if (halted) {
      model.upsert(halted);
    }
  };
  const remove = async () => {
    if (await actions.remove(job)) {
      model.removeJob(job.training_id);
    }
  };
  return (
    <div
      className="dlaas-job"
      role="listitem"
      aria-setsize={count}
      aria-posinset={index + 1}
      data-index={index}
      ref={measure}
      style={{ transform: `translateY(${start}px)` }}
      onDoubleClick={() => open(job)}
    >
      <div className="dlaas-job-line">
        <a className="dlaas-job-name" title={`Open ${job.name}`} onClick={() => open(job)}>
          {job.name}
        </a>
        <span className={statusClass(job.status)} title={job.status_message || job.status}>
          {job.status}
        </span>
      </div>
      <div className="dlaas-job-line dlaas-job-meta">
        <span className="dlaas-job-id" title={formatFramework(job)}>
          {job.training_id}
        </span>
        {duration && <span>{`${isActive(job) ? 'running' : 'ran'} ${duration}`}</span>}
      </div>
      <div className="dlaas-job-line dlaas-job-meta">
        <span title={`Submitted ${formatTime(job.timestamps.submission)}`}>
          {formatAgo(job.timestamps.submission)}
        </span>
        <span className="dlaas-job-actions">
          <IconButton icon={launchIcon} title="Open" onClick={() => open(job)} />
          {isActive(job) && <IconButton icon={stopIcon} title="Halt" onClick={halt} />}
          <IconButton
            icon={downloadIcon}
            title="Download the trained model"
            disabled={isActive(job)}
            onClick={() => actions.download(job, 'model')}
          />
          <IconButton
            icon={codeIcon}
            title="Download the model definition"
            onClick={() => actions.download(job, 'definition')}
          />
          <IconButton icon={deleteIcon} title="Delete" onClick={remove} />
        </span>
      </div>
    </div>
  );
});

function IconButton(props: {
  icon: LabIcon;
  title: string;
  onClick: () => void;
  disabled?: boolean;
}): JSX.Element {
  return (
    <button
      className="dlaas-icon-button"
      title={props.title}
      aria-label={props.title}
      disabled={props.disabled}
      onClick={event => {
        event.stopPropagation();
        props.onClick();
      }}
    >
      <props.icon.react tag="span" />
    </button>
  );
}

/** The current time, ticking each second while `ticking` (so running durations advance). */
function useNow(ticking: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!ticking) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [ticking]);
  return now;
}
