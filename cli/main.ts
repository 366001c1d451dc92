import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import pg from 'pg';
import {
  clientOptionsFromConfig,
  connectTemporal,
  createDistributedTable,
  listQueuedMovements,
  moveResult,
  moveWorkflowId,
  startMerge,
  startMove,
  startSplit,
  type MovementOptions,
  type ShardcastClientOptions,
} from '../client/index.js';
import { approveSignal, movementProgressQuery, pauseSignal, rejectSignal, resumeSignal, type MovementProgress } from '../workflows/messages.js';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { assertMigrated, migrate } from '../src/catalog/migrate.js';
import { addNode, checkNodeReachable, listNodes, NODE_STATES, redactDsn, type NodeState } from '../src/catalog/nodes.js';
import { listShards, listTables, mapVersion, type TableSpec } from '../src/catalog/tables.js';
import { loadConfig, localUrl, movementSettings, plannerSettings, type Config } from '../src/config.js';
import { InvalidInputError, ShardcastError, errorMessage } from '../src/errors.js';
import { resolveTemporalCli } from '../src/fleet/temporal-cli.js';
import { doctor, recordDoctorRun, summarize } from '../src/movement/doctor.js';
import { guardPool, NodePools } from '../src/catalog/node-pools.js';
import { workflowStateOf } from '../client/doctor.js';
import { listenAddress, nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { printDoctorReport } from './doctor.js';
import { registerBackupCommands } from './backup.js';
import { registerForecastCommands } from './forecast.js';
import { precheckMove } from '../src/movement/plan.js';
import { nodeOutlook, registerPlanCommands } from './plan.js';
import { registerSecurityCommands } from './security.js';
import { configOf, metricsListenOverrides, temporalAddressOf, withTemporal } from './program-config.js';
import { registerSimulateCommands } from './simulate.js';
import { describeHealth, nodeHealth } from '../src/profiling/collector.js';
import { printTable } from './format.js';
import { createUpLog, startStack } from './stack.js';

interface GlobalOptions {
  config?: string;
  catalogUrl?: string;
  temporalAddress?: string;
  verbose?: boolean;
}

const program = new Command('shardcast')
  .description('Keeps a sharded PostgreSQL fleet balanced before load arrives.')
  .option('-c, --config <file>', 'configuration file (JSON or YAML); default shardcast.config.{json,yaml} or $SHARDCAST_CONFIG')
  .option('--catalog-url <url>', 'use this catalog database instead of the embedded one')
  .option('--temporal-address <host:port>', 'use this Temporal server instead of the embedded dev server')
  .option('-v, --verbose', 'print stack traces with errors')
  .showHelpAfterError('(add --help for usage)')
  .exitOverride();

function config(): Config {
  const opts = program.opts<GlobalOptions>();
  return loadConfig({ file: opts.config, overrides: { 'catalog.url': opts.catalogUrl, 'temporal.address': opts.temporalAddress } });
}

function catalogUrlOf(cfg: Config): string {
  return cfg.catalog.url ?? localUrl(cfg, cfg.catalog.port, cfg.catalog.database);
}

/** Runs `fn` with a catalog pool, closed afterwards; the catalog must be migrated (or, with `migrateFirst`, is). */
async function withCatalog<T>(fn: (pool: pg.Pool, cfg: Config) => Promise<T>, migrateFirst = false): Promise<T> {
  const cfg = config();
  const url = catalogUrlOf(cfg);
  const pool = guardPool(new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5000, application_name: 'shardcast-cli' }));
  try {
    const client = await pool.connect().catch((err: unknown) => {
      throw new ShardcastError(
        'CATALOG_UNAVAILABLE',
        `cannot connect to the catalog at ${redactDsn(url)}: ${errorMessage(err)} (is \`shardcast up\` running?)`,
        { cause: err },
      );
    });
    try {
      if (migrateFirst) await migrate(client);
      else await assertMigrated(client);
    } finally {
      client.release();
    }
    return await fn(pool, cfg);
  } finally {
    await pool.end();
  }
}

function list(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
}

