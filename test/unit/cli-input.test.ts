import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { budgetSeconds, graceSeconds, searchSeconds, shardId, wholeNumber } from '../../cli/args.js';

const root = path.resolve(import.meta.dirname, '../..');
/** Nothing listens here: a refusal that got as far as connecting would say so instead of naming the option. */
const NOWHERE = ['--catalog-url', 'postgres://postgres:x@127.0.0.1:1/none', '--temporal-address', '127.0.0.1:1'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function shardcast(args: string[], cwd: string): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHARDCAST_')) env[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(root, 'bin/shardcast.js'), ...args], { cwd, env, timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Each refusal: its arguments, and the one line it must print. */
const REFUSALS: Record<string, [string[], RegExp]> = {
  graceHex: [['move', '1', '--to', 'node-2', '--grace', '0x10'], /^shardcast: error: option '--grace <seconds>' argument '0x10' is invalid\. expected a whole number of seconds from 0 to 2592000 \(see --help\)$/],
  graceExponent: [['move', '1', '--to', 'node-2', '--no-wait', '--grace', '1e3'], /option '--grace <seconds>' argument '1e3' is invalid/],
  graceFraction: [['split', '1', '--to', 'node-1,node-2', '--grace', '1.5'], /option '--grace <seconds>' argument '1\.5' is invalid/],
  graceTooLong: [['merge', '1', '2', '--grace', '2592001'], /option '--grace <seconds>' argument '2592001' is invalid\. expected a whole number of seconds from 0 to 2592000/],
  shardHex: [['move', '0x10', '--to', 'node-2'], /^shardcast: error: command-argument value '0x10' is invalid for argument 'shard'\. expected a shard id \(a whole number, 1 or more\)/],
  shardsExponent: [['tables', 'create', 't', '--columns', 'id bigint primary key', '--key', 'id', '--shards', '1e3'], /option '--shards <n>' argument '1e3' is invalid\. expected a whole number of shards from 1 to 4096/],
  shardsTooMany: [['tables', 'create', 't', '--columns', 'id bigint primary key', '--key', 'id', '--shards', '5000'], /option '--shards <n>' argument '5000' is invalid/],
  horizonHex: [['forecast', 'backtest', '--csv', 'x.csv', '--horizon', '0x10'], /option '--horizon <steps>' argument '0x10' is invalid\. expected a whole number of steps from 1 to 1440/],
  budgetTooLarge: [['forecast', 'backtest', '--csv', 'x.csv', '--budget', '601'], /option '--budget <seconds>' argument '601' is invalid\. expected a decimal number of seconds above 0 up to 600/],
  searchExponent: [['forecast', 'backtest', '--csv', 'x.csv', '--search', '1e2'], /option '--search <seconds>' argument '1e2' is invalid/],
  hoursFraction: [['forecast', 'show', 'table:t:inserts', '--hours', '1.5'], /option '--hours <n>' argument '1\.5' is invalid/],
  plansTooMany: [['rebalance', 'status', '--plans', '101'], /option '--plans <n>' argument '101' is invalid\. expected a whole number of plans from 1 to 100/],
  capacityHex: [['nodes', 'add', 'n', '--dsn', 'postgres://x@127.0.0.1:1/x', '--capacity', '0x10'], /option '--capacity <units>' argument '0x10' is invalid/],
  setCapacityInfinity: [['nodes', 'set-capacity', 'n', 'Infinity'], /value 'Infinity' is invalid for argument 'units'\. expected a decimal number of load units above 0 up to 1000000000, or "auto"/],
  daysExponent: [['simulate', '--trace', 'x.csv', '--policy', 'static', '--days', '1e1'], /option '--days <n>' argument '1e1' is invalid/],
  intervalZero: [['move', '1', '--to', 'node-2', '--follow', '--interval', '0'], /option '--interval <seconds>' argument '0' is invalid\. expected a decimal number of seconds above 0 up to 60/],
  followWithoutMovement: [['movements', '--follow'], /^shardcast: error: --follow follows one movement: give it \(shardcast movements MOVEMENT --follow\)$/],
};

let dir: string;
const runs = new Map<string, Run>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardcast-cli-input-'));
  const queue: Array<[string, string[]]> = [
    ...Object.entries(REFUSALS).map(([name, [args]]): [string, string[]] => [name, [...NOWHERE, ...args]]),
    ['upHelp', ['up', '--help']],
    ['moveHelp', ['move', '--help']],
    ['movementsHelp', ['movements', '--help']],
  ];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) runs.set(next[0], await shardcast(next[1], dir));
  };
  await Promise.all([worker(), worker()]);
}, 300_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('CLI input rules', () => {
  it('numbers are decimal, whole where a count is wanted, bounded where they can hurt: one line naming the option and the value, exit 1, nothing contacted', () => {
    for (const [name, [, message]] of Object.entries(REFUSALS)) {
      const r = runs.get(name)!;
      expect(r.code, name).toBe(1);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines, name).toHaveLength(1);
      expect(lines[0], name).toMatch(/^shardcast: error: /);
      expect(lines[0], name).toMatch(message);
      expect(lines[0], name).not.toMatch(/catalog|Temporal|ECONNREFUSED/); // refused before anything was contacted
      expect(r.stdout, name).toBe('');
    }
  });

  it('the parsers take what they should', () => {
    expect(graceSeconds('0')).toBe(0);
    expect(graceSeconds('2592000')).toBe(2_592_000);
    expect(shardId('17')).toBe(17);
    expect(budgetSeconds('1.5')).toBe(1.5);
    expect(searchSeconds('0')).toBe(0);
    expect(wholeNumber(1, 10)('10')).toBe(10);
    for (const bad of ['', ' 1', '+1', '-1', '0x10', '1e3', '1.0', 'Infinity', 'NaN', '١']) expect(() => wholeNumber(0, 100)(bad), JSON.stringify(bad)).toThrow(InvalidArgumentError);
    for (const bad of ['', '.5', '5.', '1e-3', '0x1', '-0', 'Infinity', '0']) expect(() => budgetSeconds(bad), JSON.stringify(bad)).toThrow(InvalidArgumentError);
    expect(() => shardId('0')).toThrow(InvalidArgumentError);
    expect(() => shardId('9007199254740993')).toThrow(InvalidArgumentError);
  });

  it('up --help shows the global options; defaults are shown in help', () => {
    const up = runs.get('upHelp')!;
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/^Global Options:$/m);
    for (const option of ['--config <file>', '--catalog-url <url>', '--temporal-address <host:port>', '--verbose']) expect(up.stdout).toContain(option);
    const move = runs.get('moveHelp')!.stdout.replace(/\s+/g, ' ');
    expect(move).toContain('(default: movement.graceSeconds, 300)');
    expect(move).toContain('(default: movement.approvalRequired, false)');
    expect(move).toContain('(default: 0.5)');
    expect(move).toMatch(/--follow show progress until the movement ends/);
    const movements = runs.get('movementsHelp')!.stdout.replace(/\s+/g, ' ');
    expect(movements).toMatch(/Usage: shardcast movements \[options\] \[movement\]/);
    expect(movements).toMatch(/--follow with a movement: show its progress until it ends/);
  });
});
