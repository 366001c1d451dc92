import pg from 'pg';
import { quoteIdent } from '../sql/ident.js';

/** The parts of node-postgres's Connection this query writes to (pg/lib/connection.js). */
interface ProtocolConnection {
  parse(config: { text: string; name?: string; types?: unknown[] }): void;
  bind(config: { portal?: string; statement?: string; values?: unknown[] }): void;
  execute(config: { portal?: string; rows?: number }): void;
}

interface QueryInternals {
  prepare(connection: ProtocolConnection): void;
  handleCommandComplete(message: { command?: string; text?: string }, connection: ProtocolConnection): void;
}

const BaseQuery = pg.Query as unknown as new (config: pg.QueryConfig & { callback: (err: Error | null, result: pg.QueryResult) => void }) => QueryInternals;

/**
 * A query that runs inside one shard's schema in a single round trip: the `SET search_path` for the
 * shard and the application's statement go out together in one extended-protocol pipeline, before
 * one Sync. Its CommandComplete is swallowed so the caller sees only its own statement's result.
 * This is what keeps a routed point query within a few percent of a bare one (bench: router).
 */
class SchemaScopedQuery extends BaseQuery {
  private readonly setPath: string;
  private setAcknowledged = false;

  constructor(schema: string, config: pg.QueryConfig, callback: (err: Error | null, result: pg.QueryResult) => void) {
    super({ ...config, queryMode: 'extended', callback } as pg.QueryConfig & { callback: typeof callback });
    this.setPath = `set search_path to ${quoteIdent(schema)}`;
  }

  override prepare(connection: ProtocolConnection): void {
    connection.parse({ text: this.setPath, name: '', types: [] });
    connection.bind({ portal: '', statement: '', values: [] });
    connection.execute({ portal: '', rows: 0 });
    super.prepare(connection);
  }

  override handleCommandComplete(message: { command?: string }, connection: ProtocolConnection): void {
    if (!this.setAcknowledged) {
      this.setAcknowledged = true;
      return;
    }
    super.handleCommandComplete(message, connection);
  }
}

/** Runs one statement on `client` with `schema` as its search_path. */
export function queryInSchema<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  schema: string,
  text: string | pg.QueryConfig,
  values?: unknown[],
): Promise<pg.QueryResult<R>> {
  const config: pg.QueryConfig = typeof text === 'string' ? { text, values } : { ...text, values: values ?? text.values };
  return new Promise((resolve, reject) => {
    const query = new SchemaScopedQuery(schema, config, (err, result) => (err ? reject(err) : resolve(result as pg.QueryResult<R>)));
    client.query(query as unknown as pg.Submittable);
  });
}
