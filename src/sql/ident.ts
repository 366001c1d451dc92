import type pg from 'pg';
import { InvalidInputError } from '../errors.js';

/**
 * Names Shardcast accepts for tables, columns, groups and nodes' databases: lower-case ASCII
 * identifiers that PostgreSQL leaves unchanged without quotes, so the name an application writes in
 * its SQL is the name on every node. Quotes, semicolons, spaces and non-ASCII letters are refused.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;
const MAX_IDENTIFIER_BYTES = 63;

export function validateIdentifier(kind: string, name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new InvalidInputError(`${kind} name is required`);
  }
  if (!IDENTIFIER.test(name)) {
    throw new InvalidInputError(
      `${kind} name ${JSON.stringify(name)} is not allowed: use lower-case ASCII letters, digits and underscores, starting with a letter or underscore`,
    );
  }
  if (Buffer.byteLength(name) > MAX_IDENTIFIER_BYTES) {
    throw new InvalidInputError(`${kind} name ${JSON.stringify(name)} is longer than ${MAX_IDENTIFIER_BYTES} bytes`);
  }
  if (name.startsWith('pg_') || name.startsWith('sc_')) {
    throw new InvalidInputError(`${kind} name ${JSON.stringify(name)} is not allowed: the prefixes pg_ and sc_ are reserved`);
  }
  return name;
}

/** The one way an identifier enters SQL text. */
export function quoteIdent(name: string): string {
  if (name.includes('\u0000')) throw new InvalidInputError('identifier contains a NUL character');
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  if (value.includes('\u0000')) throw new InvalidInputError('literal contains a NUL character');
  return `'${value.replaceAll("'", "''")}'`;
}

/** Schema that holds one shard's tables on its node (DESIGN §1). */
export function shardSchemaName(shardId: number | bigint): string {
  return `sc_s${shardId}`;
}

/**
 * A query sent with the extended protocol, which accepts exactly one statement: text that comes from
 * an operator (column definitions) cannot carry a second statement with it.
 */
export function singleStatement(text: string): pg.QueryConfig {
  return { text, queryMode: 'extended' } as pg.QueryConfig;
}
