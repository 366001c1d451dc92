import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { svgChart, type ChartData } from '../../../cli/chart.js';
import { svgToPng } from '../../../cli/png.js';

const t0 = Date.UTC(2030, 0, 1, 12);
const data: ChartData = {
  title: 'table:orders:inserts: forecast issued 2030-01-01T14:00:00.000Z by ensemble',
  history: Array.from({ length: 24 }, (_, i) => ({ ts: new Date(t0 + i * 300_000), value: 100 + i })),
  forecast: Array.from({ length: 12 }, (_, i) => ({ ts: new Date(t0 + (24 + i) * 300_000), yhat: 124 + i, lo80: 120 + i, hi80: 128 + i, lo95: 110 + i, hi95: 138 + i })),
};

type Pixels = { width: number; data: Buffer };
const pixel = (png: Pixels, x: number, y: number) => [...png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3)] as [number, number, number];
/** The 80% band: #4a7bd0 at 35% over the 95% band (18%) over white. */
const over = (c: number[], alpha: number, under: number[]) => c.map((v, i) => Math.round(v * alpha + under[i]! * (1 - alpha)));
const BAND95 = over([0x4a, 0x7b, 0xd0], 0.18, [255, 255, 255]);
const BAND80 = over([0x4a, 0x7b, 0xd0], 0.35, BAND95);
const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]!) <= 3);

function count(png: Pixels, box: { x0: number; x1: number; y0: number; y1: number }, test: (rgb: [number, number, number]) => boolean): number {
  let n = 0;
  for (let y = box.y0; y < box.y1; y++) for (let x = box.x0; x < box.x1; x++) if (test(pixel(png, x, y))) n++;
  return n;
}
const dark = ([r, g, b]: number[]) => r! < 100 && g! < 100 && b! < 100;
const TITLE = { x0: 60, x1: 500, y0: 4, y1: 26 };

describe('forecast chart as PNG', () => {
  it('draws the SVG chart with its intervals and its labels', async () => {
    const picture = await svgToPng(svgChart(data));
    expect(picture).toMatchObject({ width: 800, height: 360, textDrawn: true });
    expect([...picture.png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const png = PNG.sync.read(picture.png);
    expect([png.width, png.height]).toEqual([800, 360]);
    // The forecast takes the last third of the plot (x from about 560 to 784).
    const plot = { x0: 560, x1: 784, y0: 36, y1: 320 };
    expect(count(png, plot, (c) => near(c, BAND80))).toBeGreaterThan(500);
    expect(count(png, plot, (c) => near(c, BAND95))).toBeGreaterThan(500);
    expect(count(png, TITLE, dark)).toBeGreaterThan(200);
    // The y axis labels, left of the plot.
    expect(count(png, { x0: 0, x1: 60, y0: 30, y1: 330 }, dark)).toBeGreaterThan(100);
  });

  it('still draws the picture without any font, and says its labels are missing', async () => {
    const picture = await svgToPng(svgChart(data), { systemFonts: false });
    expect(picture).toMatchObject({ width: 800, height: 360, textDrawn: false });
    const png = PNG.sync.read(picture.png);
    expect(count(png, TITLE, dark)).toBe(0);
    expect(count(png, { x0: 560, x1: 784, y0: 36, y1: 320 }, (c) => near(c, BAND80))).toBeGreaterThan(500);
  });
});
