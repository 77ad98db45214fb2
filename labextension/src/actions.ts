/** The per-job actions shared by the side panel and the job view; errors are shown, not thrown. */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import * as api from './api';
import { saveUrl } from './format';

/** Halt a running job; resolves to its new state, or null when the halt failed. */
export async function halt(job: api.Job): Promise<api.Job | null> {
  try {
    await api.haltJob(job.training_id);
    return await api.getJob(job.training_id);
  } catch (error) {
    await showErrorMessage(`Halting ${job.name} failed`, String((error as Error).message));
    return null;
  }
}

/** Delete a job after the user confirms; resolves to whether it was deleted. */
export async function remove(job: api.Job): Promise<boolean> {
  const answer = await showDialog({
    title: 'Delete training job',
    body:
      `Delete ${job.name} (${job.training_id})? Its logs, metrics, model definition ` +
      'and trained model are removed for good.',
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
  });
  if (!answer.button.accept) {
    return false;
  }
  try {
    await api.deleteJob(job.training_id);
    return true;
  } catch (error) {
    await showErrorMessage(`Deleting ${job.name} failed`, String((error as Error).message));
    return false;
  }
}

/** Save a job's trained model or model definition zip (the server names the file). */
export function download(job: api.Job, what: 'model' | 'definition'): void {
  saveUrl(api.downloadUrl(job.training_id, what));
}
