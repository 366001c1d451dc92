import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from '../cli/format.js';
import { percentile, round, startBenchFleet } from './fleet.js';

/**
 * How long `shardcast` takes to answer, process start to exit, as an operator runs it: `--help`, and
 * `status`, `nodes list` and `tables list` against a running fleet (an embedded catalog and 3 nodes,
 * one table of 8 shards). Each command is run `--runs` times (default 7) through bin/shardcast.js,
 * which runs the built dist/ (built first when missing or older than a source file), and through
 * tsx from the TypeScript sources (`--no-source` to skip), with `node -e 0` as the floor. Goals:
 * `--help` ≤ 0.3 s and `status` ≤ 0.6 s (median, built). The figures depend on the machine's load:
 * the last line gives the load average with them.
 */
const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin/shardcast.js');

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { runs: { type: 'string', default: '7' }, 'no-source': { type: 'boolean', default: false } } });
  const runs = Number(values.runs);
  if (!/^\d+$/.test(values.runs) || runs < 1 || runs > 100) throw new Error(`--runs: expected a whole number from 1 to 100, got ${JSON.stringify(values.runs)}`);

  console.error('building dist/ (npm run build) so that bin/shardcast.js runs it');
  const build = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);

  console.error('starting a fleet: catalog and 3 nodes');
  const fleet = await startBenchFleet(3);
  const cwd = mkdtempSync(path.join(tmpdir(), 'shardcast-bench-cli-'));
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHARDCAST_')) env[k] = v;
  try {
    await fleet.createTable({ name: 'orders', columns: 'id bigint primary key, customer bigint, total numeric', shardKey: 'id', method: 'hash', shardCount: 8 });
    const global = ['--catalog-url', fleet.catalogUrl];
    const commands: Record<string, string[]> = {
      help: ['--help'],
      status: [...global, 'status'],
      'status --json': [...global, 'status', '--json'],
      'nodes list': [...global, 'nodes', 'list'],
      'tables list': [...global, 'tables', 'list'],
    };
    const time = (argv: string[]): number => {
      const started = performance.now();
      const r = spawnSync(process.execPath, argv, { cwd, env, encoding: 'utf8' });
      const ms = performance.now() - started;
      if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
      return ms;
    };
    const measure = (argv: string[]): { median_s: number; min_s: number; p90_s: number } => {
      time(argv); // the first run warms the file cache (and tsx's compile cache)
      const ms = Array.from({ length: runs }, () => time(argv)).sort((a, b) => a - b);
      return { median_s: round(percentile(ms, 50) / 1000, 3), min_s: round(ms[0]! / 1000, 3), p90_s: round(percentile(ms, 90) / 1000, 3) };
    };
    const modes: Array<[string, (a: string[]) => string[]]> = [['built', (a) => [BIN, ...a]]];
    if (!values['no-source']) modes.push(['source', (a) => ['--import', import.meta.resolve('tsx'), path.join(ROOT, 'cli/main.ts'), ...a]]);
    const load = [loadavg()[0]!];
    const node = measure(['-e', '0']);
    const results: Record<string, Record<string, ReturnType<typeof measure>>> = {};
    for (const [mode, argv] of modes) {
      results[mode] = {};
      for (const [name, a] of Object.entries(commands)) {
        results[mode][name] = measure(argv(a));
        console.error(`${mode} ${name}: median ${results[mode][name].median_s} s`);
      }
    }
    load.push(loadavg()[0]!);
    printTable(
      'timings',
      Object.entries(results).flatMap(([mode, r]) => Object.entries(r).map(([command, t]) => ({ mode, command, 'median s': t.median_s, 'min s': t.min_s, 'p90 s': t.p90_s }))),
      ['mode', 'command', 'median s', 'min s', 'p90 s'],
    );
    console.log(`node -e 0: median ${node.median_s} s; load average ${round(load[0]!, 2)} before, ${round(load[1]!, 2)} after; ${runs} runs each`);
    console.log(
      JSON.stringify({
        bench: 'cli',
        runs,
        node_e0: node,
        ...results,
        help_median_s: results.built!.help!.median_s,
        status_median_s: results.built!.status!.median_s,
        goals: { help_s: 0.3, status_s: 0.6 },
        loadavg_1m: load.map((l) => round(l, 2)),
      }),
    );
  } finally {
    rmSync(cwd, { recursive: true, force: true });
    await fleet.stop();
  }
}
