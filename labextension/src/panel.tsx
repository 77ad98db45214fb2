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
      <ul className="dlaas-job-list">
        {model.jobs.map(job => (
          <JobItem key={job.training_id} job={job} now={now} model={model} open={open} />
        ))}
      </ul>
    </div>
  );
}

function JobItem(props: {
  job: Job;
  now: number;
  model: JobsModel;
  open: (job: Job) => void;
}): JSX.Element {
  const { job, now, model, open } = props;
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
    <li className="dlaas-job" onDoubleClick={() => open(job)}>
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
    </li>
  );
}

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