program
  .command('up')
  .description('start the catalog, nodes, Temporal dev server (with UI), the workers and metrics; Ctrl-C stops everything')
  .action(async () => {
    const cfg = config();
    const log = createUpLog(cfg.dataDir);
    const stack = await startStack(cfg, { embedded: true, log });
    log('shardcast: ready');
    await waitForSignal();
    // A second Ctrl-C (or npm forwarding the terminal's) must not cut the shutdown short.
    const again = (): void => log('shardcast: already stopping');
    process.on('SIGINT', again);
    process.on('SIGTERM', again);
    log('shardcast: stopping');
    await stack.stop();
    log('shardcast: stopped');
  });

program
  .command('worker')
  .description('run the workers and metrics against an existing catalog and Temporal server (a real deployment)')
  .option('--metrics-listen <host:port>', 'serve /metrics here (default 127.0.0.1:9464, metrics.host and metrics.port); 0.0.0.0:9464 opens it to the network', listenAddress)
  .action(async (opts: { metricsListen?: string }) => {
    const cfg = configOf(program, metricsListenOverrides(opts.metricsListen));
    if (!cfg.catalog.url) throw new ShardcastError('CONFIG', 'config: catalog.url: required for `shardcast worker` (or SHARDCAST_CATALOG_URL)');
    if (!cfg.temporal.address) throw new ShardcastError('CONFIG', 'config: temporal.address: required for `shardcast worker` (or SHARDCAST_TEMPORAL_ADDRESS)');
    const stack = await startStack(cfg, { embedded: false, log: (l) => console.log(l) });
    console.log('shardcast: ready');
    await waitForSignal();
    await stack.stop();
  });

program
  .command('status')
  .description('nodes (capacity, observed and predicted utilisation, health), tables, shards per node and the map version')
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean }) => {
    await withCatalog(async (pool, cfg) => {
      const [nodes, tables, shards, version, health] = await Promise.all([listNodes(pool), listTables(pool), listShards(pool), mapVersion(pool), nodeHealth(pool)]);
      const perNode = new Map<string, number>();
      for (const s of shards) perNode.set(s.node, (perNode.get(s.node) ?? 0) + 1);
      const healthOf = new Map(health.map((h) => [h.node, h]));
      const outlook = await nodeOutlook(pool, plannerSettings(cfg));
      const nodeRows = nodes.map((n) => {
        const o = outlook.get(n.name);
        return {
          ...n,
          capacity: o?.capacity ?? n.capacity,
          capacityBasis: o?.basis ?? (n.capacity === null ? 'unknown' : 'override'),
          // as the table shows them: a calibrated capacity says so; '-' where none is known yet
          shown: o?.capacity !== undefined ? `${o.capacity.toPrecision(4)}${o.basis === 'override' ? '' : ` (${o.basis})`}` : n.capacity === null ? 'auto' : String(n.capacity),
          observedUtilisation: o?.observed ?? null,
          predictedPeakUtilisation: o?.predictedPeak ?? null,
          dsn: redactDsn(n.dsn),
          shards: perNode.get(n.name) ?? 0,
          reachable: healthOf.get(n.name)?.reachable ?? null,
          health: describeHealth(healthOf.get(n.name)),
        };
      });
      if (opts.json) {
        console.log(JSON.stringify({ mapVersion: version, nodes: nodeRows.map(({ shown: _, ...n }) => n), tables, shards: shards.length }, null, 2));
        return;
      }
      console.log(`map version ${version}\n`);
      const pctOf = (v: number | null) => (v === null ? '-' : `${Math.round(v * 100)}%`);
      printTable(
        'nodes',
        nodeRows.map((n) => ({ ...n, capacity: n.shown, util: pctOf(n.observedUtilisation), 'predicted peak': pctOf(n.predictedPeakUtilisation) })),
        ['name', 'state', 'region', 'zone', 'capacity', 'util', 'predicted peak', 'shards', 'health', 'dsn'],
      );
      console.log();
      printTable('tables', tables, ['name', 'group', 'method', 'keyColumn', 'keyType', 'shards', 'nodes', 'state']);
    });
  });

