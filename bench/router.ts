import { spawnSync } from 'node:child_process';
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
/**
 * Every order of the three, taken in turn, in a cycle where no path ever runs twice in a row (also
 * across two orders) and each follows each other path equally often. A path that follows itself
 * finds its server process still running on a warm core and answers ~15 µs sooner: in the plain
 * order (direct…, direct…, prepared…, …) the direct and prepared pools did so at the seams between
 * orders and the router never did, which made the router look ~20% slower than it is.
 */
const ORDERS = [
  ['direct', 'prepared', 'routed'],
  ['direct', 'routed', 'prepared'],
  ['routed', 'prepared', 'direct'],
  ['prepared', 'direct', 'routed'],
  ['prepared', 'routed', 'direct'],
  ['routed', 'direct', 'prepared'],
] as const;

/**
 * With --profile, a fourth path: the same lookup through a second router with the workload profile
 * on (src/profiling/workload.ts). Three orders in turn, whose 12 steps make each path follow each
 * other path exactly once and never itself (across orders too).
 */
const PROFILE_ORDERS: ReadonlyArray<readonly Path[]> = [
  ['direct', 'prepared', 'routed', 'profiled'],
  ['direct', 'routed', 'prepared', 'profiled'],
  ['routed', 'direct', 'profiled', 'prepared'],
];

function orderOf(i: number, profile: boolean): readonly Path[] {
  return profile ? PROFILE_ORDERS[i % PROFILE_ORDERS.length]! : ORDERS[i % ORDERS.length]!;
}

type Path = 'direct' | 'prepared' | 'routed' | 'profiled';

/**
 * The client (this process) on the first CPU, the node's PostgreSQL (its postmaster, so every server
 * process it starts) on the others: client and server apart, as on two machines, and the same for
 * every path. Unpinned, where the scheduler happened to put a path's server process against the
 * client moved that path's p50 by up to ±40% for a whole run (measured here: per-run ratios from 0.65
 * to 1.9 on this 2-core machine). Needs `taskset` (util-linux) and two CPUs; otherwise says why not.
 */
