/**
 * "Train this notebook": save it, ask for the job's options, submit it.
 *
 * The options are those of the `%dlaas_train` magic; fields left empty take
 * the server's defaults (the notebook's name, python:<version>, the
 * Trainer's resource defaults). A form that does not validate, or that the
 * server refuses, is shown again with the reason and the values kept.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import * as api from './api';

const METRICS = ['', 'logger', 'regex', 'file', 'tensorboard'] as const;

/** The form's fields as typed, before validation. */
interface IFormValues {
  name: string;
  cpus: string;
  gpus: string;
  memory: string;
  learners: string;
  framework: string;
  metrics: string;
  metricRegex: string;
}

/** What was last submitted per notebook, to fill the form the next time. */
const lastValues = new Map<string, IFormValues>();

/**
 * Save the notebook, ask for options and submit it; resolves to what the
 * server answered, or null when the user cancelled or it failed (and was shown).
 */
export async function trainNotebook(panel: NotebookPanel): Promise<api.Submitted | null> {
  const path = panel.context.localPath; // relative to the server's root, without a drive
  try {
    await panel.context.save();
  } catch (error) {
    await showErrorMessage('The notebook could not be saved', String((error as Error).message));
    return null;
  }
  let values = lastValues.get(path) ?? defaults(path);
  let problem = '';
  for (;;) {
    const form = new TrainForm(values, problem);
    const result = await showDialog({
      title: `Train ${PathExt.basename(path)}`,
      body: form,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Train' })],
      focusNodeSelector: 'input[name="name"]'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    lastValues.set(path, values);
    try {
      return await api.submitNotebook(path, toOptions(values));
    } catch (error) {
      const message = (error as Error).message;
      const badOptions =
        error instanceof FormError || (error instanceof api.ApiError && error.status === 400);
      if (!badOptions) {
        await showErrorMessage('Training not started', message);
        return null;
      }
      problem = message; // let the user correct the options
    }
  }
}

function defaults(path: string): IFormValues {
  return {
    name: PathExt.basename(path, PathExt.extname(path)),
    cpus: '',
    gpus: '',
    memory: '',
    learners: '',
    framework: '',
    metrics: '',
    metricRegex: ''
  };
}

/** The request's options from the form; throws a FormError naming a field that is wrong. */
function toOptions(values: IFormValues): api.TrainOptions {
  const options: api.TrainOptions = {};
  if (values.name.trim()) {
    options.name = values.name.trim();
  }
  const number = (field: string, text: string, whole: boolean, least: number) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < least || (whole && !Number.isInteger(n))) {
      const kind = whole ? 'a whole number' : 'a number';
      throw new FormError(`${field}: “${text}” is not ${kind} of at least ${least}`);
    }
    return n;
  };
  if (values.cpus.trim()) {
    options.cpus = number('CPUs', values.cpus.trim(), false, 0);
  }
  if (values.gpus.trim()) {
    options.gpus = number('GPUs', values.gpus.trim(), false, 0);
  }
  if (values.learners.trim()) {
    options.learners = number('Learners', values.learners.trim(), true, 1);
  }
  if (values.memory.trim()) {
    options.memory = values.memory.replace(/\s+/g, '');
  }
  if (values.framework.trim()) {
    options.framework = values.framework.trim();
  }
  const regexes = values.metricRegex
    .split('\n')
    .map(line => line.trim())
    .filter(line => line);
  if (values.metrics) {
    options.metrics = values.metrics as api.TrainOptions['metrics'];
  }
  if (regexes.length) {
    options.metric_regex = regexes;
  }
  return options;
}

/** A form field that cannot be used; the message names it. */
class FormError extends Error {}

/** The dialog's body; `getValue` is what the dialog resolves to: the fields as typed. */
class TrainForm extends Widget implements Dialog.IBodyWidget<IFormValues> {
  constructor(values: IFormValues, problem: string) {
    super();
    this.addClass('dlaas-train-form');
    if (problem) {
      const error = document.createElement('div');
      error.className = 'dlaas-banner';
      error.textContent = problem;
      this.node.append(error);
    }
    this._field('name', 'Name', values.name, 'the job’s name');
    this._field('cpus', 'CPUs', values.cpus, 'per learner (Trainer default)');
    this._field('gpus', 'GPUs', values.gpus, 'per learner (Trainer default)');
    this._field('memory', 'Memory', values.memory, 'per learner, e.g. 2GiB');
    this._field('learners', 'Learners', values.learners, '1');
    this._field('framework', 'Framework', values.framework, 'name:version (default: this Python)');
    const metrics = document.createElement('select');
    metrics.name = 'metrics';
    for (const kind of METRICS) {
      metrics.add(new Option(kind || 'none (or from the regexes below)', kind));
    }
    metrics.value = values.metrics;
    this._row('Metrics', metrics);
    const regex = document.createElement('textarea');
    regex.name = 'metricRegex';
    regex.rows = 3;
    regex.placeholder =
      'one per line: [GROUP:]REGEX, e.g.\ntrain:Iteration %{INT:iteration}, loss = %{FLOAT:loss}';
    regex.value = values.metricRegex;
    this._row('Metric regexes', regex);
  }

  getValue(): IFormValues {
    const read = (name: string) =>
      (this.node.querySelector(`[name="${name}"]`) as HTMLInputElement | null)?.value ?? '';
    return {
      name: read('name'),
      cpus: read('cpus'),
      gpus: read('gpus'),
      memory: read('memory'),
      learners: read('learners'),
      framework: read('framework'),
      metrics: read('metrics'),
      metricRegex: read('metricRegex')
    };
  }

  private _field(name: string, label: string, value: string, placeholder: string): void {
    const input = document.createElement('input');
    input.name = name;
    input.value = value;
    input.placeholder = placeholder;
    this._row(label, input);
  }

  private _row(label: string, control: HTMLElement): void {
    const row = document.createElement('label');
    row.className = 'dlaas-form-row';
    const text = document.createElement('span');
    text.textContent = label;
    control.classList.add('jp-mod-styled');
    row.append(text, control);
    this.node.append(row);
  }
}