const nodes = program.command('nodes').description('PostgreSQL servers that hold shards');
nodes
  .command('add')
  .description('register a node (its connection is checked first; a second name for a registered database is refused)')
  .argument('<name>', 'node name: lower-case letters, digits, - and _')
  .requiredOption('--dsn <url>', 'postgres:// URL of the node database')
  .option('--region <region>')
  .option('--zone <zone>')
  .option('--capacity <units>', 'capacity in load units (default: calibrated from the node\'s own history)', positiveNumber)
  .addOption(new Option('--state <state>', 'initial state').choices([...NODE_STATES]).default('active'))
  .option('--no-check', 'skip the capability checks, and register the node even if it does not answer now')
  .action(async (name: string, opts: { dsn: string; region?: string; zone?: string; capacity?: number; state: NodeState; check: boolean }) => {
    await withCatalog(async (pool) => {
      const spec = { name, dsn: opts.dsn, region: opts.region, zone: opts.zone, capacity: opts.capacity, state: opts.state };
      if (opts.check) for (const warning of await checkNodeReachable(spec)) console.error(`warning: node "${name}": ${warning}`);
      const node = await addNode(pool, spec, { unreachableOk: !opts.check });
      console.log(`added node ${node.name} (#${node.id}, ${node.state})`);
    });
  });
nodes
  .command('list')
  .description('list nodes')
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean }) => {
    await withCatalog(async (pool) => {
      const rows = (await listNodes(pool)).map((n) => ({ ...n, capacity: n.capacity ?? 'auto', dsn: redactDsn(n.dsn) }));
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else printTable('nodes', rows, ['name', 'state', 'region', 'zone', 'capacity', 'dsn']);
    });
  });

const tables = program.command('tables').description('distributed tables');
tables
  .command('create')
  .description('distribute a table: one schema per shard on its node (runs as a Temporal workflow)')
  .argument('<name>', 'table name: lower-case letters, digits and _')
  .requiredOption('--columns <definitions>', 'column and constraint definitions, as inside create table t (...)')
  .requiredOption('--key <column>', 'shard key column')
  .addOption(new Option('--method <method>', 'hash or range (a new colocation group)').choices(['hash', 'range']))
  .option('--shards <n>', 'hash: number of shards (default 8)', positiveInt)
  .option('--bounds <b0,b1,...>', 'range: ascending bounds; shards are [b0,b1), [b1,b2), ...', list)
  .option('--colocate-with <table>', 'join the colocation group of this existing table')
  .option('--nodes <n1,n2,...>', 'place the new group on these nodes (default: every active node)', list)
  .option('--json', 'machine-readable output')
  .action(
    async (
      name: string,
      opts: { columns: string; key: string; method?: 'hash' | 'range'; shards?: number; bounds?: string[]; colocateWith?: string; nodes?: string[]; json?: boolean },
    ) => {
      const spec: TableSpec = {
        name,
        columns: opts.columns,
        shardKey: opts.key,
        method: opts.method ?? (opts.bounds ? 'range' : opts.colocateWith ? undefined : 'hash'),
        shardCount: opts.shards,
        rangeBounds: opts.bounds,
        colocateWith: opts.colocateWith,
        nodes: opts.nodes,
      };
      await withCatalog(async (_pool, cfg) => {
        const client = await connectTemporal(temporalAddressOf(cfg), cfg.temporal.namespace, cfg);
        try {
          const result = await createDistributedTable(clientOptionsFromConfig(client, cfg), spec);
          if (opts.json) console.log(JSON.stringify(result, null, 2));
          else
            console.log(
              `created ${result.table}: ${result.shards} shard(s) on ${result.nodes.join(', ')} (group ${result.group}, map version ${result.mapVersion})`,
            );
        } finally {
          await client.connection.close();
        }
      });
    },
  );
tables
  .command('list')
  .description('list distributed tables')
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean }) => {
    await withCatalog(async (pool) => {
      const rows = await listTables(pool);
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else printTable('tables', rows, ['name', 'group', 'method', 'keyColumn', 'keyType', 'shards', 'nodes', 'state']);
    });
  });

