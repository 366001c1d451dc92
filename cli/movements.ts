/**
 * Movements: `move`, `split`, `merge` (each a Temporal workflow), the signals a running one takes
 * (`pause`, `resume`, `approve`, `reject`, `cancel`) and `movements`, the list with progress.
 */
import { InvalidArgumentError, type Command } from 'commander';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { MovementOptions, ShardcastClientOptions } from '../client/index.js';
import type { Config } from '../src/config.js';
import { InvalidInputError } from '../src/errors.js';
import type { MovementProgress } from '../workflows/messages.js';
import { governorRatio, graceSeconds, pollSeconds, shardId } from './args.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

interface MovementFlags {
  /** false with --no-governor. */
  governor?: boolean;
  governorRatio?: number;
  requireApproval?: boolean;
  grace?: number;
  follow?: boolean;
  interval: number;
  wait: boolean;
}

const DEFAULT_INTERVAL_SECONDS = 0.5;

/** The workflow-id helpers and the signals, loaded with the Temporal client when a command needs them. */
const temporalModules = () => Promise.all([import('../client/index.js'), import('../workflows/messages.js')]);

/** A movement named by its shard id or its workflow id. */
async function movementHandle(client: Client, movement: string): Promise<WorkflowHandle> {
  const { moveWorkflowId } = await import('../workflows/describe.js');
  return client.workflow.getHandle(/^\d+$/.test(movement) ? moveWorkflowId(Number(movement)) : movement);
}

export function describeProgress(p: MovementProgress): string {
  if (p.phase === 'queued' && p.queued) {
    return `${'queued'.padEnd(10)} waiting for a slot on ${p.queued.node}: ${p.queued.running} running, limit ${p.queued.limit}${p.paused ? ' (paused)' : ''}`;
  }
  const mb = (b: number | null): string => (b === null ? '?' : `${(b / 1048576).toFixed(1)} MB`);
  if (p.phase === 'verify' && p.rowsVerified !== undefined) {
    const total = Math.max(p.rowsToVerify ?? 0, p.rowsVerified);
    const bar = total > 0 ? `[${'#'.repeat(Math.round((10 * p.rowsVerified) / total)).padEnd(10, '.')}]` : '[..........]';
    const eta = p.etaSeconds !== null ? `, eta ${p.etaSeconds}s` : '';
    return `${p.phase.padEnd(10)} ${bar} ${p.rowsVerified} of ~${total} rows verified${eta}, writes blocked ${p.verifyBlockedMs ?? 0} ms${p.paused ? ' (paused)' : ''}`;
  }
  const bar = p.tables > 0 ? `[${'#'.repeat(Math.round((10 * p.tablesReady) / p.tables)).padEnd(10, '.')}]` : '[..........]';
  const throttled = p.throttledMs ? `, throttled ${(p.throttledMs / 1000).toFixed(1)}s` : '';
  return `${p.phase.padEnd(10)} ${bar} ${p.rowsCopied} rows, ${mb(p.bytesCopied)} copied, lag ${mb(p.lagBytes)}${p.etaSeconds !== null ? `, eta ${p.etaSeconds}s` : ''}${throttled}${p.paused ? ' (paused)' : ''}`;
}

/** Prints the movement's progress every `intervalSeconds` until it ends: one updating line on a terminal, a line per change otherwise. */
async function follow(handle: WorkflowHandle, intervalSeconds: number): Promise<void> {
  const { movementProgressQuery } = await import('../workflows/messages.js');
  let last = '';
  let done = false;
  const result = handle.result().finally(() => (done = true));
  result.catch(() => undefined);
  while (!done) {
    const line = await handle.query(movementProgressQuery).then(describeProgress, () => last);
    if (line !== last) {
      if (process.stdout.isTTY) process.stdout.write(`\r${line.padEnd(90)}`);
      else console.log(line);
      last = line;
    }
    await new Promise((r) => setTimeout(r, intervalSeconds * 1000));
  }
  if (process.stdout.isTTY) process.stdout.write('\n');
}

