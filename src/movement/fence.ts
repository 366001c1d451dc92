import type pg from 'pg';
import { SHARD_FENCED_SQLSTATE } from '../errors.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';

/**
 * The fence: a statement trigger on every table of a shard's schema that raises SCF01 on any write
 * from an ordinary session. Routers take SCF01 as "not here (any more)": they refresh their map and
 * retry where it now places the shard. A fenced source is what a router with an older map meets
 * after a cutover; a fenced target is what it meets while a movement into that node is in progress
 * (the shard's schema name is reused across moves). Replication's own writers — the built-in
 * subscription's apply workers, and our COPY and apply for splits and merges — run with
 * session_replication_role = replica, where the trigger does not fire.
 */
export async function createFence(client: Pick<pg.ClientBase, 'query'>, schema: string, tables: string[], message: string): Promise<void> {
  const s = quoteIdent(schema);
  await client.query(
    `create or replace function ${s}.sc_fence() returns trigger language plpgsql as
     $$ begin raise exception using errcode = '${SHARD_FENCED_SQLSTATE}', message = ${quoteLiteral(message)}; end $$`,
  );
  for (const table of tables) {
    await client.query(
      `create or replace trigger sc_fence before insert or update or delete or truncate on ${s}.${quoteIdent(table)}
       for each statement execute function ${s}.sc_fence()`,
    );
  }
}

/** Lifts a fence (a target's, at its cutover). Takes the tables' locks until the caller's transaction ends. */
export async function dropFence(client: Pick<pg.ClientBase, 'query'>, schema: string, tables: string[]): Promise<void> {
  const s = quoteIdent(schema);
  for (const table of tables) await client.query(`drop trigger if exists sc_fence on ${s}.${quoteIdent(table)}`);
  await client.query(`drop function if exists ${s}.sc_fence()`);
}

/** For replication's own writes into a fenced target, inside the caller's transaction. */
export const AS_REPLICA = 'set local session_replication_role = replica';
