import type pg from 'pg';
import { newPgClient } from './pg-tls.js';
import { namesPasswordSource, resolveDsn } from './dsn-password.js';
import { AlreadyExistsError, InvalidInputError, NodeUnavailableError, NotFoundError, errorMessage } from '../errors.js';

export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.ClientBase, 'query'>;

import { NODE_STATES, type NodeState } from './node-states.js';

export { NODE_STATES, type NodeState };

export interface NodeRecord {
  id: number;
  name: string;
  dsn: string;
  region: string | null;
  zone: string | null;
  /** In load units, set by an operator; null: calibrated from the node's own history (src/planning/capacity.ts). */
  capacity: number | null;
  state: NodeState;
}

export interface NewNode {
  name: string;
  dsn: string;
  region?: string;
  zone?: string;
  capacity?: number;
  state?: NodeState;
}

const NODE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

export function validateNewNode(node: NewNode): void {
  if (!NODE_NAME.test(node.name ?? '')) {
    throw new InvalidInputError(
      `node name ${JSON.stringify(node.name)} is not allowed: lower-case letters, digits, "-" or "_", starting with a letter, at most 63`,
    );
  }
  if (!/^postgres(ql)?:\/\//.test(node.dsn ?? '')) {
    throw new InvalidInputError(`node "${node.name}": dsn must be a postgres:// connection URL`);
  }
  if (namesPasswordSource(node.dsn)) {
    const url = new URL(node.dsn);
    if (url.password) throw new InvalidInputError(`node "${node.name}": the dsn has a password and names a password file or variable: give one`);
    if (url.searchParams.has('passfile') && url.searchParams.has('passwordenv')) throw new InvalidInputError(`node "${node.name}": the dsn names both passfile and passwordenv: give one`);
  }
  if (node.capacity !== undefined && !(Number.isFinite(node.capacity) && node.capacity > 0)) {
    throw new InvalidInputError(`node "${node.name}": capacity must be a positive number, got ${node.capacity}`);
  }
  if (node.state !== undefined && !NODE_STATES.includes(node.state)) {
    throw new InvalidInputError(`node "${node.name}": state must be one of ${NODE_STATES.join(', ')}, got ${JSON.stringify(node.state)}`);
  }
}

