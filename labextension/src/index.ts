/**
 * dlaas-jupyter's JupyterLab front end: the jobs side panel, the job views,
 * and "Train this notebook" (the notebook toolbar button comes from
 * schema/plugin.json's `jupyter.lab.toolbars`).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  showDialog,
  WidgetTracker
} from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { jobsIcon, trainIcon } from './icons';
import { JobsModel } from './jobs';
import { createJobWidget, JobView } from './jobview';
import { JobsPanel, PANEL_ID } from './panel';
import { trainNotebook } from './train';

const PLUGIN_ID = 'dlaas-jupyter-labextension:plugin';

/** Command ids. */
export namespace CommandIDs {
  export const train = 'dlaas:train-notebook';
  export const openJob = 'dlaas:open-job';
  export const showJobs = 'dlaas:show-jobs';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Training jobs on a DLaaS Trainer: side panel, job views, "Train this notebook".',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const model = new JobsModel();
    const views = new WidgetTracker<MainAreaWidget<JobView>>({ namespace: 'dlaas-job' });

    app.commands.addCommand(CommandIDs.openJob, {
      label: 'Open Training Job',
      describedBy: {
        args: {
          type: 'object',
          properties: { id: { type: 'string', description: 'the training id' } },
          required: ['id']
        }
      },
      execute: args => {
        const id = String(args['id']);
        let widget = views.find(w => w.content.jobId === id);
        if (!widget) {
          widget = createJobWidget(id);
          const view = widget.content;
          view.jobChanged.connect((_, job) => model.upsert(job));
          // Deleted here: removeJob closes the view (below); found missing: it says so.
          view.gone.connect(() => model.removeJob(id));
          void views.add(widget);
          app.shell.add(widget, 'main');
        }
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    model.deleted.connect((_, id) => views.find(w => w.content.jobId === id)?.dispose());

    const panel = new JobsPanel({
      model,
      open: job => void app.commands.execute(CommandIDs.openJob, { id: job.training_id })
    });
    app.shell.add(panel, 'left', { rank: 600 });

    app.commands.addCommand(CommandIDs.showJobs, {
      label: 'Show Training Jobs',
      icon: jobsIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });

    app.commands.addCommand(CommandIDs.train, {
      label: 'Train this notebook',
      caption: 'Save this notebook and run it as a training job',
      icon: trainIcon,
      isEnabled: () => notebooks.currentWidget !== null,
      execute: async () => {
        const current = notebooks.currentWidget;
        if (!current) {
          return;
        }
        const submitted = await trainNotebook(current);
        if (!submitted) {
          return;
        }
        const id = submitted.training_id;
        app.shell.activateById(PANEL_ID);
        const open: Notification.IAction = {
          label: 'Open',
          callback: () => void app.commands.execute(CommandIDs.openJob, { id })
        };
        const message = `Training job ${submitted.name} (${id}) submitted`;
        if (submitted.notes.length) {
          const notes: Notification.IAction = {
            label: 'Packaging notes',
            callback: () => void showNotes(submitted)
          };
          Notification.warning(`${message}, with notes on the packaging`, {
            autoClose: false,
            actions: [open, notes]
          });
        } else {
          Notification.success(message, { autoClose: 5000, actions: [open] });
        }
        try {
          model.upsert(await api.getJob(id)); // shown before the next list arrives
        } catch {
          // The panel lists it with its next update.
        }
      }
    });

    palette?.addItem({ command: CommandIDs.train, category: 'Training Jobs' });
    palette?.addItem({ command: CommandIDs.showJobs, category: 'Training Jobs' });

    if (restorer) {
      restorer.add(panel, PANEL_ID);
      void restorer.restore(views, {
        command: CommandIDs.openJob,
        args: widget => ({ id: widget.content.jobId }),
        name: widget => widget.content.jobId
      });
    }
  }
};

/** What packaging changed or left out of the notebook (dropped magics, skipped cells...). */
async function showNotes(submitted: api.Submitted): Promise<void> {
  const list = document.createElement('ul');
  list.className = 'dlaas-notes';
  for (const note of submitted.notes) {
    const item = document.createElement('li');
    item.textContent = note;
    list.append(item);
  }
  const body = new Widget({ node: list });
  await showDialog({
    title: `Packaging notes: ${submitted.name}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}

export default plugin;
