import { spawn } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { NodePools } from '../src/catalog/node-pools.js';
import { getNodeByName, type NodeRecord } from '../src/catalog/nodes.js';
import { cutover, fencedSchemaName } from '../src/movement/cutover.js';
import { acquireMovementLease, finishMovement } from '../src/movement/lease.js';
import { movementNames, prepareTarget, resumeAutovacuum, shardTables, startStreaming, stopStreaming, streamProgress, type ShardTables } from '../src/movement/replication.js';
import { dropVerifySlots, refreshVerification, verifyChunks, type VerifyProgress } from '../src/movement/verify.js';
import type { GovernedCopyInput, GovernedCopyResult } from './governed-copy.js';
import { createRouter, type Router } from '../src/router/router.js';
import { quoteIdent } from '../src/sql/ident.js';
import { CpuMeter, percentile, round, startBenchFleet, type BenchFleet } from './fleet.js';

/**
 * An online move of a large shard while the application writes through the router (verified as the
 * workflow verifies: writes blocked only for snapshot moments, the cutover re-checking the changes), against a raw
 * COPY of the same rows between the same two nodes in the same run; then many cutovers of a small
 * hot shard for the distribution of write-blocking time; then every acknowledged write accounted for.
 */
export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: 'string', default: '2000000' },
      cutovers: { type: 'string', default: '100' },
      writers: { type: 'string', default: '4' },
      // 'governed': only the governed move (with its raw COPY for the ratio), for tuning the governor.
      only: { type: 'string' },
    },
  });
  if (values.only !== undefined && values.only !== 'governed') throw new Error(`--only takes 'governed', not ${JSON.stringify(values.only)}`);
  const rows = Number(values.rows);
  const cutovers = Number(values.cutovers);
  const writerCount = Number(values.writers);
  const fleet = await startBenchFleet(2);
  const pools = new NodePools();
  let router: Router | undefined;
  try {
    const big = 'id bigint primary key, payload text not null, n bigint not null default 0';
    await fleet.createTable({ name: 'big', columns: big, shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    await fleet.createTable({ name: 'hot', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    const node1 = await getNodeByName(fleet.catalog, 'node-1');
    const node2 = await getNodeByName(fleet.catalog, 'node-2');
    const bigShard = await shardTables(fleet.catalog, (await shardIdOf(fleet, 'big'))!);
    const hotShard = await shardTables(fleet.catalog, (await shardIdOf(fleet, 'hot'))!);
    const load = pools.get(node1.dsn);
    const t0 = Date.now();
    await load.query(`insert into ${quoteIdent(bigShard.schema)}.big select g, repeat(md5(g::text), 3), 0 from generate_series(1, $1::bigint) g`, [rows]);
    await load.query(`insert into ${quoteIdent(hotShard.schema)}.hot select g, 0 from generate_series(1, 10000) g`);
    await load.query('vacuum analyze');
    const { rows: sizeRows } = await load.query<{ bytes: string }>(`select pg_total_relation_size($1::regclass)::text as bytes`, [`${bigShard.schema}.big`]);
    const bytes = Number(sizeRows[0]!.bytes);
    console.log(`loaded ${rows} rows (${(bytes / 1048576).toFixed(0)} MiB with index) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    router = await createRouter({ catalogUrl: fleet.catalogUrl, poolSize: writerCount + 2 });
    const load2 = new ForegroundLoad(router, rows, writerCount);

    if (values.only === 'governed') {
      load2.start('raw');
      const rawCpu = new CpuMeter();
      const rawSeconds = await rawCopy(node1, node2, bigShard.schema, big);
      const rawCores = rawCpu.cores();
      await load2.stop();
      await pools.get(node2.dsn).query('drop schema bench_raw cascade; checkpoint');
      console.log(`raw COPY: ${rawSeconds.toFixed(1)} s`);
      const governed = await governedMove(fleet, pools, load2, { source: node1, target: node2, shard: bigShard });
      const check = await load2.account(pools.get(node2.dsn), bigShard.schema, 'big');
      const summary = { bench: 'move', only: 'governed', rows, raw_copy_s: round(rawSeconds, 1), raw_copy_busy_cores: round(rawCores, 2), ...governedSummary(governed, bytes, bytes / 1048576 / rawSeconds), lost_writes: check.lost, duplicate_writes: check.duplicated };
      console.log(JSON.stringify(summary));
      return;
    }

    // Foreground latency before any movement.
    load2.start('before');
    await sleep(5000);
    await load2.stop();

    // The move, under the same load.
    load2.start('during');
    const move = { source: node1, target: node2, shard: bigShard, names: movementNames(`bench_big_${Date.now().toString(36)}`) };
    const copyStart = Date.now();
    await prepareTarget(pools, node2, bigShard);
    await startStreaming(pools, move, bigShard, move.names);
    // Copied: the table-sync COPY has committed every row (the work a raw COPY does). Ready: it has
    // also applied the writes made meanwhile and streams.
    let copySeconds = 0;
    let readySeconds = 0;
    for (;;) {
      const p = await streamProgress(pools, move, bigShard, move.names);
      if (!copySeconds && p.tables > 0 && p.tablesCopied === p.tables) copySeconds = (Date.now() - copyStart) / 1000;
      if (!readySeconds && p.tables > 0 && p.tablesReady === p.tables) readySeconds = (Date.now() - copyStart) / 1000;
      if (readySeconds && p.lagBytes !== null && p.lagBytes < 1024 * 1024) break;
      await sleep(50);
    }
    // Verify as the workflow does: chunk digests in consistent snapshots (slices of 10 s), the changes
    // since compared once more without the lock, then the cutover re-checks the last ones under it.
    const verifyStart = Date.now();
    let verified: VerifyProgress | undefined;
    do verified = await verifyChunks(pools, move, { resume: verified, sliceMs: 10_000 });
    while (!verified.done);
    const verifySeconds = (Date.now() - verifyStart) / 1000;
    const refreshed = await refreshVerification(pools, move);
    await leaseFor(fleet, move);
    const bigCutover = await cutover({ catalogUrl: fleet.catalogUrl, pools }, move, { verify: 'changes' });
    await finishMovement(fleet.catalog, move.names.gid.slice('sc_mv_'.length), 'done');
    await load2.stop();
    await stopStreaming(pools, move, move.names);
    await dropVerifySlots(pools, move);
    await resumeAutovacuum(pools, node2, bigShard.schema, bigShard.tables.map((t) => t.name));
    const verifyBlockMs = Math.max(verified.blockedMs, refreshed.blockedMs);
    console.log(`move: rows copied in ${copySeconds.toFixed(1)} s, caught up and streaming at ${readySeconds.toFixed(1)} s`);
    console.log(
      `verify: ${verified.rowsVerified} rows in ${verifySeconds.toFixed(1)} s, ${verified.snapshots} snapshot(s) blocking writes at most ${verified.blockedMs} ms; ` +
        `${refreshed.keys} changed keys re-compared (blocked ${refreshed.blockedMs} ms); cutover blocked writes ${bigCutover.blockedMs} ms, steps ${JSON.stringify(bigCutover.steps)}`,
    );

    // Raw COPY of the same rows between the same two nodes, into an identical table, same load running.
    load2.start('raw');
    const rawSeconds = await rawCopy(node1, node2, fencedSchemaName(bigShard.schema, move.names.gid.slice('sc_mv_'.length)), big);
    await load2.stop();
    console.log(`raw COPY: ${rawSeconds.toFixed(1)} s`);

    // The same shard moved back with the copy governor at its defaults, under the same load.
    const governed = await governedMove(fleet, pools, load2, { source: node2, target: node1, shard: bigShard });

    // Many cutovers of a small hot shard, back and forth, under write load on it. The bulk work above
    // wrote about a gigabyte of WAL: checkpoint first, so that its flush does not land in the middle
    // of this measurement (it stalled one cutover for 470 ms in a run without it).
    for (const node of [node1, node2]) await pools.get(node.dsn).query('checkpoint');
    const hot = new ForegroundLoad(router, 10000, writerCount, 'hot');
    hot.start('hot');
    const blocked: number[] = [];
    let from: NodeRecord = node1;
    let to: NodeRecord = node2;
    for (let i = 0; i < cutovers; i++) {
      const m = { source: from, target: to, shard: hotShard, names: movementNames(`bench_hot_${i}_${Date.now().toString(36)}`) };
      await prepareTarget(pools, to, hotShard);
      await startStreaming(pools, m, hotShard, m.names);
      for (;;) {
        const p = await streamProgress(pools, m, hotShard, m.names);
        if (p.tables > 0 && p.tablesReady === p.tables && p.lagBytes !== null && p.lagBytes < 64 * 1024) break;
        await sleep(20);
      }
      await leaseFor(fleet, m);
      const result = await cutover({ catalogUrl: fleet.catalogUrl, pools }, m);
      await finishMovement(fleet.catalog, m.names.gid.slice('sc_mv_'.length), 'done');
      blocked.push(result.blockedMs);
      if (result.blockedMs > 100) console.log(`cutover ${i}: blocked ${result.blockedMs} ms, steps ${JSON.stringify(result.steps)}`);
      await stopStreaming(pools, m, m.names);
      await pools.get(from.dsn).query(`drop schema if exists ${quoteIdent(fencedSchemaName(hotShard.schema, m.names.gid.slice('sc_mv_'.length)))} cascade`);
      [from, to] = [to, from];
    }
    await hot.stop();

    // Every acknowledged write, once, where the shard now lives.
    const bigCheck = await load2.account(pools.get(node1.dsn), bigShard.schema, 'big');
    const hotCheck = await hot.account(pools.get(from.dsn), hotShard.schema, 'hot');
    blocked.sort((a, b) => a - b);
    const before = load2.latencies('before');
    const during = load2.latencies('during');
    const copyMbS = bytes / 1048576 / copySeconds;
    const rawMbS = bytes / 1048576 / rawSeconds;
    const summary = {
      bench: 'move',
      rows,
      bytes,
      copy_mb_s: round(copyMbS, 1),
      raw_copy_mb_s: round(rawMbS, 1),
      throughput_ratio: round(copyMbS / rawMbS, 3),
      ready_s: round(readySeconds, 1),
      raw_copy_s: round(rawSeconds, 1),
      verify_s: round(verifySeconds, 1),
      verify_block_ms: verifyBlockMs,
      big_cutover_block_ms: bigCutover.blockedMs,
      cutover_block_ms_p50: percentile(blocked, 50),
      cutover_block_ms_p99: percentile(blocked, 99),
      cutover_block_ms_max: blocked.at(-1) ?? null,
      fg_p99_ms_before: round(percentile(before, 99), 2),
      fg_p99_ms_during: round(percentile(during, 99), 2),
      fg_p99_ratio: round(percentile(during, 99) / percentile(before, 99), 3),
      // The same load during the raw COPY: what copying these rows at all costs the writers here.
      fg_p99_ms_raw_copy: round(percentile(load2.latencies('raw'), 99), 2),
      ...governedSummary(governed, bytes, rawMbS),
      lost_writes: bigCheck.lost + hotCheck.lost,
      duplicate_writes: bigCheck.duplicated + hotCheck.duplicated,
    };
    console.log(`cutovers (${blocked.length}): writes blocked ${blocked.join(', ')} ms`);
    console.log(`foreground ${before.length} writes before (p99 ${summary.fg_p99_ms_before} ms), ${during.length} during the move (p99 ${summary.fg_p99_ms_during} ms)`);
    console.log(`accounted: big ${bigCheck.acknowledged} acknowledged increments, hot ${hotCheck.acknowledged}; errors seen by writers: ${load2.errors + hot.errors}`);
    console.log(JSON.stringify(summary));
  } finally {
    await router?.close();
    await pools.end();
    await fleet.stop();
  }
}

interface GovernedRun {
  copySeconds: number;
  throttledMs: number;
  before: number[];
  during: number[];
  /** The source's full-page images per foreground write, and its checkpoints, in each window. */
  wal: { before: WalWindow; during: WalWindow };
  /** Busy cores on the machine (the foreground's included) in each window. */
  cores: { before: number; during: number };
}

interface WalWindow {
  fpi: number;
  checkpoints: number;
}

/** The node's full-page images written and checkpoints done so far. */
async function walState(db: pg.Pool): Promise<WalWindow> {
  const { rows } = await db.query<{ fpi: string; checkpoints: string }>(
    'select (select wal_fpi from pg_stat_wal)::text as fpi, (select num_done from pg_stat_checkpointer)::text as checkpoints',
  );
  return { fpi: Number(rows[0]!.fpi), checkpoints: Number(rows[0]!.checkpoints) };
}

function walDelta(a: WalWindow, b: WalWindow): WalWindow {
  return { fpi: b.fpi - a.fpi, checkpoints: b.checkpoints - a.checkpoints };
}

/**
 * A move with the copy governor at its defaults (DEFAULT_GOVERNOR): the workflow's own copy
 * (exported snapshot, paced chunks) and its catch-up (the apply paced), run in a process of its own
 * as the worker runs it (bench/governed-copy.ts), with the foreground's idle p99 measured again just
 * before it. The foreground is measured while the governor works (copy and apply); the cutover
 * follows with the load stopped.
 */
async function governedMove(fleet: BenchFleet, pools: NodePools, load: ForegroundLoad, move: { source: NodeRecord; target: NodeRecord; shard: ShardTables }): Promise<GovernedRun> {
  const names = movementNames(`bench_gov_${Date.now().toString(36)}`);
  const m = { ...move, names };
  const source = pools.get(move.source.dsn);
  const wal0 = await walState(source);
  load.start('governed-before');
  const idleCpu = new CpuMeter();
  await sleep(5000);
  const idleCores = idleCpu.cores();
  await load.stop();
  const wal1 = await walState(source);
  let governedCpu: CpuMeter | undefined;
  const done = await runGovernedCopy(
    { source: move.source, target: move.target, shard: move.shard, names },
    () => {
      load.start('governed');
      governedCpu = new CpuMeter();
    },
    () => load.relabel('governed-apply'),
  );
  const governedCores = governedCpu!.cores();
  await load.stop();
  const wal2 = await walState(source);
  const [copying, applying] = [load.latencies('governed'), load.latencies('governed-apply')];
  console.log(`governed move: foreground p99 ${round(percentile(copying, 99), 2)} ms while copying, ${round(percentile(applying, 99), 2)} ms while catching up`);
  await leaseFor(fleet, m);
  // Retried like the workflow's step: the source (autovacuumed again since it was a target) may hold the lock past the cutover's lock_timeout.
  let switched: Awaited<ReturnType<typeof cutover>> | undefined;
  for (let attempt = 1; !switched; attempt++) {
    try {
      switched = await cutover({ catalogUrl: fleet.catalogUrl, pools }, m, { verify: 'counts' });
    } catch (err) {
      if ((err as { code?: string }).code !== '55P03' || attempt >= 5) throw err;
      console.log(`governed move: cutover attempt ${attempt} timed out on a lock; again`);
    }
  }
  await finishMovement(fleet.catalog, names.gid.slice('sc_mv_'.length), 'done');
  await stopStreaming(pools, m, names);
  await resumeAutovacuum(pools, move.target, move.shard.schema, move.shard.tables.map((t) => t.name));
  console.log(
    `governed move: rows copied in ${done.copySeconds.toFixed(1)} s (throttled ${(done.throttledMs / 1000).toFixed(1)} s), caught up at ${done.readySeconds.toFixed(1)} s ` +
      `(apply held ${(done.applyThrottledMs / 1000).toFixed(1)} s), cutover blocked writes ${switched.blockedMs} ms`,
  );
  const during = [...copying, ...applying].sort((a, b) => a - b);
  return {
    copySeconds: done.copySeconds,
    throttledMs: done.throttledMs + done.applyThrottledMs,
    before: load.latencies('governed-before'),
    during,
    wal: { before: walDelta(wal0, wal1), during: walDelta(wal1, wal2) },
    cores: { before: idleCores, during: governedCores },
  };
}

/**
 * Runs bench/governed-copy.ts in a child process (the move on its stdin), passing its trace on; once it
 * has loaded, `onReady` starts the measurement and the child is told to go; `onCopied` when its copy is
 * done and its catch-up begins. Its last line is the result.
 */
async function runGovernedCopy(input: GovernedCopyInput, onReady: () => void, onCopied: () => void): Promise<GovernedCopyResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./governed-copy.ts', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin.write(`${JSON.stringify(input)}\n`);
  let out = '';
  child.stdout.on('data', (data: Buffer) => {
    const text = data.toString('utf8');
    if (!out.includes('ready') && (out + text).includes('ready')) {
      onReady();
      child.stdin.end('go\n');
    }
    if (!out.includes('copied\n') && (out + text).includes('copied\n')) onCopied();
    out += text;
    process.stdout.write(data);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const last = out.trim().split('\n').at(-1) ?? '';
  if (code !== 0 || !last.startsWith('{')) throw new Error(`the governed copy failed (exit ${code})`);
  return JSON.parse(last) as GovernedCopyResult;
}

function governedSummary(g: GovernedRun, bytes: number, rawMbS: number): Record<string, number> {
  const mbS = bytes / 1048576 / g.copySeconds;
  return {
    governed_copy_mb_s: round(mbS, 1),
    governed_throughput_ratio: round(mbS / rawMbS, 3),
    governed_throttled_s: round(g.throttledMs / 1000, 1),
    governed_fg_p99_ms_before: round(percentile(g.before, 99), 2),
    governed_fg_p99_ms_during: round(percentile(g.during, 99), 2),
    governed_fg_p99_ratio: round(percentile(g.during, 99) / percentile(g.before, 99), 3),
    governed_source_fpi_per_write_before: round(g.wal.before.fpi / Math.max(1, g.before.length), 3),
    governed_source_fpi_per_write_during: round(g.wal.during.fpi / Math.max(1, g.during.length), 3),
    governed_source_checkpoints_during: g.wal.during.checkpoints,
    governed_busy_cores_before: round(g.cores.before, 2),
    governed_busy_cores_during: round(g.cores.during, 2),
  };
}

async function shardIdOf(fleet: BenchFleet, table: string): Promise<number | undefined> {
  const { rows } = await fleet.catalog.query<{ id: number }>(
    'select s.id::int as id from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = $1',
    [table],
  );
  return rows[0]?.id;
}

/** Writers incrementing random rows through the router; every acknowledged increment is counted per key. */
export class ForegroundLoad {
  private running = false;
  private workers: Promise<void>[] = [];
  private readonly acknowledged = new Map<number, number>();
  private readonly samples = new Map<string, number[]>();
  errors = 0;

  constructor(
    private readonly router: Router,
    private readonly keys: number,
    private readonly writers: number,
    private readonly table = 'big',
  ) {}

  private current: number[] = [];

  /** From now on, the running writers' latencies count under `label`. */
  relabel(label: string): void {
    const samples = this.samples.get(label) ?? [];
    this.samples.set(label, samples);
    this.current = samples;
  }

  start(label: string): void {
    this.running = true;
    this.relabel(label);
    let seed = 7 + this.samples.size;
    this.workers = Array.from({ length: this.writers }, async () => {
      while (this.running) {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        const key = 1 + (seed % this.keys);
        const t = process.hrtime.bigint();
        try {
          await this.router.forKey(this.table, key).query(`update ${this.table} set n = n + 1 where id = $1`, [key]);
          this.current.push(Number(process.hrtime.bigint() - t) / 1e6);
          this.acknowledged.set(key, (this.acknowledged.get(key) ?? 0) + 1);
        } catch {
          this.errors++;
        }
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  latencies(label: string): number[] {
    return [...(this.samples.get(label) ?? [])].sort((a, b) => a - b);
  }

  /** Compares every key's counter with its acknowledged increments. */
  async account(db: pg.Pool, schema: string, table: string): Promise<{ acknowledged: number; lost: number; duplicated: number }> {
    const keys = [...this.acknowledged.keys()];
    const { rows } = await db.query<{ id: string; n: string }>(`select id::text, n::text from ${quoteIdent(schema)}.${quoteIdent(table)} where id = any($1::bigint[])`, [keys]);
    const actual = new Map(rows.map((r) => [Number(r.id), Number(r.n)]));
    let lost = 0;
    let duplicated = 0;
    let acknowledged = 0;
    for (const [key, count] of this.acknowledged) {
      acknowledged += count;
      const n = actual.get(key) ?? 0;
      if (n < count) lost += count - n;
      if (n > count) duplicated += n - count;
    }
    return { acknowledged, lost, duplicated };
  }
}

/** COPY (binary) out of the source table and into an identical fresh table on the target. */
async function rawCopy(source: NodeRecord, target: NodeRecord, sourceSchema: string, columns: string): Promise<number> {
  const src = new pg.Client({ connectionString: source.dsn });
  const dst = new pg.Client({ connectionString: target.dsn });
  await Promise.all([src.connect(), dst.connect()]);
  try {
    await dst.query(`create schema bench_raw; create table bench_raw.big (${columns})`);
    const t0 = Date.now();
    await pipeline(
      src.query(copyTo(`copy ${quoteIdent(sourceSchema)}.big to stdout (format binary)`)),
      dst.query(copyFrom('copy bench_raw.big from stdin (format binary)')),
    );
    return (Date.now() - t0) / 1000;
  } finally {
    await Promise.all([src.end(), dst.end()]);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The cutover's fencing token lives on the movement's lease: the bench's hand-driven moves take one. */
async function leaseFor(fleet: BenchFleet, move: { source: NodeRecord; target: NodeRecord; shard: { shardId: number }; names: { gid: string } }): Promise<void> {
  const id = move.names.gid.slice('sc_mv_'.length);
  await acquireMovementLease(fleet.catalog, { id, operation: 'move', shardId: move.shard.shardId, sourceNodeId: move.source.id, targetNodeIds: [move.target.id] }, 100);
}