function pinApart(postmasterPid: number | undefined): string {
  const cpus = os.availableParallelism();
  if (cpus < 2) return 'not pinned (one CPU)';
  if (postmasterPid === undefined) return 'not pinned (no postmaster.pid)';
  const server = `1-${cpus - 1}`;
  for (const [cpuList, target] of [['0', String(process.pid)], [server, String(postmasterPid)]] as const) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', cpuList, target], { encoding: 'utf8' });
    if (r.error || r.status !== 0) return `not pinned (taskset: ${r.error?.message ?? r.stderr.trim()})`;
  }
  return `client on CPU 0, PostgreSQL on CPU ${server}`;
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    allowNegative: true,
    options: {
      rows: { type: 'string', default: '100000' },
      queries: { type: 'string', default: '20000' },
      // Lookups per path before the first measured round, on connections of their own: the
      // process's warm-up (JIT), reported apart as warmup_ratio_p99 and not in the figures.
      warmup: { type: 'string', default: '5000' },
      // Lookups per path at the start of each round, on its new connections, not measured.
      'round-warmup': { type: 'string', default: '200' },
      shards: { type: 'string', default: '8' },
      pool: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '10' },
      // --no-pin leaves the client and the server processes wherever the scheduler puts them.
      pin: { type: 'boolean', default: true },
      // --set-path measures the SET search_path path the rewrite replaced, for comparison.
      'set-path': { type: 'boolean', default: false },
      // --profile also measures a router with the workload profile on: interception_overhead_p50.
      profile: { type: 'boolean', default: false },
    },
  });
  const rows = Number(values.rows);
  const queries = Number(values.queries);
  const warmup = Number(values.warmup);
  const roundWarmup = Number(values['round-warmup']);
  const shardCount = Number(values.shards);
  const poolSize = Number(values.pool);
  const rounds = Math.max(1, Number(values.rounds));
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
    const pinned = values.pin ? pinApart(fleet.nodes[0]!.postmasterPid) : 'not pinned (--no-pin)';

    const directTimes: number[] = [];
    const preparedTimes: number[] = [];
    const routedTimes: number[] = [];
    const profiledTimes: number[] = [];
    const times: Record<Path, number[]> = { direct: directTimes, prepared: preparedTimes, routed: routedTimes, profiled: profiledTimes };
    // This process's CPU time per path: the client side's own cost, which load on the machine barely moves.
    const cpuUs = { direct: 0, prepared: 0, routed: 0, profiled: 0 };
    const statements = { qualified: 0, setPath: 0 };
    const roundRatios: number[] = [];
    const sql = 'select id, owner, balance from accounts where id = $1';
    let seed = 12345;
    const nextKey = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return 1 + (seed % rows);
    };
    // Rounds, each with new pools and a new router: new server processes. Where the scheduler
    // places a path's server process against the client (on this 2-core machine) moves its p50 by
    // ±30% for a whole run; over rounds that luck is drawn again and again, for every path alike.
    const perRound = Math.ceil(queries / rounds);
    // The warm-up round (-1): the first lookups of the process. Every path's code is still being
    // optimised: in runs measured without it, the first round's 2,000 lookups had a routed p99 of 2.2 ms
    // and a prepared one of 1.6 ms, against about 0.2 ms for both later, and those few hundred
    // samples alone made the whole run's p99. An application's router runs warm; this is reported
    // (warmup_ratio_p99) but kept out of the figures.
    const warmTimes: Record<Path, number[]> = { direct: [], prepared: [], routed: [], profiled: [] };
    for (let round_ = warmup > 0 ? -1 : 0; round_ < rounds; round_++) {
      // Each path has a pool of its own, so that each runs on its own server process, as the router does.
      const direct = new pg.Pool({ connectionString: nodeUrl, max: poolSize });
      const prepared = new pg.Pool({ connectionString: nodeUrl, max: poolSize });
      const router = await createRouter({ catalogUrl: fleet.catalogUrl, poolSize, qualifyNames });
      // Flushed once a minute, as by default: a flush or two lands inside the measurement.
      const profiled = profile ? await createRouter({ catalogUrl: fleet.catalogUrl, poolSize, qualifyNames, profile: { flushIntervalMs: 60_000 } }) : undefined;
      const roundTimes: Record<Path, number[]> = { direct: [], prepared: [], routed: [], profiled: [] };
      const warming = round_ < 0;
      const skip = warming ? 0 : roundWarmup;
      for (let i = 0; i < skip + (warming ? warmup : perRound); i++) {
        const key = nextKey();
        const measured = !warming && i >= skip;
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
          if (measured) cpuUs[which] += cpu.user + cpu.system;
          if (result.rows[0]?.owner !== `owner-${key}`) throw new Error(`${which} lookup of ${key} returned ${JSON.stringify(result.rows)}`);
          if (measured) {
            times[which].push(us);
            roundTimes[which].push(us);
          } else if (warming) {
            warmTimes[which].push(us);
          }
        }
      }
      if (!warming) {
        statements.qualified += router.statements.qualified;
        statements.setPath += router.statements.setPath;
      }
      for (const t of Object.values(roundTimes)) t.sort((a, b) => a - b);
      if (!warming) roundRatios.push(round(percentile(roundTimes.routed, 50) / percentile(roundTimes.prepared, 50), 3));
      await router.close();
      await profiled?.close();
      await direct.end();
      await prepared.end();
    }
    const measuredQueries = perRound * rounds;
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
        direct: round(cpuUs.direct / measuredQueries),
        prepared: round(cpuUs.prepared / measuredQueries),
        routed: round(cpuUs.routed / measuredQueries),
        ...(profile ? { profiled: round(cpuUs.profiled / measuredQueries) } : {}),
      },
      ...(profile
        ? {
            profiled_p50_us: round(p(profiledTimes, 50)),
            profiled_p99_us: round(p(profiledTimes, 99)),
            // The goal (issue 13): at most 1.05, interception adding at most 5% to the routed p50.
            interception_overhead_p50: round(p(profiledTimes, 50) / p(routedTimes, 50), 3),
            interception_overhead_p99: round(p(profiledTimes, 99) / p(routedTimes, 99), 3),
            interception_cpu_us: round((cpuUs.profiled - cpuUs.routed) / measuredQueries),
          }
        : {}),
      // The process's first lookups (the warm-up round), apart: how much longer the router takes to warm.
      ...(warmup > 0
        ? {
            warmup_lookups: warmup,
            warmup_ratio_p50: round(p([...warmTimes.routed].sort((a, b) => a - b), 50) / p([...warmTimes.prepared].sort((a, b) => a - b), 50), 3),
            warmup_ratio_p99: round(p([...warmTimes.routed].sort((a, b) => a - b), 99) / p([...warmTimes.prepared].sort((a, b) => a - b), 99), 3),
          }
        : {}),
      // Each round's own routed ÷ prepared p50: how far one run's luck can move it.
      ratio_p50_rounds: roundRatios,
      statements_qualified: statements.qualified,
      statements_set_path: statements.setPath,
      qualify_names: qualifyNames,
      cpus: pinned,
      load_before: loadBefore,
      load_after: os.loadavg().map((l) => round(l, 2)),
    };
    console.log(`rows ${rows}, ${shardCount} shards on 1 node, pools of ${poolSize} each, ${measuredQueries} lookups each way in ${rounds} rounds of new connections (after ${warmup} warm-up lookups, and ${roundWarmup} at the start of each round), interleaved`);
    console.log('            p50 µs   p90 µs   p99 µs');
    for (const label of ['direct', 'prepared', 'routed', ...(profile ? (['profiled'] as const) : [])] as const) {
      console.log(`${label.padEnd(10)} ${[50, 90, 99].map((q) => round(percentile(times[label], q)).toString().padStart(8)).join(' ')}`);
    }
    console.log(JSON.stringify(summary));
  } finally {
    await fleet.stop();
  }
}
