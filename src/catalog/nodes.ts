import pg from 'pg';
import { AlreadyExistsError, InvalidInputError, NodeUnavailableError, NotFoundError, errorMessage } from '../errors.js';

export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.ClientBase, 'query'>;

export const NODE_STATES = ['active', 'standby', 'draining', 'retired'] as const;
export type NodeState = (typeof NODE_STATES)[number];

export interface NodeRecord {
  id: number;
  name: string;
  dsn: string;
  region: string | null;
  zone: string | null;
  capacity: number;
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
  if (node.capacity !== undefined && !(Number.isFinite(node.capacity) && node.capacity > 0)) {
    throw new InvalidInputError(`node "${node.name}": capacity must be a positive number, got ${node.capacity}`);
  }
  if (node.state !== undefined && !NODE_STATES.includes(node.state)) {
    throw new InvalidInputError(`node "${node.name}": state must be one of ${NODE_STATES.join(', ')}, got ${JSON.stringify(node.state)}`);
  }
}

/** Connects to a prospective node and checks it can host shards (logical WAL, 2PC, stats). */
export async function checkNodeReachable(node: Pick<NewNode, 'name' | 'dsn'>): Promise<string[]> {
  const client = new pg.Client({ connectionString: node.dsn, connectionTimeoutMillis: 5000 });
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

export async function addNode(db: Queryable, node: NewNode): Promise<NodeRecord> {
  validateNewNode(node);
  try {
    const { rows } = await db.query<NodeRecord>(
      `insert into shardcast.nodes (name, dsn, region, zone, capacity, state)
       values ($1, $2, $3, $4, coalesce($5, 100), coalesce($6, 'active'))
       returning ${NODE_COLUMNS}`,
      [node.name, node.dsn, node.region ?? null, node.zone ?? null, node.capacity ?? null, node.state ?? null],
    );
    return rows[0]!;
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw new AlreadyExistsError(`node "${node.name}" already exists`);
    throw err;
  }
}

/** Registers nodes that are missing; leaves existing ones (same name) as they are. */
export async function ensureNodes(db: Queryable, nodes: NewNode[]): Promise<NodeRecord[]> {
  for (const node of nodes) validateNewNode(node);
  // Existing nodes are not inserted again: even a no-op insert fires the map-version trigger, which
  // waits on any transaction holding the map (a cutover's prepared catalog switch).
  const existing = new Set((await listNodes(db)).map((n) => n.name));
  for (const node of nodes.filter((n) => !existing.has(n.name))) {
    await db.query(
      `insert into shardcast.nodes (name, dsn, region, zone, capacity, state)
       values ($1, $2, $3, $4, coalesce($5, 100), coalesce($6, 'active'))
       on conflict (name) do nothing`,
      [node.name, node.dsn, node.region ?? null, node.zone ?? null, node.capacity ?? null, node.state ?? null],
    );
  }
  return listNodes(db);
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
