import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { quoteIdent } from '../src/sql/ident.js';
import { createRouter } from '../src/router/router.js';
import { percentile, round, startBenchFleet } from './fleet.js';

/**
 * The router's cost on a point query: the same primary-key lookup through a bare pg.Pool (on an
 * ordinary table holding the same rows on the same node) and through the router, interleaved
 * one by one in the same run so that both see the same machine.
 */
/** Every order of the three, taken in turn, so that none always follows another. */
const ORDERS = [
  ['direct', 'prepared', 'routed'],
  ['direct', 'routed', 'prepared'],
  ['prepared', 'direct', 'routed'],
  ['prepared', 'routed', 'direct'],
  ['routed', 'direct', 'prepared'],
  ['routed', 'prepared', 'direct'],
] as const;

/**
 * With --profile, a fourth path: the same lookup through a second router with the workload profile
 * on (src/profiling/workload.ts). The four take turns in rotating order, each sometimes first.
 */
function orderOf(i: number, profile: boolean): readonly Path[] {
  if (!profile) return ORDERS[i % ORDERS.length]!;
  const paths: Path[] = ['direct', 'prepared', 'routed', 'profiled'];
  const shift = i % 4;
  const rotated = [...paths.slice(shift), ...paths.slice(0, shift)];
  return Math.floor(i / 4) % 2 ? rotated.reverse() : rotated;
}