/** Connects to a prospective node and checks it can host shards (logical WAL, 2PC, stats). */
export async function checkNodeReachable(node: Pick<NewNode, 'name' | 'dsn'>): Promise<string[]> {
  const client = newPgClient(resolveDsn(node.dsn), { connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot connect: ${errorMessage(err)}`, { cause: err });
  }
  try {
    const { rows } = await client.query<{ wal_level: string; mpt: string; spl: string }>(
      `select current_setting('wal_level') as wal_level,
              current_setting('max_prepared_transactions') as mpt,
              current_setting('shared_preload_libraries') as spl`,
    );
    const warnings: string[] = [];
    const s = rows[0]!;
    if (s.wal_level !== 'logical') warnings.push(`wal_level is ${s.wal_level}, shard movement needs logical`);
    if (Number(s.mpt) === 0) warnings.push('max_prepared_transactions is 0, cutover needs two-phase commit');
    if (!s.spl.includes('pg_stat_statements')) warnings.push('pg_stat_statements is not in shared_preload_libraries');
    return warnings;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const NODE_COLUMNS = 'id::int as id, name, dsn, region, zone, capacity, state';

/**
 * The physical database behind a DSN: its cluster's system identifier and the database's oid.
 * Different DSN texts (localhost, 127.0.0.1, another user) for one database have the same identity;
 * two databases of one server do not.
 */
export interface DatabaseIdentity {
  systemIdentifier: string;
  databaseOid: string;
}

export async function readDatabaseIdentity(db: Queryable): Promise<DatabaseIdentity> {
  const { rows } = await db.query<{ system_identifier: string; database_oid: string }>(
    `select (select system_identifier::text from pg_control_system()) as system_identifier,
            (select oid::bigint::text from pg_database where datname = current_database()) as database_oid`,
  );
  return { systemIdentifier: rows[0]!.system_identifier, databaseOid: rows[0]!.database_oid };
}

export function sameDatabase(a: DatabaseIdentity, b: DatabaseIdentity): boolean {
  return a.systemIdentifier === b.systemIdentifier && a.databaseOid === b.databaseOid;
}

export function describeIdentity(identity: DatabaseIdentity): string {
  return `database oid ${identity.databaseOid} of cluster ${identity.systemIdentifier}`;
}

/** Connects to the DSN once and reads its identity; a node that cannot be reached cannot be told apart. */
export async function identityOf(node: Pick<NewNode, 'name' | 'dsn'>): Promise<DatabaseIdentity> {
  const client = newPgClient(resolveDsn(node.dsn), { connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot connect to read which database it is: ${errorMessage(err)}`, { cause: err });
  }
  try {
    return await readDatabaseIdentity(client);
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot read which database it is (pg_control_system()): ${errorMessage(err)}`, { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The registered node that is the same physical database as `identity`, other than `name`. Nodes
 * registered before identities were recorded get theirs read now (those that answer).
 */
async function registeredAs(db: Queryable, name: string, identity: DatabaseIdentity): Promise<string | undefined> {
  const unknown = await db.query<{ name: string; dsn: string }>('select name, dsn from shardcast.nodes where system_identifier is null and name <> $1', [name]);
  for (const node of unknown.rows) {
    const found = await identityOf(node).catch(() => undefined);
    if (found) await recordIdentity(db, node.name, found).catch(() => undefined);
  }
  const { rows } = await db.query<{ name: string }>(
    'select name from shardcast.nodes where system_identifier = $1::bigint and database_oid = $2::bigint and name <> $3',
    [identity.systemIdentifier, identity.databaseOid, name],
  );
  return rows[0]?.name;
}

async function recordIdentity(db: Queryable, name: string, identity: DatabaseIdentity): Promise<void> {
  await db.query('update shardcast.nodes set system_identifier = $2::bigint, database_oid = $3::bigint where name = $1 and system_identifier is null', [
    name,
    identity.systemIdentifier,
    identity.databaseOid,
  ]);
}

function aliasError(node: NewNode, existing: string, identity: DatabaseIdentity): AlreadyExistsError {
  return new AlreadyExistsError(
    `node "${node.name}": its DSN reaches the same database as node "${existing}" (${describeIdentity(identity)}); one database can be registered under one name only`,
  );
}

/**
 * Registers a node after reading which physical database it is: a second name for a registered
 * database is refused. With `unreachableOk`, a node that does not answer is registered without its
 * identity, which is read the next time a node is registered (drops check it live meanwhile).
 */
export async function addNode(db: Queryable, node: NewNode, options: { unreachableOk?: boolean } = {}): Promise<NodeRecord> {
  validateNewNode(node);
  const inserted = await registerNode(db, node, { existingOk: false, unreachableOk: options.unreachableOk ?? false });
  if (!inserted) throw new AlreadyExistsError(`node "${node.name}" already exists`);
  return inserted;
}

/**
 * Registers nodes that are missing; leaves existing ones (same name) as they are, recording their
 * identity if it was not yet. A name for a database registered under another name is refused; a
 * node that does not answer is registered without its identity.
 */
export async function ensureNodes(db: Queryable, nodes: NewNode[]): Promise<NodeRecord[]> {
  for (const node of nodes) validateNewNode(node);
  // Nodes registered with their identity are left alone: even a no-op write fires the map-version
  // trigger, which waits on any transaction holding the map (a cutover's prepared catalog switch).
  const { rows } = await db.query<{ name: string; known: boolean }>('select name, system_identifier is not null as known from shardcast.nodes');
  const done = new Set(rows.filter((r) => r.known).map((r) => r.name));
  for (const node of nodes.filter((n) => !done.has(n.name))) await registerNode(db, node, { existingOk: true, unreachableOk: true });
  return listNodes(db);
}

/** The insert of addNode and ensureNodes, with the node's identity; undefined if the name exists (and `existingOk`). */
async function registerNode(db: Queryable, node: NewNode, options: { existingOk: boolean; unreachableOk: boolean }): Promise<NodeRecord | undefined> {
  const identity = await identityOf(node).catch((err: unknown) => {
    if (options.unreachableOk && err instanceof NodeUnavailableError) return undefined;
    throw err;
  });
  const existing = identity && (await registeredAs(db, node.name, identity));
  if (identity && existing) throw aliasError(node, existing, identity);
  try {
    const { rows } = await db.query<NodeRecord>(
      `insert into shardcast.nodes (name, dsn, region, zone, capacity, state, system_identifier, database_oid)
       values ($1, $2, $3, $4, $5, coalesce($6, 'active'), $7::bigint, $8::bigint)
       ${options.existingOk ? 'on conflict (name) do nothing' : ''}
       returning ${NODE_COLUMNS}`,
      [
        node.name,
        node.dsn,
        node.region ?? null,
        node.zone ?? null,
        node.capacity ?? null,
        node.state ?? null,
        identity?.systemIdentifier ?? null,
        identity?.databaseOid ?? null,
      ],
    );
    if (identity && options.existingOk) await recordIdentity(db, node.name, identity);
    return rows[0];
  } catch (err) {
    if ((err as { code?: string; constraint?: string }).code !== '23505') throw err;
    // A unique violation: the name, or (a concurrent registration) the database.
    if (identity && (err as { constraint?: string }).constraint === 'nodes_physical_database') throw aliasError(node, 'another node', identity);
    throw new AlreadyExistsError(`node "${node.name}" already exists`);
  }
}

export async function listNodes(db: Queryable): Promise<NodeRecord[]> {
  const { rows } = await db.query<NodeRecord>(`select ${NODE_COLUMNS} from shardcast.nodes order by name`);
  return rows;
}

export async function getNode(db: Queryable, id: number): Promise<NodeRecord> {
  const { rows } = await db.query<NodeRecord>(`select ${NODE_COLUMNS} from shardcast.nodes where id = $1`, [id]);
  if (!rows[0]) throw new NotFoundError(`node #${id} does not exist`);
  return rows[0];
}

export async function getNodeByName(db: Queryable, name: string): Promise<NodeRecord> {
  const { rows } = await db.query<NodeRecord>(`select ${NODE_COLUMNS} from shardcast.nodes where name = $1`, [name]);
  if (!rows[0]) throw new NotFoundError(`node "${name}" does not exist`);
  return rows[0];
}

/** Sets (a positive number of load units) or clears (null: calibrate from history) a node's capacity. */
export async function setNodeCapacity(db: Queryable, name: string, capacity: number | null): Promise<NodeRecord> {
  if (capacity !== null && !(Number.isFinite(capacity) && capacity > 0)) {
    throw new InvalidInputError(`node "${name}": capacity must be a positive number of load units, or "auto", got ${capacity}`);
  }
  const { rows } = await db.query<NodeRecord>(`update shardcast.nodes set capacity = $2 where name = $1 returning ${NODE_COLUMNS}`, [name, capacity]);
  if (!rows[0]) throw new NotFoundError(`node "${name}" does not exist`);
  return rows[0];
}

/** Sets or clears (null) where a node is: the planner prefers a shard's node in the region it is reached from. */
export async function setNodeRegion(db: Queryable, name: string, region: string | null, zone?: string | null): Promise<NodeRecord> {
  for (const [what, v] of [['region', region], ['zone', zone]] as const) {
    if (v !== null && v !== undefined && !/^\S(.*\S)?$/.test(v)) throw new InvalidInputError(`node "${name}": ${what} must be a non-empty name without surrounding spaces, got ${JSON.stringify(v)}`);
  }
  const { rows } = await db.query<NodeRecord>(
    `update shardcast.nodes set region = $2, zone = case when $4 then $3 else zone end where name = $1 returning ${NODE_COLUMNS}`,
    [name, region, zone ?? null, zone !== undefined],
  );
  if (!rows[0]) throw new NotFoundError(`node "${name}" does not exist`);
  return rows[0];
}

/**
 * A node's life-cycle change, only from the states given (the planner's and the drain workflow's
 * steps are retried: a change already made is no change). Returns the node as it is afterwards.
 */
export async function setNodeState(db: Queryable, nodeId: number, to: NodeState, from: readonly NodeState[]): Promise<NodeRecord> {
  const { rows } = await db.query<NodeRecord>(
    `update shardcast.nodes set state = $2 where id = $1 and (state = $2 or state = any($3::text[])) returning ${NODE_COLUMNS}`,
    [nodeId, to, from],
  );
  if (rows[0]) return rows[0];
  const node = await getNode(db, nodeId);
  throw new InvalidInputError(`node "${node.name}" is ${node.state}: it cannot become ${to} (only from ${from.join(' or ')})`);
}

/**
 * Removes a node that is not active, holds no shard and never took part in a movement (what a failed
 * scale-out registered). Returns false, changing nothing, when any of that does not hold.
 */
export async function removeUnusedNode(db: Queryable, nodeId: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `delete from shardcast.nodes n
      where n.id = $1 and n.state <> 'active'
        and not exists (select 1 from shardcast.placements p where p.node_id = n.id)
        and not exists (select 1 from shardcast.movements m where m.source_node_id = n.id or n.id = any(m.target_node_ids || m.other_source_node_ids))`,
    [nodeId],
  );
  return (rowCount ?? 0) > 0;
}

/** How many shards a node holds now. */
export async function shardsOnNode(db: Queryable, nodeId: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>('select count(*)::int as n from shardcast.placements where node_id = $1', [nodeId]);
  return rows[0]!.n;
}

/** A running movement the node takes part in (as source or target), if any. */
export async function runningMovementOn(db: Queryable, nodeId: number): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string }>(
    "select id from shardcast.movements where state = 'running' and $1 = any(array_append(target_node_ids || other_source_node_ids, source_node_id)) limit 1",
    [nodeId],
  );
  return rows[0]?.id;
}

/** Node DSNs with the password hidden, for printing. */
export function redactDsn(dsn: string): string {
  try {
    const url = new URL(dsn);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return dsn.replace(/:[^:@/]*@/, ':***@');
  }
}