function movementOptions(cfg: Config, opts: MovementFlags, base: MovementOptions): MovementOptions {
  return {
    ...base,
    approvalRequired: opts.requireApproval ?? base.approvalRequired,
    graceSeconds: opts.grace ?? base.graceSeconds,
    governor: {
      ...base.governor,
      ...(opts.governor === false ? { enabled: false } : {}),
      ...(opts.governorRatio !== undefined ? { latencyRatio: opts.governorRatio } : {}),
    },
  };
}

/** Starts a movement, then (unless --no-wait) follows it and prints its outcome. */
async function runMovement(cfg: Config, opts: MovementFlags, start: (options: ShardcastClientOptions, settings: MovementOptions) => Promise<WorkflowHandle>): Promise<void> {
  const [{ clientOptionsFromConfig, moveResult }] = await temporalModules();
  const { movementSettings } = await import('../src/config.js');
  await withTemporal(cfg, async (client) => {
    const handle = await start(clientOptionsFromConfig(client, cfg), movementOptions(cfg, opts, movementSettings(cfg)));
    console.log(`started ${handle.workflowId}`);
    if (!opts.wait) return;
    if (opts.follow) await follow(handle, opts.interval);
    const r = await moveResult(handle);
    const what =
      r.operation === 'split' ? `split shard ${r.shardId} into ${r.shards.join(' and ')}` : r.operation === 'merge' ? `merged into shard ${r.shards[0]}` : `moved shard ${r.shardId}`;
    const dropped = `${r.fencedCopy.dropAt.slice(11, 19)} UTC`;
    if (r.movedBack) {
      console.log(r.movedBack.cutoverOnly ? `moved back within the grace period of ${r.movedBack.of}: a cutover only, no copy` : `moved back by a full move (${r.movedBack.why ?? 'no reverse stream'})`);
    }
    console.log(`${what}: ${r.source} → ${r.target} (writes blocked ${r.cutoverBlockedMs} ms at cutover); done; fenced copy on ${r.fencedCopy.nodes} dropped at ${dropped}`);
  });
}

/**
 * "move shard 17 of orders: node-1 → node-2", from the catalog, for the Temporal UI. Undefined when
 * a shard is not found (the workflow then refuses the request with a clear message).
 */
async function movementSummary(cfg: Config, verb: string, shardIds: number[], targets: string[]): Promise<string | undefined> {
  const { shardLocations } = await import('../src/catalog/movements.js');
  return withCatalog(cfg, async (pool) => {
    const rows = await shardLocations(pool, shardIds);
    if (rows.length !== shardIds.length) return undefined;
    const to = targets.length > 0 ? targets.join(' + ') : rows[0]!.node;
    return `${verb} ${shardIds.length > 1 ? 'shards' : 'shard'} ${shardIds.join(' + ')} of ${rows[0]!.group}: ${[...new Set(rows.map((r) => r.node))].join(', ')} → ${to}`;
  });
}

function nodeList(value: string): [string, string] {
  const nodes = value.split(',').map((n) => n.trim());
  if (nodes.length !== 2 || nodes.some((n) => n === '')) throw new InvalidArgumentError('expected two node names, comma-separated (NODE,NODE)');
  return nodes as [string, string];
}

