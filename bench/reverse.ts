import { parseArgs } from 'node:util';
import { NodePools } from '../src/catalog/node-pools.js';
import { getNodeByName } from '../src/catalog/nodes.js';
import { cutover, fencedSchemaName } from '../src/movement/cutover.js';
import { acquireMovementLease, finishMovement } from '../src/movement/lease.js';
import { planMovement, type MovePlan } from '../src/movement/plan.js';
import { movementNames, prepareTarget, resumeAutovacuum, shardTables, startStreaming, stopStreaming, streamProgress } from '../src/movement/replication.js';
import { applyReverse, reverseCutover, startReverseCapture, stopReverseCapture } from '../src/movement/reverse.js';
import { createRouter, type Router } from '../src/router/router.js';
import { quoteIdent } from '../src/sql/ident.js';
import { startBenchFleet, round } from './fleet.js';
import { ForegroundLoad } from './move.js';

/**
 * Fail-back without a second copy (issue 9 §4): a large shard moved while the application writes
 * through the router, its fenced copy kept in sync from the new placement as the drop-fenced-copy
 * child does, then moved back within the grace period. Prints the move back's write block
 * (reverse_block_ms) and its time from request to done (reverse_total_s), and every acknowledged
 * write accounted for on the shard's final placement.
 */
export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: 'string', default: '2000000' },
      writers: { type: 'string', default: '4' },
      grace: { type: 'string', default: '10' },
    },
  });
  const rows = Number(values.rows);
  const writerCount = Number(values.writers);
  const graceSeconds = Number(values.grace);
  const fleet = await startBenchFleet(2);
  const pools = new NodePools();
  let router: Router | undefined;
  try {
    await fleet.createTable({ name: 'big', columns: 'id bigint primary key, payload text not null, n bigint not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    const node1 = await getNodeByName(fleet.catalog, 'node-1');
    const node2 = await getNodeByName(fleet.catalog, 'node-2');
    const { rows: ids } = await fleet.catalog.query<{ id: number }>('select id::int from shardcast.shards limit 1');
    const shard = await shardTables(fleet.catalog, ids[0]!.id);
    const load = pools.get(node1.dsn);
    await load.query(`insert into ${quoteIdent(shard.schema)}.big select g, repeat(md5(g::text), 3), 0 from generate_series(1, $1::bigint) g`, [rows]);
    await load.query('vacuum analyze');
    console.log(`loaded ${rows} rows`);

    router = await createRouter({ catalogUrl: fleet.catalogUrl, poolSize: writerCount + 2 });
    const writers = new ForegroundLoad(router, rows, writerCount);
    writers.start('all');

    // The move, as the workflow runs it: copy and stream, the reverse stream before the cutover, cutover, cleanup.
    const forwardId = `bench_fw_${Date.now().toString(36)}`;
    const forward = { source: node1, target: node2, shard, names: movementNames(forwardId) };
    await acquireMovementLease(fleet.catalog, { id: forwardId, operation: 'move', shardId: shard.shardId, sourceNodeId: node1.id, targetNodeIds: [node2.id] }, 100);
    const moveStart = Date.now();
    await prepareTarget(pools, node2, shard);
    await startStreaming(pools, forward, shard, forward.names);
    for (;;) {
      const p = await streamProgress(pools, forward, shard, forward.names);
      if (p.tables > 0 && p.tablesReady === p.tables && p.lagBytes !== null && p.lagBytes < 1024 * 1024) break;
      await sleep(100);
    }
    await startReverseCapture(pools, node2, shard, forwardId);
    const forwardCut = await cutover({ catalogUrl: fleet.catalogUrl, pools }, forward, { verify: 'counts' });
    await stopStreaming(pools, forward, forward.names);
    await resumeAutovacuum(pools, node2, shard.schema, shard.tables.map((t) => t.name));
    await finishMovement(fleet.catalog, forwardId, 'done');
    console.log(`moved in ${((Date.now() - moveStart) / 1000).toFixed(1)} s (writes blocked ${forwardCut.blockedMs} ms)`);

    // The grace period: the fenced copy follows the new placement (the child's activity, in slices).
    const stream = { movementId: forwardId, placement: node2, fenced: node1, fencedSchema: fencedSchemaName(shard.schema, forwardId) };
    let following = true;
    let followed = 0;
    const follower = (async () => {
      while (following) {
        try {
          followed += (await applyReverse(pools, stream, { deadline: Date.now() + 1000 })).changes;
        } catch (err) {
          if (following) throw err; // once moved back, the stream it follows is dropped under it
        }
        await sleep(200);
      }
    })();
    await sleep(graceSeconds * 1000);

    // The move back within the grace period: request to done.
    const backId = `bench_bk_${Date.now().toString(36)}`;
    const requested = Date.now();
    const plan = (await planMovement({ catalog: fleet.catalog, nodePools: pools }, { movementId: backId, workflowId: 'bench', shardId: shard.shardId, maxMovesPerNode: 100, reverseOf: forwardId })) as MovePlan;
    if (!plan.reverse) throw new Error(`the move back would not be a cutover only: ${plan.reverseFallback}`);
    const back = await reverseCutover({ catalogUrl: fleet.catalogUrl, pools }, plan, stream, {});
    following = false;
    await stopStreaming(pools, plan, plan.names);
    await stopReverseCapture(pools, node2, forwardId);
    await finishMovement(fleet.catalog, backId, 'done');
    const totalS = (Date.now() - requested) / 1000;
    await follower;

    await sleep(2000); // writers go on at the old placement
    await writers.stop();
    const { rows: placed } = await fleet.catalog.query<{ node_id: number }>('select node_id::int from shardcast.placements where shard_id = $1', [shard.shardId]);
    if (placed[0]!.node_id !== node1.id) throw new Error('the shard is not back on node-1');
    const account = await writers.account(load, shard.schema, 'big');
    console.log(
      JSON.stringify({
        rows,
        writers: writerCount,
        grace_followed_changes: followed,
        reverse_applied_at_cutover: back.applied,
        // Writes wait twice: while the snapshots for the counts are taken, and at the cutover; the longer of the two.
        reverse_block_ms: Math.max(back.blockedMs, back.snapshotBlockedMs),
        reverse_snapshot_block_ms: back.snapshotBlockedMs,
        reverse_cutover_block_ms: back.blockedMs,
        reverse_total_s: round(totalS, 2),
        reverse_steps_ms: back.steps,
        acknowledged: account.acknowledged,
        lost_writes: account.lost,
        duplicate_writes: account.duplicated,
        write_errors: writers.errors,
      }),
    );
  } finally {
    await router?.close();
    await pools.end();
    await fleet.stop();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
