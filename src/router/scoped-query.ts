import { createHash } from 'node:crypto';
import pg from 'pg';
import { quoteIdent } from '../sql/ident.js';

/** The parts of node-postgres's Connection this query writes to (pg/lib/connection.js). */
interface ProtocolConnection {
  parse(config: { text: string; name?: string; types?: unknown[] }): void;
  bind(config: { portal?: string; statement?: string; values?: unknown[] }): void;
  execute(config: { portal?: string; rows?: number }): void;
  close(config: { type: 'S' | 'P'; name: string }): void;
  parsedStatements: Record<string, string | undefined>;
  submittedNamedStatements: Record<string, string | undefined>;
}

interface QueryInternals {
  name?: string;
  prepare(connection: ProtocolConnection): void;
  handleCommandComplete(message: { command?: string; text?: string }, connection: ProtocolConnection): void;
  handleError(err: Error, connection: ProtocolConnection): void;
}

type Callback = (err: Error | null, result: pg.QueryResult) => void;

const BaseQuery = pg.Query as unknown as new (config: { text: string; name?: string; queryMode?: 'extended' }, values: unknown[] | undefined, callback: Callback) => QueryInternals;

/** Prepared statements one connection holds for the router, oldest first (an LRU). */
interface StatementRegistry {
  statements: Map<string, true>;
  /** `SET search_path` statements, one per shard schema. */
  paths: Set<string>;
  /** Names whose existence on the server is uncertain (after an error, or evicted): closed before reuse. */
  closeFirst: Set<string>;
}

const registries = new WeakMap<ProtocolConnection, StatementRegistry>();

function registryOf(connection: ProtocolConnection): StatementRegistry {
  let registry = registries.get(connection);
  if (!registry) registries.set(connection, (registry = { statements: new Map(), paths: new Set(), closeFirst: new Set() }));
  return registry;
}

const statementNames = new Map<string, string>();

/** A stable name for (schema, SQL text); memoised, since the same few texts recur. */
function statementName(schema: string, text: string): string {
  const key = `${schema}\u0000${text}`;
  let name = statementNames.get(key);
  if (!name) {
    name = `sc_q_${createHash('sha256').update(key).digest('hex').slice(0, 24)}`;
    if (statementNames.size >= 10_000) statementNames.clear();
    statementNames.set(key, name);
  }
  return name;
}

export interface ScopedQueryOptions {
  /** Send `SET search_path` first (false when the connection is known to be on the schema, or the text is schema-qualified). */
  switchPath: boolean;
  /** Prepared statements kept per connection; 0 sends unnamed statements. */
  statementCacheSize: number;
}

/**
 * A query that runs inside one shard's schema in a single round trip. A schema-qualified text (see
 * qualify.ts) goes alone. Otherwise the `SET search_path` for the shard and the application's
 * statement go out together in one extended-protocol pipeline, before one Sync, and the SET's
 * CommandComplete is swallowed so the caller sees only its own result.
 *
 * Statements are prepared and cached per connection (named per schema and text, or per qualified
 * text), so a repeated query skips parsing and planning, as JDBC and pgx do. On the SET path the
 * SET runs every time it is needed, so functions resolving names at run time see the shard's schema.
 */
class SchemaScopedQuery extends BaseQuery {
  private readonly schema: string;
  private readonly options: ScopedQueryOptions;
  private pending = 0;
  /** Names this query parsed: if it fails, their state on the server is unknown. */
  private parsedHere: string[] = [];

  constructor(schema: string, statement: ScopedStatement, values: unknown[] | undefined, options: ScopedQueryOptions, callback: Callback) {
    const { text } = statement;
    const name = options.statementCacheSize > 0 ? (statement.name ?? statementName(schema, text)) : undefined;
    // pg copies the config object property by property (cloneQueryConfig) on every query: it holds
    // only what it must, values and callback going as arguments. A named statement is always sent
    // with the extended protocol; an unnamed one must be told (the SET goes in the same pipeline).
    super(name !== undefined ? { text, name } : { text, queryMode: 'extended' }, values, callback);
    this.schema = schema;
    this.options = options;
  }

