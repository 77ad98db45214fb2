/**
 * Live metric charts: one uPlot chart (canvas) per value key, one line per
 * record group (train, test, ...). Records are stored whole; charts are
 * redrawn at most a few times a second, and uPlot draws each pixel column
 * once however many points fall in it, so long jobs stay smooth.
 */
import { Widget } from '@lumino/widgets';
import uPlot from 'uplot';

import { MetricRecord, MetricValue } from './api';

/** The record's etimes tried for the x axis, in this order (as the notebook widget does). */
const X_ETIMES = ['iteration', 'epoch', 'step', 'tick'];
const TIME_AXIS = 'time (s)';
const CHART_HEIGHT = 200;
/** Least time between two redraws of the charts (ms). */
const REDRAW_MS = 250;
/** bqplot's CATEGORY10, so groups have the colours the notebook widget gives them. */
const COLOURS = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf'
];

interface ICurve {
  xs: number[];
  ys: number[];
}

/** One value key's chart. */
interface IChart {
  element: HTMLDivElement;
  xLabel: string;
  curves: Map<string, ICurve>;
  plot: uPlot | null;
  /** Whether the user zoomed in (then updates keep the zoom). */
  zoomed: boolean;
}

export class MetricCharts extends Widget {
  constructor() {
    super();
    this.addClass('dlaas-charts');
    const header = document.createElement('div');
    header.className = 'dlaas-section-header';
    header.innerHTML =
      '<span class="dlaas-section-title">Metrics</span>' +
      '<span class="dlaas-charts-hint">drag to zoom, double-click to reset</span>';
    this._grid.className = 'dlaas-charts-grid';
    this.node.append(header, this._grid);
    this.hide(); // shown with the first plottable record
    this._resizer = new ResizeObserver(entries => {
      for (const entry of entries) {
        const chart = [...this._charts.values()].find(c => c.element === entry.target);
        if (chart?.plot && chart.element.clientWidth > 0) {
          chart.plot.setSize({ width: chart.element.clientWidth, height: CHART_HEIGHT });
        } else if (chart) {
          this._dirty.add(chart);
          this._schedule();
        }
      }
    });
  }

  /** Store records; values that are not numbers are skipped. */
  add(records: readonly MetricRecord[]): void {
    for (const record of records) {
      this._firstTime ??= record.time;
      const [xLabel, x] = this._xOf(record);
      for (const [key, value] of Object.entries(record.values)) {
        const y = toNumber(value);
        if (y === null) {
          continue;
        }
        const chart = this._charts.get(key) ?? this._newChart(key, xLabel);
        let curve = chart.curves.get(record.group);
        if (!curve) {
          curve = { xs: [], ys: [] };
          chart.curves.set(record.group, curve);
        }
        insert(curve, x, y);
        this._dirty.add(chart);
      }
    }
    this._schedule();
  }

  /** Forget every record (before they are read again from the start). */
  clear(): void {
    for (const chart of this._charts.values()) {
      chart.plot?.destroy();
      this._resizer.unobserve(chart.element);
    }
    this._charts.clear();
    this._dirty.clear();
    this._grid.textContent = '';
    this._firstTime = null;
    this.hide();
  }

  dispose(): void {
    this.clear();
    this._resizer.disconnect();
    window.clearTimeout(this._timer);
    super.dispose();
  }

  private _xOf(record: MetricRecord): [string, number] {
    for (const name of X_ETIMES) {
      const x = name in record.etimes ? toNumber(record.etimes[name]) : null;
      if (x !== null) {
        return [name, x];
      }
    }
    return [TIME_AXIS, (record.time - (this._firstTime ?? record.time)) / 1000];
  }

  private _newChart(key: string, xLabel: string): IChart {
    const element = document.createElement('div');
    element.className = 'dlaas-chart';
    element.dataset.key = key;
    this._grid.appendChild(element);
    const chart: IChart = { element, xLabel, curves: new Map(), plot: null, zoomed: false };
    this._charts.set(key, chart);
    this._resizer.observe(element);
    this.show();
    return chart;
  }

  private _schedule(): void {
    if (this._timer || this._dirty.size === 0) {
      return;
    }
    const wait = Math.max(0, this._lastDraw + REDRAW_MS - Date.now());
    this._timer = window.setTimeout(() => {
      requestAnimationFrame(() => {
        this._timer = 0;
        this._lastDraw = Date.now();
        const dirty = [...this._dirty];
        this._dirty.clear();
        dirty.forEach(chart => this._draw(chart));
      });
    }, wait);
  }

  private _draw(chart: IChart): void {
    const width = chart.element.clientWidth;
    if (width === 0) {
      this._dirty.add(chart); // hidden: drawn when it gets a size
      return;
    }
    const groups = [...chart.curves.keys()];
    const curves = [...chart.curves.values()];
    const data: uPlot.AlignedData =
      curves.length === 1
        ? [curves[0].xs, curves[0].ys]
        : uPlot.join(curves.map(c => [c.xs, c.ys] as uPlot.AlignedData));
    if (chart.plot && chart.plot.series.length === groups.length + 1) {
      chart.plot.setData(data, !chart.zoomed);
      return;
    }
    chart.plot?.destroy();
    chart.element.textContent = '';
    chart.zoomed = false;
    chart.plot = new uPlot(this._options(chart, groups, width), data, chart.element);
    chart.plot.over.addEventListener('dblclick', () => (chart.zoomed = false));
  }

  private _options(chart: IChart, groups: string[], width: number): uPlot.Options {
    const style = getComputedStyle(this.node);
    const text = style.getPropertyValue('--jp-ui-font-color1').trim() || '#333';
    const grid = style.getPropertyValue('--jp-border-color2').trim() || '#ddd';
    const axis = (label: string): uPlot.Axis => ({
      label,
      stroke: text,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 }
    });
    return {
      title: chart.element.dataset.key,
      width,
      height: CHART_HEIGHT,
      scales: { x: { time: false } },
      axes: [axis(chart.xLabel), axis('')],
      series: [
        { label: chart.xLabel },
        ...groups.map(group => ({
          label: group,
          stroke: this._colour(group),
          width: 1.5,
          spanGaps: true
        }))
      ],
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setSelect: [plot => (chart.zoomed ||= plot.select.width > 0)]
      }
    };
  }

  private _colour(group: string): string {
    let colour = this._colours.get(group);
    if (!colour) {
      colour = COLOURS[this._colours.size % COLOURS.length];
      this._colours.set(group, colour);
    }
    return colour;
  }

  private _grid = document.createElement('div');
  private _charts = new Map<string, IChart>();
  private _dirty = new Set<IChart>();
  private _colours = new Map<string, string>();
  private _firstTime: number | null = null;
  private _resizer: ResizeObserver;
  private _timer = 0;
  private _lastDraw = 0;
}

/**
 * Add a point keeping x sorted, as uPlot needs: records come nearly in order
 * (several learners interleave), so most points go at the end.
 */
function insert(curve: ICurve, x: number, y: number): void {
  const { xs, ys } = curve;
  if (xs.length === 0 || xs[xs.length - 1] <= x) {
    xs.push(x);
    ys.push(y);
    return;
  }
  let low = 0;
  let high = xs.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (xs[middle] <= x) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  xs.splice(low, 0, x);
  ys.splice(low, 0, y);
}

/** A metric value as a finite number, or null (text or JSON that is not one, NaN, infinities). */
function toNumber(value: MetricValue): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && value.trim() !== ''
        ? Number(value)
        : NaN;
  return Number.isFinite(n) ? n : null;
}