program
  .command('shards')
  .description('shards')
  .command('list')
  .description('list shards with their node and range')
  .option('--table <name>', 'only the shards of this table')
  .option('--node <name>', 'only the shards on this node')
  .option('--json', 'machine-readable output')
  .action(async (opts: { table?: string; node?: string; json?: boolean }) => {
    await withCatalog(async (pool) => {
      const rows = (await listShards(pool, opts)).map((s) => ({ ...s, tables: s.tables.join(',') }));
      if (opts.json) console.log(JSON.stringify(rows, null, 2));
      else printTable('shards', rows, ['shardId', 'schema', 'group', 'tables', 'node', 'range']);
    });
  });

function shardId(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a shard id (a positive integer)');
  return n;
}

/** A movement named by its shard id or its workflow id. */
function movementHandle(client: Client, movement: string): WorkflowHandle {
  return client.workflow.getHandle(/^\d+$/.test(movement) ? moveWorkflowId(Number(movement)) : movement);
}

function describeProgress(p: MovementProgress): string {
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
  return `${p.phase.padEnd(10)} ${bar} ${p.rowsCopied} rows, ${mb(p.bytesCopied)} copied, lag ${mb(p.lagBytes)}${p.etaSeconds !== null ? `, eta ${p.etaSeconds}s` : ''}${p.paused ? ' (paused)' : ''}`;
}

/** Prints the movement's progress until it ends: one updating line on a terminal, a line per change otherwise. */
async function follow(handle: WorkflowHandle): Promise<void> {
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
    await new Promise((r) => setTimeout(r, 500));
  }
  if (process.stdout.isTTY) process.stdout.write('\n');
}

interface MovementFlags {
  requireApproval?: boolean;
  grace?: number;
  follow?: boolean;
  wait: boolean;
}

/** Options every movement command shares. */
function movementCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--require-approval', 'wait for `shardcast approve` before the cutover')
    .option('--grace <seconds>', 'keep the fenced source copy this long after the cutover', nonNegativeInt)
    .option('--follow', 'show progress until the movement ends')
    .option('--no-wait', 'start it and return');
}

function movementOptions(cfg: Config, opts: MovementFlags): MovementOptions {
  const base = movementSettings(cfg);
  return { ...base, approvalRequired: opts.requireApproval ?? base.approvalRequired, graceSeconds: opts.grace ?? base.graceSeconds };
}

