import { createInterface } from 'node:readline';
import type { NodeRecord } from '../src/catalog/nodes.js';
import { NodePools } from '../src/catalog/node-pools.js';
import { DEFAULT_GOVERNOR, Governor, resolveGovernor } from '../src/movement/governor.js';
import { copyMove, paceSubscription, prepareTarget, startStreaming, streamProgress, type MovementNames, type ShardTables } from '../src/movement/replication.js';

/**
 * The governed move's copy and catch-up, run by bench/move.ts in a process of its own, as the worker
 * runs it beside the application (not in the application's event loop, where the copy's stream
 * handling would delay the foreground's own replies). Reads the move from stdin; prints its trace and,
 * last, one JSON line with its times.
 */
export interface GovernedCopyInput {
  source: NodeRecord;
  target: NodeRecord;
  shard: ShardTables;
  names: MovementNames;
}

export interface GovernedCopyResult {
  copySeconds: number;
  readySeconds: number;
  throttledMs: number;
  applyThrottledMs: number;
}

async function main(): Promise<void> {
  // Two lines on stdin: the move, then "go" once the parent measures (loading this process is no part of the copy).
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const m = JSON.parse((await lines.next()).value as string) as GovernedCopyInput;
  const pools = new NodePools();
  console.log('ready');
  await lines.next();
  try {
    const t0 = Date.now();
    await prepareTarget(pools, m.target, m.shard);
    await startStreaming(pools, m, m.shard, m.names, { copy: 'own' });
    // BENCH_GOVERNOR (JSON): settings over the defaults, for tuning them.
    const settings = resolveGovernor(process.env.BENCH_GOVERNOR ? (JSON.parse(process.env.BENCH_GOVERNOR) as Partial<typeof DEFAULT_GOVERNOR>) : {}, DEFAULT_GOVERNOR);
    const governor = new Governor(settings, [m.source.dsn, m.target.dsn]);
    const trace = setInterval(() => console.log(`governed copy: duty ${governor.dutyCycle().toFixed(2)}, verdict ${JSON.stringify(governor.verdict())}`), 2000);
    const copied = await copyMove(pools, m, m.shard, m.names, { governor }).finally(() => clearInterval(trace));
    const copySeconds = (Date.now() - t0) / 1000;
    console.log('copied');
    // The catch-up as the workflow runs it: the subscription's apply paced by the governor (against the copy's baselines).
    const applying = new Governor(settings, [m.source.dsn, m.target.dsn]);
    await applying.start(governor.baselines());
    let applyThrottledMs = 0;
    try {
      for (;;) {
        const p = await streamProgress(pools, m, m.shard, m.names);
        if (p.tables > 0 && p.tablesReady === p.tables && p.lagBytes !== null && p.lagBytes < 1024 * 1024) break;
        applyThrottledMs += await paceSubscription(pools, m, m.shard, m.names, applying, Date.now() + 500);
      }
    } finally {
      await applying.stop();
    }
    const result: GovernedCopyResult = { copySeconds, readySeconds: (Date.now() - t0) / 1000, throttledMs: copied.throttledMs ?? 0, applyThrottledMs };
    console.log(JSON.stringify(result));
  } finally {
    await pools.end();
    process.stdin.destroy();
  }
}

await main();