  override prepare(connection: ProtocolConnection): void {
    const registry = this.options.statementCacheSize > 0 ? registryOf(connection) : undefined;
    if (registry && this.name) {
      const name = this.name;
      if (connection.parsedStatements[name] === undefined && connection.submittedNamedStatements[name] === undefined) {
        this.parsedHere.push(name);
      }
      registry.statements.delete(name);
      registry.statements.set(name, true);
      while (registry.statements.size > this.options.statementCacheSize) {
        const oldest = registry.statements.keys().next().value!;
        registry.statements.delete(oldest);
        delete connection.parsedStatements[oldest];
        registry.closeFirst.add(oldest);
      }
    }
    if (registry) {
      // Evicted and uncertain names go first, so the server never holds more than the cache size.
      for (const name of registry.closeFirst) {
        connection.close({ type: 'S', name });
        delete connection.parsedStatements[name];
        registry.paths.delete(name);
      }
      registry.closeFirst.clear();
    }
    if (this.options.switchPath) {
      const setPath = `set search_path to ${quoteIdent(this.schema)}`;
      if (registry) {
        const name = `sc_p_${this.schema}`;
        if (!registry.paths.has(name)) {
          connection.parse({ text: setPath, name, types: [] });
          registry.paths.add(name);
          this.parsedHere.push(name);
        }
        connection.bind({ portal: '', statement: name, values: [] });
      } else {
        connection.parse({ text: setPath, name: '', types: [] });
        connection.bind({ portal: '', statement: '', values: [] });
      }
      connection.execute({ portal: '', rows: 0 });
      this.pending = 1;
    }
    super.prepare(connection);
  }

  override handleCommandComplete(message: { command?: string }, connection: ProtocolConnection): void {
    if (this.pending > 0) {
      this.pending--;
      return;
    }
    super.handleCommandComplete(message, connection);
  }

  override handleError(err: Error, connection: ProtocolConnection): void {
    // node-postgres marks a name parsed on any ParseComplete of the pipeline; when a later step
    // failed we cannot tell what exists, so those names are closed and parsed afresh next time.
    const uncertain = isStalePlanError(err) && this.name ? [...this.parsedHere, this.name] : this.parsedHere;
    if (uncertain.length > 0 && this.options.statementCacheSize > 0) {
      const registry = registryOf(connection);
      for (const name of uncertain) {
        registry.closeFirst.add(name);
        registry.statements.delete(name);
        delete connection.parsedStatements[name];
        delete connection.submittedNamedStatements[name];
      }
    }
    super.handleError(err, connection);
  }
}

/** A statement's text and, for a schema-qualified one, its prepared statement's name. */
export interface ScopedStatement {
  text: string;
  name?: string;
}

/**
 * Runs one statement on `client` with `schema` as its search_path, in one round trip. With
 * `switchPath` false the caller knows the connection is already there, or the text is
 * schema-qualified, and the SET is left out.
 */
export function queryInSchema<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  schema: string,
  statement: ScopedStatement,
  values: unknown[] | undefined,
  options: ScopedQueryOptions,
): Promise<pg.QueryResult<R>> {
  return new Promise((resolve, reject) => {
    submitInSchema(client, schema, statement, values, options, (err, result) => (err ? reject(err) : resolve(result as pg.QueryResult<R>)));
  });
}

/** queryInSchema with a callback: for a caller that makes one promise of a whole checkout (see Router.runOnShard). */
export function submitInSchema(
  client: pg.ClientBase,
  schema: string,
  statement: ScopedStatement,
  values: unknown[] | undefined,
  options: ScopedQueryOptions,
  callback: (err: Error | null, result: pg.QueryResult) => void,
): void {
  client.query(new SchemaScopedQuery(schema, statement, values, options, callback) as unknown as pg.Submittable);
}

/** "cached plan must not change result type": a prepared statement outlived a change of its table. */
export function isStalePlanError(err: unknown): boolean {
  return (err as { code?: string }).code === '0A000' && /cached plan must not change result type/.test((err as Error).message);
}
