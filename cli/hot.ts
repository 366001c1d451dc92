/**
 * `shardcast hot`: the hottest shards, shard-key values and templates from the workload profile
 * routers created with `profile` flush to the catalog (src/profiling/hot.ts).
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidInputError } from '../src/errors.js';
import type { HotReport } from '../src/profiling/hot.js';
import type { IsolateKeyInput, IsolateKeyResult } from '../workflows/messages.js';
import { decimalNumber, duration, wholeNumber } from './args.js';
import { printTable } from './format.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

interface HotOptions {
  table?: string;
  since: number;
  top: number;
  json?: boolean;
  png?: string;
}

const percent = (share: number): number => Math.round(share * 1000) / 10;

function printReport(report: HotReport, table: string | undefined): void {
  console.log(`since ${report.since}`);
  if (report.tables.length === 0) console.log(`no accesses recorded${table ? ` for ${table}` : ''} (routers record them when created with \`profile\`)`);
  for (const t of report.tables) {
    console.log(`\n${t.table}: ${t.shardAccesses} shard accesses, ${t.keyAccesses} by key`);
    printTable(
      'shard accesses',
      t.shards.map((s) => ({ shard: s.shardId, accesses: s.accesses, 'share%': percent(s.share) })),
      ['shard', 'accesses', 'share%'],
    );
    printTable(
      'hot keys',
      t.keys.map((k) => ({ key: k.key, count: k.count, 'at-least': k.lowerBound, 'share%': percent(k.share) })),
      ['key', 'count', 'at-least', 'share%'],
    );
  }
  console.log('');
  printTable(
    'templates called',
    report.templates.map((q) => ({ calls: q.calls, rows: q.rows, 'mean-ms': q.meanMs, 'single/scatter': `${q.singleShard}/${q.scatter}`, query: q.query })),
    ['calls', 'rows', 'mean-ms', 'single/scatter', 'query'],
  );
}

interface TenantOptions {
  table?: string;
  since: number;
  minShare: number;
  minAccesses: number;
  ranges?: boolean;
  json?: boolean;
}

interface IsolateOptions {
  to?: string;
  dryRun?: boolean;
  wait: boolean;
}

function registerTenantCommands(program: Command): void {
  program
    .command('tenants')
    .description('hot tenants: shard-key values that take most of their shard\'s accesses (candidates for `shardcast isolate`), from the routers\' workload profile')
    .option('--table <table>', 'only this distributed table')
    .option('--since <duration>', 'the window: 30s, 15m, 2h, 7d', duration, 3_600_000)
    .option('--min-share <fraction>', 'share of its shard\'s accesses from which a key is listed', decimalNumber(1, 'the share'), 0.5)
    .option('--min-accesses <n>', 'fewest accesses in the window', wholeNumber(1, Number.MAX_SAFE_INTEGER, 'accesses'), 100)
    .option('--ranges', 'with --table: its key ranges (shards) by shardability instead of its hot keys')
    .option('--json', 'the list as JSON')
    .action(async (opts: TenantOptions) => {
      if (opts.ranges && !opts.table) throw new InvalidInputError('--ranges lists the key ranges of one table: give --table');
      const [{ hotTenants }, { scoreEntities }, { NodePools }, { plannerSettings }] = await Promise.all([
        import('../src/profiling/tenants.js'),
        import('../src/profiling/shardability.js'),
        import('../src/catalog/node-pools.js'),
        import('../src/config.js'),
      ]);
      const cfg = await configOf(program);
      const { tenants, scores } = await withCatalog(cfg, async (catalog) => {
        const tenants = await hotTenants(catalog, { table: opts.table, sinceMs: opts.since, minShare: opts.minShare, minAccesses: opts.minAccesses });
        const pools = new NodePools({ max: 2, applicationName: 'shardcast-tenants' });
        try {
          // Shardability of each tenant, and of the key ranges (shards) of --table.
          const scores = await scoreEntities(catalog, pools, opts.ranges ? [] : tenants, plannerSettings(cfg), { tables: opts.ranges ? [opts.table!] : [] }).catch((err: unknown) => {
            // The listing stands without them (e.g. a node's capacity not yet known); --ranges needs them.
            if (opts.ranges) throw err;
            console.error(`shardability not computed: ${err instanceof Error ? err.message : String(err)}`);
            return { keys: [], ranges: [] };
          });
          return { tenants, scores };
        } finally {
          await pools.end();
        }
      });
      const scoreOf = (t: (typeof tenants)[number]) => scores.keys.find((k) => k.table === t.table && k.key === t.key && k.shardId === t.shardId);
      if (opts.ranges) {
        if (opts.json) console.log(JSON.stringify(scores.ranges, null, 2));
        else if (scores.ranges.length === 0) console.log(`${opts.table} has no shard`);
        else {
          printTable(
            `key ranges of ${opts.table}`,
            scores.ranges.map((r) => ({ shard: r.shardId, node: r.node, shardability: r.shardability.score, 'predicted-load': r.predictedLoad, bytes: r.bytes, 'node-util%': percent(r.nodeUtilisation) })),
            ['shard', 'node', 'shardability', 'predicted-load', 'bytes', 'node-util%'],
          );
        }
        return;
      }
      if (opts.json) {
        const withScores = tenants.map((t) => {
          const s = scoreOf(t);
          return { ...t, ...(s ? { shardability: s.shardability, predictedLoad: s.predictedLoad, bytes: s.bytes, nodeUtilisation: s.nodeUtilisation } : {}) };
        });
        console.log(JSON.stringify(withScores, null, 2));
        return;
      }
      if (tenants.length === 0) console.log(`no key takes ${percent(opts.minShare)}% or more of its shard's accesses${opts.table ? ` in ${opts.table}` : ''}`);
      else {
        printTable(
          'hot tenants',
          tenants.map((t) => {
            const s = scoreOf(t);
            return { table: t.table, key: t.key, shard: t.shardId, node: t.node, accesses: t.accesses, 'of-shard': t.shardAccesses, 'share%': percent(t.share), shardability: s?.shardability.score ?? '', 'predicted-load': s?.predictedLoad ?? '', bytes: s?.bytes ?? '', 'node-util%': s ? percent(s.nodeUtilisation) : '' };
          }),
          ['table', 'key', 'shard', 'node', 'accesses', 'of-shard', 'share%', 'shardability', 'predicted-load', 'bytes', 'node-util%'],
        );
      }
    });

  program
    .command('isolate')
    .description('split a shard-key value (a hot tenant) off into a shard of its own, on another node, online (one or two splits)')
    .argument('<table>', 'the distributed table')
    .argument('<key>', 'the shard-key value')
    .option('--to <node>', "the node of its shard (default: the other active node of lowest target cost for the key: load, the key's regions, its daily peak)")
    .option('--dry-run', 'print the splits and change nothing')
    .option('--no-wait', 'start it and return (nothing is followed)')
    .action(async (table: string, key: string, opts: IsolateOptions) => {
      const cfg = await configOf(program);
      const { planIsolation } = await import('../src/profiling/tenants.js');
      // Checked against the catalog before anything starts: bad input is one line and no failed run.
      const { plannerSettings } = await import('../src/config.js');
      const plan = await withCatalog(cfg, (catalog) => planIsolation(catalog, { table, key, ...(opts.to ? { targetNode: opts.to } : {}) }, plannerSettings(cfg)));
      console.log(`key ${plan.key} of ${plan.table}: ${plan.piece} out of shard ${plan.shardId} on ${plan.sourceNode}, onto ${plan.targetNode}`);
      if (plan.reason) console.log(`  target ${plan.reason}`);
      plan.steps.forEach((st, i) => console.log(`  split ${i + 1}: ${st.shard === 'upper' ? 'its upper half' : `shard ${st.shard}`} at ${st.at}, halves to ${st.targets.join(' and ')}`));
      if (opts.dryRun) return;
      const [{ WorkflowExecutionAlreadyStartedError }, { clientOptionsFromConfig, toShardcastError }, { movementSettings }, { AlreadyExistsError }, { CONTROL_TASK_QUEUE }, { assertValidInput, isolateKeyInputSchema }, { isolateWorkflowId }] = await Promise.all([
        import('@temporalio/client'),
        import('../client/index.js'),
        import('../src/config.js'),
        import('../src/errors.js'),
        import('../src/task-queues.js'),
        import('../src/inputs.js'),
        import('../workflows/describe.js'),
      ]);
      await withTemporal(cfg, async (client) => {
        const options = clientOptionsFromConfig(client, cfg);
        const input: IsolateKeyInput = { table, key: plan.key, targetNode: plan.targetNode, movement: movementSettings(cfg), ...(options.workflowIdPrefix ? { workflowIdPrefix: options.workflowIdPrefix } : {}) };
        assertValidInput(isolateKeyInputSchema, input);
        const workflowId = isolateWorkflowId(table, plan.key, options.workflowIdPrefix);
        let handle;
        try {
          handle = await options.client.workflow.start('isolateKey', { taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE, workflowId, args: [input], staticSummary: `isolate key ${plan.key} of ${table} onto ${plan.targetNode}` });
        } catch (err) {
          if (err instanceof WorkflowExecutionAlreadyStartedError) throw new AlreadyExistsError(`${workflowId} is already running`);
          throw err;
        }
        console.log(`started ${workflowId}`);
        if (!opts.wait) return;
        const r = (await handle.result().catch((err: unknown) => Promise.reject(toShardcastError(err)))) as IsolateKeyResult;
        for (const line of r.splits) console.log(`  ${line}`);
        console.log(`key ${r.key} of ${r.table} is alone in shard ${r.shardId} on ${r.node} (${r.piece})`);
      });
    });
}

export function registerHotCommands(program: Command): void {
  registerTenantCommands(program);
  program
    .command('hot')
    .description('the hottest shards, shard-key values (with their share of the table\'s accesses) and query templates, from the routers\' workload profile')
    .option('--table <table>', 'only this distributed table')
    .option('--since <duration>', 'the window: 30s, 15m, 2h, 7d', duration, 3_600_000)
    .option('--top <n>', 'shards, keys and templates shown', wholeNumber(1, 1000, 'entries'), 10)
    .option('--json', 'the report as JSON')
    .option('--png <file>', 'also draw a heat map of the table\'s accesses per shard and minute (needs --table)')
    .action(async (opts: HotOptions) => {
      if (opts.png && !opts.table) throw new InvalidInputError('--png draws one table: give --table');
      const { hotReport, heatMap, heatMapSvg } = await import('../src/profiling/hot.js');
      const { report, map } = await withCatalog(await configOf(program), async (catalog) => {
        const r = await hotReport(catalog, { table: opts.table, sinceMs: opts.since, top: opts.top });
        return { report: r, map: opts.png && opts.table ? await heatMap(catalog, opts.table, opts.since) : undefined };
      });
      // Drawn before anything is printed: a missing renderer leaves no half of the output behind.
      const picture = map ? await (await import('./png.js')).svgToPng(heatMapSvg(map)) : undefined;
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else printReport(report, opts.table);
      if (opts.png && picture && map) {
        await writeFile(opts.png, picture.png);
        if (!opts.json) console.log(`wrote ${opts.png} (${map.shards.length} shard(s) × ${map.buckets.length} minute(s))`);
      }
    });
}