type Path = 'direct' | 'prepared' | 'routed' | 'profiled';

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: 'string', default: '100000' },
      queries: { type: 'string', default: '20000' },
      warmup: { type: 'string', default: '2000' },
      shards: { type: 'string', default: '8' },
      pool: { type: 'string', default: '10' },
      // --set-path measures the SET search_path path the rewrite replaced, for comparison.
      'set-path': { type: 'boolean', default: false },
      // --profile also measures a router with the workload profile on: interception_overhead_p50.
      profile: { type: 'boolean', default: false },
    },
  });
  const rows = Number(values.rows);
  const queries = Number(values.queries);
  const warmup = Number(values.warmup);
  const shardCount = Number(values.shards);
  const poolSize = Number(values.pool);
  const qualifyNames = !values['set-path'];
  const profile = values.profile;
  // Load on the machine (other work shares its cores): reported beside the figures.
  const loadBefore = os.loadavg().map((l) => round(l, 2));

  const fleet = await startBenchFleet(1);
  try {
    const columns = 'id bigint primary key, owner text not null, balance bigint not null';
    await fleet.createTable({ name: 'accounts', columns, shardKey: 'id', shardCount });
    const nodeUrl = fleet.nodes[0]!.url('shardcast');
    const node = new pg.Client({ connectionString: nodeUrl });
    await node.connect();
    const { rows: shards } = await fleet.catalog.query<{ schema_name: string; hash_min: string; hash_max: string }>(
      'select schema_name, hash_min::text, hash_max::text from shardcast.shards',
    );
    for (const s of shards) {
      await node.query(
        `insert into ${quoteIdent(s.schema_name)}.accounts
         select g, 'owner-' || g, g * 10 from generate_series(1, $1::bigint) g where hashint8extended(g, 0) between $2::bigint and $3::bigint`,
        [rows, s.hash_min, s.hash_max],
      );
    }
    await node.query(`create table public.accounts (${columns})`);
    await node.query(`insert into public.accounts select g, 'owner-' || g, g * 10 from generate_series(1, $1::bigint) g`, [rows]);
    await node.query('vacuum analyze');
    await node.end();

    // Each path has a pool of its own, so that each runs on its own server process, as the router does.
    const direct = new pg.Pool({ connectionString: nodeUrl, max: poolSize });
    const prepared = new pg.Pool({ connectionString: nodeUrl, max: poolSize });
    const router = await createRouter({ catalogUrl: fleet.catalogUrl, poolSize, qualifyNames });
    // Flushed once a minute, as by default: a flush or two lands inside the measurement.
    const profiled = profile ? await createRouter({ catalogUrl: fleet.catalogUrl, poolSize, qualifyNames, profile: { flushIntervalMs: 60_000 } }) : undefined;
    const directTimes: number[] = [];
    const preparedTimes: number[] = [];
    const routedTimes: number[] = [];
    const profiledTimes: number[] = [];
    const times: Record<Path, number[]> = { direct: directTimes, prepared: preparedTimes, routed: routedTimes, profiled: profiledTimes };
    // This process's CPU time per path: the client side's own cost, which load on the machine barely moves.
    const cpuUs = { direct: 0, prepared: 0, routed: 0, profiled: 0 };
    const sql = 'select id, owner, balance from accounts where id = $1';
    let seed = 12345;
    const nextKey = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return 1 + (seed % rows);
    };
    for (let i = 0; i < warmup + queries; i++) {
      const key = nextKey();
      // Alternate which goes first so neither always follows the other.
      const order = orderOf(i, profile);
      for (const which of order) {
        const cpu0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        const result =
          which === 'direct'
            ? await direct.query('select id, owner, balance from public.accounts where id = $1', [key])
            : which === 'prepared'
              ? await prepared.query({ name: 'lookup', text: 'select id, owner, balance from public.accounts where id = $1', values: [key] })
              : await (which === 'profiled' ? profiled! : router).forKey('accounts', key).query(sql, [key]);
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        if (i >= warmup) cpuUs[which] += cpu.user + cpu.system;
        if (result.rows[0]?.owner !== `owner-${key}`) throw new Error(`${which} lookup of ${key} returned ${JSON.stringify(result.rows)}`);
        if (i >= warmup) times[which].push(us);
      }
    }
    await router.close();
    await profiled?.close();
    await direct.end();
    await prepared.end();
    for (const t of Object.values(times)) t.sort((a, b) => a - b);
    const p = (times: number[], q: number): number => percentile(times, q);
    const summary = {
      bench: 'router',
      direct_p50_us: round(p(directTimes, 50)),
      direct_prepared_p50_us: round(p(preparedTimes, 50)),
      direct_prepared_p99_us: round(p(preparedTimes, 99)),
      routed_p50_us: round(p(routedTimes, 50)),
      routed_p99_us: round(p(routedTimes, 99)),
      // The router prepares its statements (per shard schema); the fair comparison is a pool that does too.
      ratio_p50: round(p(routedTimes, 50) / p(preparedTimes, 50), 3),
      ratio_p99: round(p(routedTimes, 99) / p(preparedTimes, 99), 3),
      ratio_p50_vs_unprepared: round(p(routedTimes, 50) / p(directTimes, 50), 3),
      client_cpu_us: {
        direct: round(cpuUs.direct / queries),
        prepared: round(cpuUs.prepared / queries),
        routed: round(cpuUs.routed / queries),
        ...(profile ? { profiled: round(cpuUs.profiled / queries) } : {}),
      },
      ...(profile
        ? {
            profiled_p50_us: round(p(profiledTimes, 50)),
            profiled_p99_us: round(p(profiledTimes, 99)),
            // The goal (issue 13): at most 1.05, interception adding at most 5% to the routed p50.
            interception_overhead_p50: round(p(profiledTimes, 50) / p(routedTimes, 50), 3),
            interception_overhead_p99: round(p(profiledTimes, 99) / p(routedTimes, 99), 3),
            interception_cpu_us: round((cpuUs.profiled - cpuUs.routed) / queries),
          }
        : {}),
      statements_qualified: router.statements.qualified,
      statements_set_path: router.statements.setPath,
      qualify_names: qualifyNames,
      load_before: loadBefore,
      load_after: os.loadavg().map((l) => round(l, 2)),
    };
    console.log(`rows ${rows}, ${shardCount} shards on 1 node, pools of ${poolSize} each, ${queries} lookups each way (after ${warmup} warm-up), interleaved`);
    console.log('            p50 µs   p90 µs   p99 µs');
    for (const label of ['direct', 'prepared', 'routed', ...(profile ? (['profiled'] as const) : [])] as const) {
      console.log(`${label.padEnd(10)} ${[50, 90, 99].map((q) => round(percentile(times[label], q)).toString().padStart(8)).join(' ')}`);
    }
    console.log(JSON.stringify(summary));
  } finally {
    await fleet.stop();
  }
}