/** Starts a movement, then (unless --no-wait) follows it and prints its outcome. */
async function runMovement(cfg: Config, opts: MovementFlags, start: (options: ShardcastClientOptions) => Promise<WorkflowHandle>): Promise<void> {
  await withTemporal(cfg, async (client) => {
    const handle = await start(clientOptionsFromConfig(client, cfg));
    console.log(`started ${handle.workflowId}`);
    if (!opts.wait) return;
    if (opts.follow) await follow(handle);
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
async function movementSummary(verb: string, shardIds: number[], targets: string[]): Promise<string | undefined> {
  return withCatalog(async (pool) => {
    const { rows } = await pool.query<{ id: number; grp: string; node: string }>(
      `select s.id::int as id, g.name as grp, n.name as node from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id
         join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id where s.id = any($1::bigint[]) order by s.id`,
      [shardIds],
    );
    if (rows.length !== shardIds.length) return undefined;
    const to = targets.length > 0 ? targets.join(' + ') : rows[0]!.node;
    return `${verb} ${shardIds.length > 1 ? 'shards' : 'shard'} ${shardIds.join(' + ')} of ${rows[0]!.grp}: ${[...new Set(rows.map((r) => r.node))].join(', ')} → ${to}`;
  });
}

function nodeList(value: string): [string, string] {
  const nodes = value.split(',').map((n) => n.trim());
  if (nodes.length !== 2 || nodes.some((n) => n === '')) throw new InvalidArgumentError('expected two node names, comma-separated (NODE,NODE)');
  return nodes as [string, string];
}

movementCommand('move', 'move a shard (its whole colocation group) to another node, online (a Temporal workflow)')
  .argument('[shard]', 'shard id', shardId)
  .option('--to <node>', 'target node')
  .option('--reverse <movement>', 'undo a finished movement (shard id or workflow id): move back (a cutover only within the grace period), merge a split, split a merge')
  .option('--no-fallback', 'with --reverse: refuse (and change nothing) when the move back cannot be a cutover only, instead of copying in full')
  .action(async (shard: number | undefined, opts: MovementFlags & { to?: string; reverse?: string; fallback: boolean }) => {
    const cfg = config();
    if (opts.reverse !== undefined) {
      if (shard !== undefined || opts.to !== undefined) throw new InvalidInputError('--reverse takes the movement only: no shard, no --to');
      const reverse = await withTemporal(cfg, async (client) => (await moveResult(movementHandle(client, opts.reverse!))).reverse);
      const options = movementOptions(cfg, opts);
      await runMovement(cfg, opts, (o) =>
        reverse.operation === 'move'
          ? startMove(o, { ...options, shardId: reverse.shardId, targetNode: reverse.targetNode, reverseOf: reverse.of, reverseFallback: opts.fallback })
          : reverse.operation === 'merge'
            ? startMerge(o, { ...options, shardIds: reverse.shardIds, targetNode: reverse.targetNode })
            : startSplit(o, { ...options, shardId: reverse.shardId, targetNodes: reverse.splitTargets, at: reverse.splitAt }),
      );
      return;
    }
    if (shard === undefined || opts.to === undefined) throw new InvalidInputError('give a shard and --to NODE (or --reverse MOVEMENT)');
    await withCatalog((pool) => precheckMove(pool, shard, opts.to!)); // a typo is one line, and no failed run
    const summary = await movementSummary('move', [shard], [opts.to]);
    await runMovement(cfg, opts, (o) => startMove(o, { ...movementOptions(cfg, opts), summary, shardId: shard, targetNode: opts.to! }));
  });

movementCommand('split', 'split a shard in two at a hash value or key, each half to a node of choice, online')
  .argument('<shard>', 'shard id', shardId)
  .requiredOption('--to <nodes>', 'nodes of the lower and upper half: NODE,NODE (the same node twice is allowed)', nodeList)
  .option('--at <value>', 'hash tables: last hash value of the lower half (default: the middle); range tables: first key of the upper half')
  .action(async (shard: number, opts: MovementFlags & { to: [string, string]; at?: string }) => {
    const cfg = config();
    const summary = await movementSummary('split', [shard], opts.to);
    await runMovement(cfg, opts, (o) => startSplit(o, { ...movementOptions(cfg, opts), summary, shardId: shard, targetNodes: opts.to, at: opts.at }));
  });

movementCommand('merge', 'merge two adjacent shards of a colocation group into one, online')
  .argument('<shard>', 'shard id', shardId)
  .argument('<other>', 'the adjacent shard', shardId)
  .option('--to <node>', 'node of the merged shard (default: the lower shard’s node)')
  .action(async (shard: number, other: number, opts: MovementFlags & { to?: string }) => {
    const cfg = config();
    const summary = shard === other ? undefined : await movementSummary('merge', [Math.min(shard, other), Math.max(shard, other)], opts.to ? [opts.to] : []);
    await runMovement(cfg, opts, (o) => startMerge(o, { ...movementOptions(cfg, opts), summary, shardIds: [shard, other], targetNode: opts.to }));
  });

for (const [name, signal, description] of [
  ['pause', pauseSignal, 'pause a movement at its next safe point (stops consuming the source)'],
  ['resume', resumeSignal, 'resume a paused movement'],
  ['approve', approveSignal, 'let a movement waiting at its approval gate cut over'],
  ['reject', rejectSignal, 'reject a movement: it is undone'],
] as const) {
  program
    .command(name)
    .description(description)
    .argument('<movement>', 'shard id or workflow id')
    .action(async (movement: string) => {
      const cfg = config();
      await withTemporal(cfg, async (client) => {
        const handle = movementHandle(client, movement);
        await handle.signal(signal);
        console.log(`${name}: sent to ${handle.workflowId}`);
      });
    });
}

program
  .command('cancel')
  .description('cancel a movement: before its cutover it is undone')
  .argument('<movement>', 'shard id or workflow id')
  .action(async (movement: string) => {
    const cfg = config();
    await withTemporal(cfg, async (client) => {
      const handle = movementHandle(client, movement);
      await handle.cancel();
      console.log(`cancel: requested for ${handle.workflowId}`);
    });
  });

program
  .command('movements')
  .description('movements with their phase and progress')
  .option('--json', 'machine-readable output')
  .option('--follow <movement>', 'show one movement’s progress until it ends')
  .action(async (opts: { json?: boolean; follow?: string }) => {
    await withCatalog(async (pool, cfg) => {
      if (opts.follow) {
        await withTemporal(cfg, async (client) => follow(movementHandle(client, opts.follow!)));
        return;
      }
      const { rows } = await pool.query<{ id: string; operation: string; shard: number; source: string; targets: string; state: string; workflow_id: string | null; started_at: Date }>(
        `select m.id, m.operation, m.shard_id::int as shard, s.name as source,
                (select string_agg(n.name, ',') from shardcast.nodes n where n.id = any(m.target_node_ids)) as targets,
                m.state, m.workflow_id, m.started_at
           from shardcast.movements m join shardcast.nodes s on s.id = m.source_node_id
          order by m.started_at desc limit 50`,
      );
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
              r.state === 'running' && r.workflow_id
                ? await client.workflow.getHandle(r.workflow_id).query(movementProgressQuery).then(describeProgress, () => '(no answer)')
                : '';
            return { ...r, started: r.started_at.toISOString(), progress };
          }),
        );
        return [...queued, ...leased];
      });
      if (opts.json) console.log(JSON.stringify(withProgress, null, 2));
      else printTable('movements', withProgress, ['id', 'operation', 'shard', 'source', 'targets', 'state', 'started', 'progress']);
    });
  });