export function registerMovementCommands(program: Command): void {
  /** Options every movement command shares. */
  const movementCommand = (name: string, description: string): Command =>
    program
      .command(name)
      .description(description)
      .option('--require-approval', 'wait for `shardcast approve` before the cutover (default: movement.approvalRequired, false)')
      .option('--grace <seconds>', 'keep the fenced source copy this long after the cutover, 0 to 2592000 (default: movement.graceSeconds, 300)', graceSeconds)
      .option('--follow', 'show progress until the movement ends')
      .option('--interval <seconds>', 'with --follow: seconds between two looks at the progress, above 0 up to 60', pollSeconds, DEFAULT_INTERVAL_SECONDS)
      .option('--no-governor', 'copy at full speed, whatever the foreground pays (default: movement.governor.enabled, true)')
      .option('--governor-ratio <ratio>', 'hold the copy while the nodes\' latency exceeds this many times its idle value, 1 to 100 (default: movement.governor.latencyRatio, 1.5)', governorRatio)
      .option('--no-wait', 'start it and return (nothing is followed)');

  movementCommand('move', 'move a shard (its whole colocation group) to another node, online (a Temporal workflow)')
    .argument('[shard]', 'shard id', shardId)
    .option('--to <node>', 'target node')
    .option('--reverse <movement>', 'undo a finished movement (shard id or workflow id): move back (a cutover only within the grace period), merge a split, split a merge')
    .option('--no-fallback', 'with --reverse: refuse (and change nothing) when the move back cannot be a cutover only, instead of copying in full')
    .action(async (shard: number | undefined, opts: MovementFlags & { to?: string; reverse?: string; fallback: boolean }) => {
      const cfg = await configOf(program);
      const { startMerge, startMove, startSplit, moveResult } = await import('../client/index.js');
      if (opts.reverse !== undefined) {
        if (shard !== undefined || opts.to !== undefined) throw new InvalidInputError('--reverse takes the movement only: no shard, no --to');
        const reverse = await withTemporal(cfg, async (client) => (await moveResult(await movementHandle(client, opts.reverse!))).reverse);
        await runMovement(cfg, opts, (o, settings) =>
          reverse.operation === 'move'
            ? startMove(o, { ...settings, shardId: reverse.shardId, targetNode: reverse.targetNode, reverseOf: reverse.of, reverseFallback: opts.fallback })
            : reverse.operation === 'merge'
              ? startMerge(o, { ...settings, shardIds: reverse.shardIds, targetNode: reverse.targetNode })
              : startSplit(o, { ...settings, shardId: reverse.shardId, targetNodes: reverse.splitTargets, at: reverse.splitAt }),
        );
        return;
      }
      if (shard === undefined || opts.to === undefined) throw new InvalidInputError('give a shard and --to NODE (or --reverse MOVEMENT)');
      const { precheckMove } = await import('../src/movement/plan.js');
      await withCatalog(cfg, (pool) => precheckMove(pool, shard, opts.to!)); // a typo is one line, and no failed run
      const summary = await movementSummary(cfg, 'move', [shard], [opts.to]);
      await runMovement(cfg, opts, (o, settings) => startMove(o, { ...settings, summary, shardId: shard, targetNode: opts.to! }));
    });

  movementCommand('split', 'split a shard in two at a hash value or key, each half to a node of choice, online')
    .argument('<shard>', 'shard id', shardId)
    .requiredOption('--to <nodes>', 'nodes of the lower and upper half: NODE,NODE (the same node twice is allowed)', nodeList)
    .option('--at <value>', 'hash tables: last hash value of the lower half (default: the middle); range tables: first key of the upper half')
    .action(async (shard: number, opts: MovementFlags & { to: [string, string]; at?: string }) => {
      const cfg = await configOf(program);
      const [{ startSplit }, { checkSplit }] = await Promise.all([import('../client/index.js'), import('../src/movement/reshard-plan.js')]);
      await withCatalog(cfg, (pool) => checkSplit(pool, { shardId: shard, targetNodes: opts.to, at: opts.at })); // a typo is one line, and no failed run
      const summary = await movementSummary(cfg, 'split', [shard], opts.to);
      await runMovement(cfg, opts, (o, settings) => startSplit(o, { ...settings, summary, shardId: shard, targetNodes: opts.to, at: opts.at }));
    });

  movementCommand('merge', 'merge two adjacent shards of a colocation group into one, online')
    .argument('<shard>', 'shard id', shardId)
    .argument('<other>', 'the adjacent shard', shardId)
    .option('--to <node>', 'node of the merged shard (default: the lower shard’s node)')
    .action(async (shard: number, other: number, opts: MovementFlags & { to?: string }) => {
      const cfg = await configOf(program);
      const [{ startMerge }, { checkMerge }] = await Promise.all([import('../client/index.js'), import('../src/movement/reshard-plan.js')]);
      await withCatalog(cfg, (pool) => checkMerge(pool, { shardIds: [shard, other], targetNode: opts.to })); // a typo is one line, and no failed run
      const summary = await movementSummary(cfg, 'merge', [Math.min(shard, other), Math.max(shard, other)], opts.to ? [opts.to] : []);
      await runMovement(cfg, opts, (o, settings) => startMerge(o, { ...settings, summary, shardIds: [shard, other], targetNode: opts.to }));
    });

  for (const [name, signalName, description] of [
    ['pause', 'pauseSignal', 'pause a movement at its next safe point (stops consuming the source)'],
    ['resume', 'resumeSignal', 'resume a paused movement'],
    ['approve', 'approveSignal', 'let a movement waiting at its approval gate cut over'],
    ['reject', 'rejectSignal', 'reject a movement: it is undone'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .argument('<movement>', 'shard id or workflow id')
      .action(async (movement: string) => {
        const cfg = await configOf(program);
        const messages = await import('../workflows/messages.js');
        await withTemporal(cfg, async (client) => {
          const handle = await movementHandle(client, movement);
          await handle.signal(messages[signalName]);
          console.log(`${name}: sent to ${handle.workflowId}`);
        });
      });
  }

  program
    .command('cancel')
    .description('cancel a movement: before its cutover it is undone')
    .argument('<movement>', 'shard id or workflow id')
    .action(async (movement: string) => {
      await withTemporal(await configOf(program), async (client) => {
        const handle = await movementHandle(client, movement);
        await handle.cancel();
        console.log(`cancel: requested for ${handle.workflowId}`);
      });
    });

  program
    .command('movements')
    .description('movements with their phase and progress; with a movement, that one only')
    .argument('[movement]', 'shard id or workflow id')
    .option('--json', 'machine-readable output')
    .option('--follow', 'with a movement: show its progress until it ends')
    .option('--interval <seconds>', 'with --follow: seconds between two looks at the progress, above 0 up to 60', pollSeconds, DEFAULT_INTERVAL_SECONDS)
    .action(async (movement: string | undefined, opts: { json?: boolean; follow?: boolean; interval: number }) => {
      if (opts.follow && movement === undefined) throw new InvalidInputError('--follow follows one movement: give it (shardcast movements MOVEMENT --follow)');
      const cfg = await configOf(program);
      if (movement !== undefined) {
        const { movementProgressQuery } = await import('../workflows/messages.js');
        await withTemporal(cfg, async (client) => {
          const handle = await movementHandle(client, movement);
          if (opts.follow) return follow(handle, opts.interval);
          const progress = await handle.query(movementProgressQuery);
          console.log(opts.json ? JSON.stringify({ workflowId: handle.workflowId, ...progress }, null, 2) : `${handle.workflowId}  ${describeProgress(progress)}`);
        });
        return;
      }
      const [[{ clientOptionsFromConfig, listQueuedMovements }, { movementProgressQuery }], { recentMovements }, { printTable }] = await Promise.all([
        temporalModules(),
        import('../src/catalog/movements.js'),
        import('./format.js'),
      ]);
      const rows = await withCatalog(cfg, (pool) => recentMovements(pool, 50));
      const withProgress = await withTemporal(cfg, async (client) => {
        // Queued movements hold no lease yet: Temporal knows them, the catalog does not.
        const queued = (await listQueuedMovements(clientOptionsFromConfig(client, cfg))).map((q) => ({
          id: q.workflowId,
          operation: q.operation,
          shard: q.shardId,
          source: '',
          targets: q.targets,
          state: 'queued',
          workflow_id: q.workflowId,
          started: q.since,
          progress: `waiting for a slot on ${q.node}: ${q.running} running, limit ${q.limit}`,
        }));
        const leased = await Promise.all(
          rows.map(async (r) => {
            const progress =
              r.state === 'running' && r.workflowId
                ? await client.workflow.getHandle(r.workflowId).query(movementProgressQuery).then(describeProgress, () => '(no answer)')
                : '';
            return { id: r.id, operation: r.operation, shard: r.shard, source: r.source, targets: r.targets, state: r.state, workflow_id: r.workflowId, started: r.startedAt.toISOString(), progress };
          }),
        );
        return [...queued, ...leased];
      });
      if (opts.json) console.log(JSON.stringify(withProgress, null, 2));
      else printTable('movements', withProgress, ['id', 'operation', 'shard', 'source', 'targets', 'state', 'started', 'progress']);
    });
}
