/** The extension's icons (paths from Material Design Icons, Apache-2.0), themed via jp-icon3. */
import { LabIcon } from '@jupyterlab/ui-components';

function svg(path: string): string {
  return (
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    `<path class="jp-icon3" fill="#616161" d="${path}"/></svg>`
  );
}

/** The side panel's tab: a rising curve. */
export const jobsIcon = new LabIcon({
  name: 'dlaas:jobs',
  svgstr: svg('M3.5 18.49l6-6.01 4 4L22 6.92l-1.41-1.41-7.09 7.97-4-4L2 16.99z')
});

/** "Train this notebook": a cloud with an upward arrow. */
export const trainIcon = new LabIcon({
  name: 'dlaas:train',
  svgstr: svg(
    'M19.35 10.04C18.67 6.59 15.64 4 12 4 9.11 4 6.6 5.64 5.35 8.04 2.34 8.36 0 10.91 0 14' +
      'c0 3.31 2.69 6 6 6h13c2.76 0 5-2.24 5-5 0-2.64-2.05-4.78-4.65-4.96z' +
      'M14 13v4h-4v-4H7l5-5 5 5h-3z'
  )
});
