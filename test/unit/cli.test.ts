import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');
const TOP_LEVEL_COMMANDS = ['up', 'worker', 'status', 'nodes', 'tables', 'shards', 'doctor', 'provision-temporal', 'migrate'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without SHARDCAST_* variables, so that only the arguments configure the CLI. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHARDCAST_')) env[k] = v;
  env.NO_COLOR = '1';
  return env;
}

function shardcast(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['bin/shardcast.js', ...args],
      { cwd: root, env: cleanEnv(), timeout: 60_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

let dir: string;
let badConfig: string;
const runs = new Map<string, Run>();

/** Every spawn the tests look at (15), run two at a time up front. */
function plannedRuns(): Record<string, string[]> {
  const planned: Record<string, string[]> = {
    help: ['--help'],
    tablesCreateHelp: ['tables', 'create', '--help'],
    badConfig: ['--config', badConfig, 'status'],
    badConfigVerbose: ['--config', badConfig, '--verbose', 'status'],
    unknownCommand: ['frobnicate'],
    missingKey: ['tables', 'create', 'things', '--columns', 'id bigint primary key'],
    noCatalog: ['--catalog-url', 'postgres://postgres:x@127.0.0.1:1/none', 'status'],
  };
  for (const command of TOP_LEVEL_COMMANDS) planned[`help:${command}`] = [command, '--help'];
  return planned;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardcast-cli-test-'));
  badConfig = path.join(dir, 'bad.json');
  writeFileSync(badConfig, JSON.stringify({ temporal: { port: 'x' } }));
  const queue = Object.entries(plannedRuns());
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) runs.set(next[0], await shardcast(next[1]));
  };
  await Promise.all([worker(), worker()]);
}, 180_000);

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function run(name: string): Run {
  const r = runs.get(name);
  if (!r) throw new Error(`no run named ${name}`);
  return r;
}

describe('shardcast CLI', () => {
  it('--help exits 0 and lists the commands', () => {
    const r = run('help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: shardcast /);
    for (const command of ['up', 'status', 'nodes', 'tables', 'shards']) {
      expect(r.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect(r.stdout).toContain('--config <file>');
    expect(r.stdout).toContain('--catalog-url <url>');
    expect(r.stderr).toBe('');
  });

  it('every top-level command has --help', () => {
    for (const command of TOP_LEVEL_COMMANDS) {
      const r = run(`help:${command}`);
      expect(r.code, command).toBe(0);
      expect(r.stdout, command).toMatch(new RegExp(`^Usage: shardcast ${command} `));
    }
  });

  it('nodes --help lists add and list', () => {
    const r = run('help:nodes');
    expect(r.stdout).toMatch(/^ {2}add \[options\] <name>/m);
    expect(r.stdout).toMatch(/^ {2}list \[options\]/m);
  });

  it('tables create --help exits 0 and shows its options', () => {
    const r = run('tablesCreateHelp');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: shardcast tables create \[options\] <name>/);
    for (const option of ['--columns <definitions>', '--key <column>', '--method <method>', '--shards <n>', '--bounds <b0,b1,...>', '--colocate-with <table>', '--nodes <n1,n2,...>']) {
      expect(r.stdout).toContain(option);
    }
  });

  it('a bad config value is one line on stderr, without a stack trace', () => {
    const r = run('badConfig');
    expect(r.code).not.toBe(0);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual(['shardcast: error: config: temporal.port: expected a number, got a string']);
    expect(r.stderr).not.toMatch(/^ {4}at /m);
    expect(r.stdout).toBe('');
  });

  it('--verbose adds the stack trace', () => {
    const r = run('badConfigVerbose');
    expect(r.code).toBe(1);
    const out = lines(r.stderr);
    expect(out[0]).toBe('shardcast: error: config: temporal.port: expected a number, got a string');
    expect(out[1]).toBe('ConfigError: config: temporal.port: expected a number, got a string');
    expect(out.some((l) => l.startsWith('    at '))).toBe(true);
    expect(r.stderr).toContain('src/config.ts');
  });

  it('an unknown command exits non-zero', () => {
    const r = run('unknownCommand');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
    expect(r.stderr).not.toMatch(/^ {4}at /m);
  });

  it('tables create without --key exits non-zero naming the option', () => {
    const r = run('missingKey');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("required option '--key <column>' not specified");
    expect(r.stderr).not.toMatch(/^ {4}at /m);
  });

  it('status with an unreachable catalog is one line, password redacted', () => {
    const r = run('noCatalog');
    expect(r.code).toBe(1);
    const out = lines(r.stderr);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^shardcast: error: cannot connect to the catalog at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/none: /);
    expect(out[0]).toContain('ECONNREFUSED');
    expect(r.stderr).not.toContain(':x@');
    expect(r.stdout).toBe('');
  });
});
