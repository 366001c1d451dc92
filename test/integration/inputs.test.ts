import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, startMove, startSplit } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { InvalidInputError } from '../../src/errors.js';
import { moveShardInput } from '../../workflows/describe.js';
import { movementProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, shardByIndex, startTestWorker, uniqueName, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let pools: NodePools;

beforeAll(async () => {
  catalog = await createTestCatalog('inputs');
  worker = await startTestWorker(catalog.catalogUrl);
  pools = new NodePools();
  await createDistributedTable(worker.options, { name: 'accounts', columns: 'id bigint primary key, balance bigint not null', shardKey: 'id', shardCount: 2 });
});

afterAll(async () => {
  await pools?.end();
  await worker?.close();
  await catalog?.close();
});

/** Starts a workflow straight through Temporal (no client library check) and returns its failure and its history's event types. */
async function startDirect(workflowType: string, args: unknown[]): Promise<{ failure: ApplicationFailure; events: string[]; ms: number }> {
  const workflowId = `${worker.taskQueue}-${uniqueName('direct')}`;
  const started = Date.now();
  const handle = await worker.client.workflow.start(workflowType, { taskQueue: worker.taskQueue, workflowId, args });
  const err = await handle.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  const ms = Date.now() - started;
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const failure = (err as WorkflowFailedError).cause;
  expect(failure).toBeInstanceOf(ApplicationFailure);
  const history = await handle.fetchHistory();
  const events = (history.events ?? []).map((e) => temporal.api.enums.v1.EventType[e.eventType!]!);
  return { failure: failure as ApplicationFailure, events, ms };
}

async function catalogState(): Promise<unknown> {
  const { rows } = await catalog.pool.query(
    `select (select count(*)::int from shardcast.movements) as movements,
            (select count(*)::int from shardcast.distributed_tables) as tables,
            (select json_agg(json_build_object('shard', shard_id, 'node', node_id) order by shard_id) from shardcast.placements) as placements`,
  );
  return rows[0];
}

describe('workflow inputs are checked at start', () => {
  it('a bad field started directly fails the workflow at once, non-retryable, naming the field, and changes nothing', async () => {
    const before = await catalogState();
    const shard = await shardByIndex(catalog, 0);
    const good = moveShardInput({ operation: 'move', shardId: shard.id, targetNode: 'node-3' }, { movementId: 'm_bad_input', workflowId: 'x' }, { pollSeconds: 0.2 });
    const cases: Array<[string, unknown[], string]> = [
      ['moveShard', [{ ...good, shardId: -1 }], 'input.shardId: expected a positive integer'],
      ['moveShard', [{ ...good, targetNode: "node-3'; drop table x; --" }], 'input.targetNode: expected a node name'],
      ['moveShard', [{ ...good, graceSeconds: 'soon' }], 'input.graceSeconds: expected an integer from 0 to 2592000'],
      ['createDistributedTable', [{ spec: { name: 'evil"name', columns: 'id int', shardKey: 'id' }, nodeRetry: { maximumAttempts: 2, initialIntervalMs: 100 } }], 'input.spec.name: expected a lower-case identifier'],
      ['collectStats', [{ intervalSeconds: 0, retentionDays: 3 }], 'input.intervalSeconds: expected an integer from 1 to 3600'],
      ['janitor', [{ fix: 'yes' }], 'input.fix: expected true or false'],
      ['rebalance', [{ dryRun: true, trigger: 'cron', movement: {} }], 'input.trigger: expected schedule, operator, drain or replan'],
      ['retrainModels', [{ trainingDays: 0, budgetSeconds: 1, batchSize: 1, parallelBatches: 1 }], 'input.trainingDays: expected an integer from 1 to 365'],
      ['forecastLoad', [{ batchSize: 1e6, parallelBatches: 1 }], 'input.batchSize: expected an integer from 1 to 1000'],
      ['scaleOut', [{ request: { requestId: 'r-bad', reason: 'test' }, provisionTimeoutSeconds: -1 }], 'input.provisionTimeoutSeconds: expected an integer from 1 to 86400'],
      ['scaleOut', [{ request: { requestId: 'r bad', reason: 'test' }, provisionTimeoutSeconds: 60 }], 'input.request.requestId: expected a request id'],
      ['dropFencedCopy', [{ movementId: 'm1', what: 'x', copies: [], dropAt: '2026-01-01T00:00:00Z' }], 'input.copies: expected at least one fenced copy'],
    ];
    for (const [type, args, message] of cases) {
      const { failure, events } = await startDirect(type, args);
      expect(failure.message, type).toContain(message);
      expect(failure.type).toBe('InvalidInputError');
      expect(failure.nonRetryable).toBe(true);
      // At once: the first workflow task fails the run; no activity, no timer was scheduled.
      expect(events.filter((e) => /ACTIVITY|TIMER|CHILD/.test(e)), type).toEqual([]);
      expect(events.at(-1)).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_FAILED');
    }
    expect(await catalogState()).toEqual(before);
  });

  it('the client checks the same before starting: one InvalidInputError, no run', async () => {
    const shard = await shardByIndex(catalog, 0);
    await expect(startMove(worker.options, { shardId: shard.id, targetNode: 'node-3', graceSeconds: -5 })).rejects.toThrow(new InvalidInputError('input.graceSeconds: expected an integer from 0 to 2592000'));
    await expect(startMove(worker.options, { shardId: shard.id, targetNode: 'node-3', pollSeconds: Number.NaN })).rejects.toThrow(/^input\.pollSeconds: /);
    await expect(
      createDistributedTable({ ...worker.options, nodeRetry: { maximumAttempts: 0, initialIntervalMs: 1 } }, { name: 'never', columns: 'id int', shardKey: 'id' }),
    ).rejects.toThrow('input.nodeRetry.maximumAttempts: expected an integer from 1 to 1000');
    const { executions } = await worker.client.workflowService.listWorkflowExecutions({ namespace: 'default', query: `TaskQueue = '${worker.taskQueue}' AND WorkflowType = 'moveShard' AND WorkflowId STARTS_WITH '${worker.options.workflowIdPrefix}move-shard'` });
    expect(executions ?? []).toEqual([]);
  });
});

describe('a resumed plan is checked against the catalog', () => {
  /** A plan as the workflow would carry it: for the first shard, node-of-shard → another node. */
  async function forgedPlan(movementId: string) {
    const { rows } = await catalog.pool.query<{ shard_id: number; schema: string; node_id: number; group_name: string; columns: string }>(
      `select s.id::int as shard_id, s.schema_name as schema, p.node_id::int, g.name as group_name, t.columns_ddl as columns
         from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.colocation_groups g on g.id = s.group_id
         join shardcast.distributed_tables t on t.group_id = g.id order by s.id limit 1`,
    );
    const r = rows[0]!;
    const source = catalog.nodes.find((n) => n.id === r.node_id)!;
    const target = catalog.nodes.find((n) => n.id !== r.node_id)!;
    const bare = (n: typeof source) => ({ ...n, dsn: '' });
    const base = `sc_mv_${movementId}`;
    return {
      shardId: r.shard_id,
      schema: r.schema,
      plan: {
        operation: 'move' as const,
        movementId,
        shard: { shardId: r.shard_id, schema: r.schema, group: r.group_name, tables: [{ name: 'accounts', columns: r.columns }] },
        source: bare(source),
        target: bare(target),
        names: { publication: base, subscription: base, slot: base, gid: base },
        bytes: 0,
      },
    };
  }
  const progress = { phase: 'catch-up', paused: false, approved: false, approvalReason: null, rowsCopied: 0, bytesCopied: 0, lagBytes: null, tablesReady: 1, tables: 1, etaSeconds: null };

  async function resume(movementId: string, plan: unknown, shardId: number, workflowId = `${worker.taskQueue}-${uniqueName('forged')}`) {
    const input = { ...moveShardInput({ operation: 'move', shardId, targetNode: 'node-3' }, { movementId, workflowId }, { pollSeconds: 0.2, graceSeconds: 0 }), resume: { plan, progress } };
    const handle = await worker.client.workflow.start('moveShard', { taskQueue: worker.taskQueue, workflowId, args: [input] });
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    return (err as WorkflowFailedError).cause as ApplicationFailure;
  }

  it('refuses a schema name with a quote before any activity', async () => {
    const { plan, shardId } = await forgedPlan('forged_quote');
    const failure = await resume('forged_quote', { ...plan, shard: { ...plan.shard, schema: `${plan.shard.schema}"; drop schema public cascade; --` } }, shardId);
    expect(failure.type).toBe('InvalidInputError');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/^input\.resume\.plan\.shard\.schema: /);
  });

  it('refuses a well-formed plan without the lease, with a node not in the catalog, or with other column definitions; nothing changes', async () => {
    const before = await catalogState();
    const { plan, shardId, schema } = await forgedPlan('forged_nolease');
    // No lease: the catalog has no such movement.
    let failure = await resume('forged_nolease', plan, shardId);
    expect(failure.type).toBe('InvalidInputError');
    expect(failure.message).toContain('resume.plan of movement forged_nolease refused: the catalog has no such movement');
    expect(await catalogState()).toEqual(before);

    // A lease held by the very workflow (as a real continued run has), but the plan's target is no node of the catalog.
    const workflowId = `${worker.taskQueue}-${uniqueName('forged')}`;
    const leased = await forgedPlan('forged_leased');
    await catalog.pool.query(
      `insert into shardcast.movements (id, operation, shard_id, source_node_id, target_node_ids, workflow_id) values ($1, 'move', $2, $3, array[$4]::bigint[], $5)`,
      ['forged_leased', leased.shardId, leased.plan.source.id, leased.plan.target.id, workflowId],
    );
    failure = await resume('forged_leased', { ...leased.plan, target: { ...leased.plan.target, id: 999 } }, leased.shardId, workflowId);
    expect(failure.message).toContain('refused: its target nodes are not the lease\'s');
    failure = await resume('forged_leased', { ...leased.plan, target: { ...leased.plan.target, name: 'node-9' } }, leased.shardId, workflowId);
    expect(failure.message).toContain(`refused: node #${leased.plan.target.id} is ${leased.plan.target.name} in the catalog, not node-9`);
    // Column definitions are DDL a target runs: they must be the catalog's.
    failure = await resume('forged_leased', { ...leased.plan, shard: { ...leased.plan.shard, tables: [{ name: 'accounts', columns: 'id bigint); drop table accounts; --' }] } }, leased.shardId, workflowId);
    expect(failure.message).toContain("refused: table accounts's columns differ from the catalog's");
    // Placement: the plan says the shard is on its target node.
    failure = await resume('forged_leased', { ...leased.plan, source: leased.plan.target, target: leased.plan.source }, leased.shardId, workflowId);
    expect(failure.message).toContain('refused:');
    // Nothing was undone with the forged plan: the lease row is as inserted, the shard's schema is still on its node, no replication objects.
    const { rows } = await catalog.pool.query("select state from shardcast.movements where id = 'forged_leased'");
    expect(rows[0].state).toBe('running');
    const source = catalog.nodes.find((n) => n.id === leased.plan.source.id)!;
    const { rows: schemas } = await adminQuery(catalog.nodeUrl(source.name), 'select 1 from pg_namespace where nspname = $1', [schema]);
    expect(schemas).toHaveLength(1);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});

describe('--columns is parsed before anything is created', () => {
  async function everything(): Promise<unknown> {
    const { rows } = await catalog.pool.query(
      `select (select count(*)::int from shardcast.distributed_tables) as tables, (select count(*)::int from shardcast.colocation_groups) as groups, (select count(*)::int from shardcast.shards) as shards`,
    );
    const schemas: string[] = [];
    for (const n of catalog.nodes) {
      const r = await adminQuery(catalog.nodeUrl(n.name), "select nspname from pg_namespace where nspname like 'sc\\_s%' order by 1");
      schemas.push(...r.rows.map((x: { nspname: string }) => `${n.name}:${x.nspname}`));
    }
    return { ...rows[0], schemas };
  }

  it('the client refuses INHERITS, LIKE and a default calling pg_sleep in one line, and creates nothing', async () => {
    const before = await everything();
    await expect(createDistributedTable(worker.options, { name: 'evil', columns: 'id int) inherits (accounts', shardKey: 'id' })).rejects.toThrow(
      new InvalidInputError('table "evil": --columns: INHERITS is not allowed (only column definitions and table constraints)'),
    );
    await expect(createDistributedTable(worker.options, { name: 'evil', columns: 'like accounts', shardKey: 'id' })).rejects.toThrow(/LIKE is not allowed/);
    await expect(createDistributedTable(worker.options, { name: 'evil', columns: 'id int default pg_sleep(1)::int', shardKey: 'id' })).rejects.toThrow(/function pg_sleep\(\) is not allowed/);
    expect(await everything()).toEqual(before);
  });

  it('a workflow started directly with such columns fails in its first activity, before any row is written', async () => {
    const before = await everything();
    const { failure } = await startDirect('createDistributedTable', [{ spec: { name: 'evil', columns: 'id int primary key, x int references accounts (id)', shardKey: 'id' }, nodeRetry: { maximumAttempts: 2, initialIntervalMs: 100 } }]);
    expect(failure.message).toContain('table "evil": --columns: column x: REFERENCES (a foreign key) is not allowed');
    expect(await everything()).toEqual(before);
  });
});

describe('a genuine resumed plan passes the check', () => {
  it('a split that continues as new is checked against the catalog and goes on; cancelled, it is undone', async () => {
    const shard = await shardByIndex(catalog, 1);
    const handle = await startSplit(worker.options, { shardId: shard.id, targetNodes: ['node-1', 'node-2'], pollSeconds: 0.1, catchUpLagBytes: -1, historyLimit: 60 });
    const latest = worker.client.workflow.getHandle(handle.workflowId);
    await until('continued as new', async () => (await latest.describe()).runId !== handle.firstExecutionRunId, 60_000, 200);
    // The new run checked its plan, then went on applying and measuring.
    await until('measuring again', async () => {
      const history = await latest.fetchHistory();
      const types = (history.events ?? []).flatMap((e) => (e.activityTaskScheduledEventAttributes?.activityType?.name ? [e.activityTaskScheduledEventAttributes.activityType.name] : []));
      return types[0] === 'checkResumedPlan' && types.includes('measureProgress');
    }, 60_000, 200);
    expect((await latest.describe()).status.name).toBe('RUNNING');
    expect((await latest.query(movementProgressQuery)).phase).toBe('catch-up');
    await latest.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    const { rows } = await catalog.pool.query('select state from shardcast.movements where shard_id = $1 order by started_at desc limit 1', [shard.id]);
    expect(rows[0].state).toBe('cancelled');
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});