program
  .command('doctor')
  .description('find what movements left behind (slots, publications, subscriptions, prepared transactions, leases, schemas); --fix cleans those of closed workflows')
  .option('--json', 'machine-readable output')
  .option('--fix', 'clean leftovers of movements whose workflow is closed; finish or undo their half-done switches')
  .action(async (opts: { json?: boolean; fix?: boolean }) => {
    await withCatalog(async (pool, cfg) => {
      const pools = new NodePools({ max: 2, applicationName: 'shardcast-doctor' });
      try {
        const report = await withTemporal(cfg, (client) =>
          doctor(
            { catalog: pool, catalogUrl: catalogUrlOf(cfg), pools, workflowState: workflowStateOf(client) },
            { fix: opts.fix, log: opts.json ? undefined : (l) => console.error(l) },
          ),
        );
        // The metric shows what the last look found, by the janitor or by hand.
        await recordDoctorRun(pool, summarize(report)).catch(() => undefined);
        if (opts.json) console.log(JSON.stringify(report, null, 2));
        else printDoctorReport(report, opts.fix ?? false);
        const left = report.leftovers.length + report.unreachable.length;
        if (left > 0) throw new ShardcastError('LEFTOVERS', `${left} leftover(s) remain${report.unreachable.length ? ' (or could not be checked)' : ''}`);
      } finally {
        await pools.end();
      }
    });
  });

program
  .command('provision-temporal')
  .description('find or build the Temporal CLI (cached) and print its path')
  .action(async () => {
    const cli = await resolveTemporalCli({ log: (l) => console.error(l) });
    console.log(cli.path);
  });

program
  .command('migrate')
  .description('apply pending catalog migrations')
  .action(async () => {
    await withCatalog(async () => {
      console.log('catalog is up to date');
    }, true);
  });

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

registerBackupCommands(program);
registerForecastCommands(program);
registerPlanCommands(program, nodes);
registerSecurityCommands(program);
registerSimulateCommands(program);

async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; commander has already printed its own message.
      return err.exitCode;
    }
    const verbose = argv.includes('--verbose') || argv.includes('-v');
    console.error(`shardcast: error: ${errorMessage(err)}`);
    if (verbose && err instanceof Error && err.stack) console.error(err.stack);
    return 1;
  }
}

// Pools and gRPC channels can keep the event loop alive once a command has finished.
process.exit(await main(process.argv));
