/**
 * The chart of `shardcast forecast show`: recent history and the latest forecast with its 80% and
 * 95% intervals, as text for the terminal or as an SVG picture (written by hand; cli/png.ts draws it as a PNG).
 */

export interface ChartData {
  title: string;
  history: Array<{ ts: Date; value: number | null }>;
  forecast: Array<{ ts: Date; yhat: number; lo80: number; hi80: number; lo95: number; hi95: number }>;
}

function range(data: ChartData): { lo: number; hi: number } {
  const values = [...data.history.flatMap((p) => (p.value === null ? [] : [p.value])), ...data.forecast.flatMap((f) => [f.lo95, f.hi95])];
  if (values.length === 0) return { lo: 0, hi: 1 };
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return hi > lo ? { lo, hi } : { lo: lo - 1, hi: hi + 1 };
}

const label = (v: number) => (Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));
const hhmm = (d: Date) => d.toISOString().slice(11, 16);

/**
 * Text chart, one column per 5-minute bucket (the oldest history dropped to fit `width`):
 * `*` history, `o` forecast, `|` its 80% interval, `:` the rest of its 95% interval.
 */
export function terminalChart(data: ChartData, width = 72, height = 16): string {
  const history = data.history.slice(-Math.max(0, width - data.forecast.length));
  const { lo, hi } = range({ ...data, history });
  const row = (v: number) => Math.round(((hi - v) / (hi - lo)) * (height - 1));
  const columns = history.length + data.forecast.length;
  const grid = Array.from({ length: height }, () => new Array<string>(columns).fill(' '));
  history.forEach((p, x) => {
    if (p.value !== null) grid[row(p.value)]![x] = '*';
  });
  data.forecast.forEach((f, i) => {
    const x = history.length + i;
    for (let y = row(f.hi95); y <= row(f.lo95); y++) grid[y]![x] = ':';
    for (let y = row(f.hi80); y <= row(f.lo80); y++) grid[y]![x] = '|';
    grid[row(f.yhat)]![x] = 'o';
  });
  const axis = Math.max(label(hi).length, label(lo).length);
  const lines = grid.map((cells, y) => `${(y === 0 ? label(hi) : y === height - 1 ? label(lo) : '').padStart(axis)} ┤${cells.join('')}`);
  const first = history[0]?.ts ?? data.forecast[0]?.ts;
  const last = data.forecast.at(-1)?.ts ?? history.at(-1)?.ts;
  const times = first && last ? `${hhmm(first)}${' '.repeat(Math.max(1, columns - 10))}${hhmm(last)}` : '';
  return [data.title, ...lines, `${' '.repeat(axis)} └${'─'.repeat(columns)}`, `${' '.repeat(axis + 2)}${times} UTC`, '* history   o forecast   | 80% interval   : 95% interval'].join('\n');
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The same chart as an SVG document: history line, forecast dashed, the intervals as bands. */
export function svgChart(data: ChartData, width = 800, height = 360): string {
  const pad = { left: 64, right: 16, top: 36, bottom: 40 };
  const times = [...data.history.map((p) => p.ts.getTime()), ...data.forecast.map((f) => f.ts.getTime())];
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const { lo, hi } = range(data);
  const x = (t: number) => (pad.left + ((t - t0) / Math.max(1, t1 - t0)) * (width - pad.left - pad.right)).toFixed(1);
  const y = (v: number) => (pad.top + ((hi - v) / (hi - lo)) * (height - pad.top - pad.bottom)).toFixed(1);
  const band = (upper: 'hi80' | 'hi95', lower: 'lo80' | 'lo95') =>
    [...data.forecast.map((f) => `${x(f.ts.getTime())},${y(f[upper])}`), ...[...data.forecast].reverse().map((f) => `${x(f.ts.getTime())},${y(f[lower])}`)].join(' ');
  // History with gaps: one polyline per run of values.
  const runs: string[][] = [[]];
  for (const p of data.history) {
    if (p.value === null) runs.push([]);
    else runs.at(-1)!.push(`${x(p.ts.getTime())},${y(p.value)}`);
  }
  const ticks = Array.from({ length: 5 }, (_, i) => lo + ((hi - lo) * i) / 4);
  const timeTicks = Array.from({ length: 5 }, (_, i) => t0 + ((t1 - t0) * i) / 4);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${pad.left}" y="20" font-size="14">${escape(data.title)}</text>`,
    ...ticks.map((v) => `<line x1="${pad.left}" x2="${width - pad.right}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${pad.left - 6}" y="${y(v)}" text-anchor="end" dominant-baseline="middle">${label(v)}</text>`),
    ...timeTicks.map((t) => `<text x="${x(t)}" y="${height - pad.bottom + 16}" text-anchor="middle">${hhmm(new Date(t))}</text>`),
    `<text x="${width - pad.right}" y="${height - 6}" text-anchor="end">UTC</text>`,
    data.forecast.length > 0 ? `<polygon points="${band('hi95', 'lo95')}" fill="#4a7bd0" fill-opacity="0.18"/>` : '',
    data.forecast.length > 0 ? `<polygon points="${band('hi80', 'lo80')}" fill="#4a7bd0" fill-opacity="0.35"/>` : '',
    ...runs.filter((r) => r.length > 0).map((r) => `<polyline points="${r.join(' ')}" fill="none" stroke="#222" stroke-width="1.5"/>`),
    data.forecast.length > 0 ? `<polyline points="${data.forecast.map((f) => `${x(f.ts.getTime())},${y(f.yhat)}`).join(' ')}" fill="none" stroke="#1f4fa0" stroke-width="2" stroke-dasharray="5 3"/>` : '',
    // Under the plot, not beside the title: a title with its forecast's model runs past the middle.
    `<text x="${pad.left}" y="${height - 6}">history — forecast - - 80% / 95% intervals</text>`,
    '</svg>',
    '',
  ]
    .filter(Boolean)
    .join('\n');
}
