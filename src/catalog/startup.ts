/** What `shardcast up` and `shardcast worker` ask the catalog at start-up. */
import type pg from 'pg';
import { sqlState } from '../errors.js';
import { ensureNodes, type NewNode } from './nodes.js';

const LOCK_NOT_AVAILABLE = '55P03';

export interface NodeRegistration {
  /** Prepared catalog transactions (a cutover cut short): while they stand, map changes wait. */
  preparedTransactions: string[];
  /** Nodes left unregistered because the shard map stayed locked for `lockTimeoutMs`. */
  notRegistered: string[];
}

/**
 * Registers `nodes` without ever waiting on the shard map for longer than `lockTimeoutMs`: a prepared
 * catalog transaction left by a cut-short cutover holds it until `shardcast doctor --fix` (or the
 * janitor) resolves it. The nodes missing then are named in the answer, not registered.
 */
export async function registerNodesUnlessLocked(client: pg.ClientBase, nodes: NewNode[], lockTimeoutMs: number): Promise<NodeRegistration> {
  const prepared = await client.query<{ gid: string }>('select gid from pg_prepared_xacts where database = current_database() order by gid');
  const preparedTransactions = prepared.rows.map((r) => r.gid);
  await client.query(`set lock_timeout = ${Math.max(1, Math.trunc(lockTimeoutMs))}`);
  try {
    await ensureNodes(client, nodes);
    return { preparedTransactions, notRegistered: [] };
  } catch (err) {
    if (sqlState(err) !== LOCK_NOT_AVAILABLE) throw err;
    const known = new Set((await client.query<{ name: string }>('select name from shardcast.nodes')).rows.map((r) => r.name));
    return { preparedTransactions, notRegistered: nodes.filter((n) => !known.has(n.name)).map((n) => n.name) };
  } finally {
    await client.query('reset lock_timeout');
  }
}

/** The catalog's clock (its `now()`): the one every process agrees on. */
export async function catalogNow(db: Pick<pg.Pool, 'query'>): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('select now()');
  return rows[0]!.now;
}
