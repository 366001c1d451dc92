import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** `shardcast simulate` end to end on a short synthetic trace, through bin/shardcast.js. */

const root = path.resolve(import.meta.dirname, '../../..');
const KEYS = ['policy', 'overload_minutes', 'node_hours', 'moves', 'bytes_moved', 'moves_started_in_peak', 'moves_started_in_peak_reactive', 'oscillations', 'ideal_node_hours'];
const outcomes = new Map<string, { exit: number; out: string; err: string }>();
let dir: string;

function csv(stepSeconds: number, points: number, value: (i: number) => number): string {
  const start = Date.UTC(2024, 0, 1);
  const rows = Array.from({ length: points }, (_, i) => `${new Date(start + i * stepSeconds * 1000).toISOString()},${value(i).toFixed(3)}`);
  return ['timestamp,value', ...rows].join('\n');
}

function simulate(args: string[]): Promise<{ exit: number; out: string; err: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHARDCAST_')));
  return new Promise((done) => {
    execFile(process.execPath, ['bin/shardcast.js', 'simulate', ...args], { cwd: root, env, timeout: 90_000 }, (error, out, err) => {
      const exit = error ? Number((error as { code?: unknown }).code ?? -1) : 0;
      done({ exit, out: String(out), err: String(err) });
    });
  });
}

const lastJson = (name: string) => JSON.parse(outcomes.get(name)!.out.trim().split('\n').at(-1)!) as Record<string, number | string>;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardcast-simulate-'));
  // Four days at 5 minutes: a daily cycle between 20 and 100 with a little noise.
  const daily = csv(300, 4 * 288, (i) => 60 + 40 * Math.sin((2 * Math.PI * i) / 288) + ((i * 7919) % 13) - 6);
  writeFileSync(path.join(dir, 'daily.csv'), daily);
  writeFileSync(path.join(dir, 'bad.csv'), 'timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,lots\n');
  writeFileSync(path.join(dir, 'two-hours.csv'), csv(7200, 100, () => 1));
  const trace = path.join(dir, 'daily.csv');
  const short = ['--days', '1', '--warmup-days', '2'];
  const planned: Record<string, string[]> = {
    static: ['--trace', trace, '--policy', 'static', ...short, '--json'],
    reactive: ['--trace', trace, '--trace', trace, '--policy', 'reactive', ...short],
    predictive: ['--trace', trace, '--policy', 'predictive', '--shards-per-trace', '1', ...short, '--json'],
    missing: ['--trace', path.join(dir, 'nowhere.csv'), '--policy', 'static'],
    badCsv: ['--trace', path.join(dir, 'bad.csv'), '--policy', 'static'],
    twoHours: ['--trace', path.join(dir, 'two-hours.csv'), '--policy', 'static'],
    unknownPolicy: ['--trace', trace, '--policy', 'psychic'],
  };
  const queue = Object.entries(planned);
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) outcomes.set(next[0], await simulate(next[1]));
  };
  await Promise.all([worker(), worker()]);
}, 170_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('shardcast simulate', () => {
  it('prints the figures as the last line, JSON with every key; static never moves and counts whole nodes', () => {
    const r = outcomes.get('static')!;
    expect(r.err).toBe('');
    expect(r.exit).toBe(0);
    expect(r.out.trim().split('\n')).toHaveLength(1);
    const j = lastJson('static');
    expect(Object.keys(j)).toEqual(KEYS);
    expect(j).toMatchObject({ policy: 'static', moves: 0, bytes_moved: 0, overload_minutes: 0, oscillations: 0 });
    expect((j.node_hours as number) % 24).toBe(0);
    expect(j.node_hours).toBeGreaterThan(0);
    // The floor under any policy: positive, and under what static provisions for the peaks.
    expect(j.ideal_node_hours).toBeGreaterThan(0);
    expect(j.ideal_node_hours).toBeLessThan(j.node_hours as number);
  });

  it('runs the reactive policy on two traces, with a readable report before the JSON', () => {
    const r = outcomes.get('reactive')!;
    expect(r.exit).toBe(0);
    expect(r.out).toMatch(/^8 shards from 2 trace\(s\) on \d+ nodes/m);
    const j = lastJson('reactive');
    expect(j.policy).toBe('reactive');
    expect(j.oscillations).toBe(0);
    expect(j.node_hours).toBeGreaterThan(0);
  });

  it('runs the predictive policy: the real planner on forecasts the engine trained', () => {
    const r = outcomes.get('predictive')!;
    expect(r.err).toBe('');
    expect(r.exit).toBe(0);
    const j = lastJson('predictive');
    expect(Object.keys(j)).toEqual(KEYS);
    expect(j.policy).toBe('predictive');
    expect(j.node_hours).toBeGreaterThan(0);
  });

  it('exits 2 with the problem named on bad input', () => {
    const expectations: Record<string, RegExp> = {
      missing: /cannot read .*nowhere\.csv/,
      badCsv: /bad\.csv: line 3: value "lots" is not a decimal number/,
      twoHours: /two-hours\.csv: .*the median spacing of the timestamps is 7200 s; supported steps are 60 s to 3600 s/,
      unknownPolicy: /unknown policy "psychic": expected one of static, reactive, predictive, oracle/,
    };
    for (const [name, message] of Object.entries(expectations)) {
      const r = outcomes.get(name)!;
      expect(r.exit, name).toBe(2);
      expect(r.err, name).toMatch(/^shardcast: error: /);
      expect(r.err, name).toMatch(message);
      expect(r.out, name).toBe('');
    }
  });
});
