import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { createMovementActivities } from '../../activities/movement.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { addNode, getNodeByName, listNodes, type NodeRecord } from '../../src/catalog/nodes.js';
import { UnsafeDropError } from '../../src/errors.js';
import { finishMovement } from '../../src/movement/lease.js';
import { dropNewShards } from '../../src/movement/logical-apply.js';
import { planMovement, type MovePlan } from '../../src/movement/plan.js';
import { dropTargetShard, shardTables } from '../../src/movement/replication.js';
import type { ReshardPlan } from '../../src/movement/reshard-plan.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, createTestCatalog, startTestWorker, uniqueName, withDatabase, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('ident');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'accounts', columns: 'id bigint primary key, balance int not null', shardKey: 'id', shardCount: 2, nodes: ['node-1'] });
});

afterAll(async () => {
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

/** node-1's DSN spelled differently: `localhost` for 127.0.0.1, and the other way round. */
function otherSpelling(dsn: string): string {
  const url = new URL(dsn);
  url.hostname = url.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
  return url.toString();
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [path.join(ROOT, 'bin/shardcast.js'), ...args], {
    cwd: ROOT,
    env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function nodeNames(): Promise<string[]> {
  return (await listNodes(catalog.pool)).map((n) => n.name);
}

/** A node row inserted by hand, bypassing the identity check: a second name for node-1's database. */
async function forceAlias(name: string): Promise<NodeRecord> {
  await catalog.pool.query('insert into shardcast.nodes (name, dsn) values ($1, $2)', [name, otherSpelling(catalog.nodeUrl('node-1'))]);
  return getNodeByName(catalog.pool, name);
}

async function accountsShard(): Promise<{ id: number; schema: string }> {
  const { rows } = await catalog.pool.query<{ id: number; schema: string }>(
    `select s.id::int as id, s.schema_name as schema from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id
      where t.name = 'accounts' order by s.id limit 1`,
  );
  return rows[0]!;
}

async function rowsIn(schema: string): Promise<number> {
  const { rows } = await adminQuery(catalog.nodeUrl('node-1'), `select count(*)::int as n from ${quoteIdent(schema)}.accounts`);
  return rows[0].n;
}

describe('one database, one node name', () => {
  it('refuses a second name for a registered database, by its DSN as given or spelled differently; nothing is registered', async () => {
    const before = await nodeNames();
    const dsn = catalog.nodeUrl('node-1');
    await expect(addNode(catalog.pool, { name: 'node-4', dsn })).rejects.toThrow(/node "node-4": its DSN reaches the same database as node "node-1" \(database oid \d+ of cluster -?\d+\)/);
    await expect(addNode(catalog.pool, { name: 'node-4', dsn: otherSpelling(dsn) })).rejects.toThrow(/same database as node "node-1"/);
    const viaCli = cli('nodes', 'add', 'node-4', '--dsn', otherSpelling(dsn));
    expect(viaCli.status).toBe(1);
    expect(viaCli.stderr.trim()).toMatch(/^shardcast: error: node "node-4": its DSN reaches the same database as node "node-1" \(database oid \d+ of cluster -?\d+\); one database can be registered under one name only$/);
    expect(await nodeNames()).toEqual(before);
  });

  it('accepts another database of the same server as a node of its own', async () => {
    const database = uniqueName('other');
    const serverAdmin = withDatabase(catalog.nodeUrl('node-1'), 'postgres');
    await adminQuery(serverAdmin, `create database ${quoteIdent(database)}`);
    try {
      const node = await addNode(catalog.pool, { name: 'node-1-other', dsn: withDatabase(catalog.nodeUrl('node-1'), database) });
      const { rows } = await catalog.pool.query('select system_identifier::text as s, database_oid::text as o from shardcast.nodes where name = any($1) order by name', [
        ['node-1', 'node-1-other'],
      ]);
      expect(rows[0].s).toBe(rows[1].s);
      expect(rows[0].o).not.toBe(rows[1].o);
      await catalog.pool.query('delete from shardcast.nodes where id = $1', [node.id]);
    } finally {
      await adminQuery(serverAdmin, `drop database ${quoteIdent(database)} with (force)`);
    }
  });
});

describe('compensation against a forced alias', () => {
  it('never drops the schema of a shard the catalog places on the same database under another name', async () => {
    const alias = await forceAlias('node-1-alias');
    const shard = await accountsShard();
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${quoteIdent(shard.schema)}.accounts select g, 100 from generate_series(1, 50) g`);
    const rows = await rowsIn(shard.schema);
    expect(rows).toBeGreaterThan(0);

    // A move's compensation: the "target" copy of the shard is its source.
    const tables = await shardTables(catalog.pool, shard.id);
    const refused = await dropTargetShard(catalog.pool, pools, alias, tables).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(UnsafeDropError);
    expect((refused as Error).message).toMatch(
      new RegExp(`^refusing to drop schema ${shard.schema} on node "node-1-alias": it reaches the same database as node "node-1" \\(database oid \\d+ of cluster -?\\d+\\), where the catalog places shard ${shard.id}`),
    );
    expect(await rowsIn(shard.schema)).toBe(rows);

    // A split's or merge's compensation naming a schema that serves a placement.
    const reshard = { targets: [{ shardId: 999_999, schema: shard.schema, node: alias }] } as unknown as ReshardPlan;
    await expect(dropNewShards(catalog.pool, pools, reshard)).rejects.toBeInstanceOf(UnsafeDropError);
    expect(await rowsIn(shard.schema)).toBe(rows);

    // The activities as a move to the alias runs them: planned for real, then undone, then cleaned up.
    const activities = createMovementActivities({ catalog: catalog.pool, catalogUrl: catalog.catalogUrl, nodePools: pools });
    const movementId = uniqueName('mv');
    const plan = (await planMovement({ catalog: catalog.pool, nodePools: pools }, { movementId, workflowId: movementId, shardId: shard.id, targetNode: alias.name, maxMovesPerNode: 2 })) as MovePlan;
    try {
      const undo = await activities.abortMove(plan).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(undo).toBeInstanceOf(ApplicationFailure);
      expect((undo as ApplicationFailure).type).toBe('UnsafeDropError');
      expect((undo as ApplicationFailure).nonRetryable).toBe(true);
      expect(await rowsIn(shard.schema)).toBe(rows);
      // The fenced copy's clean-up on a "source" that is the database the shard is placed in.
      const copies = await activities.fencedCopies({ ...plan, source: alias, target: await getNodeByName(catalog.pool, 'node-2') });
      const fenced = await activities.dropFencedCopies(copies).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((fenced as ApplicationFailure).type).toBe('UnsafeDropError');
    } finally {
      await finishMovement(catalog.pool, movementId, 'cancelled');
    }
    expect(await rowsIn(shard.schema)).toBe(rows);
  });

  it('still drops a target copy on a database of its own', async () => {
    const shard = await accountsShard();
    const tables = await shardTables(catalog.pool, shard.id);
    const target = await getNodeByName(catalog.pool, 'node-2');
    await adminQuery(catalog.nodeUrl('node-2'), `create schema ${quoteIdent(shard.schema)}`);
    await dropTargetShard(catalog.pool, pools, target, tables);
    const { rows } = await adminQuery(catalog.nodeUrl('node-2'), 'select count(*)::int as n from pg_namespace where nspname = $1', [shard.schema]);
    expect(rows[0].n).toBe(0);
    expect(await rowsIn(shard.schema)).toBeGreaterThan(0);
  });
});
