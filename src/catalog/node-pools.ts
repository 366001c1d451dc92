import pg from 'pg';
import { resolveDsn } from './dsn-password.js';
import { pgConnection, pgTlsDefaults, type PgTlsSettings } from './pg-tls.js';

/**
 * Limits every connection of a pool runs with, so that a hung or partitioned worker cannot hold a
 * lock (or a transaction pinning WAL and xmin) for long: the server ends a statement, an idle
 * transaction, or a connection whose client stopped answering (TCP keepalives on both ends).
 */
export interface SessionLimits {
  /** statement_timeout: a statement running longer is cancelled. Only for short-statement pools (the cutover's): a COPY runs long. */
  statementTimeoutMs?: number;
  /** idle_in_transaction_session_timeout: a transaction left idle this long is ended, its locks released. */
  idleInTransactionTimeoutMs?: number;
  /** TCP keepalive idle time, client and server side; the server gives up after three unanswered probes this far apart. */
  keepAliveMs?: number;
}

/** The pg settings (startup parameters and `options`) for these limits. */
export function sessionSettings(limits: SessionLimits = {}): Pick<pg.PoolConfig, 'statement_timeout' | 'idle_in_transaction_session_timeout' | 'keepAlive' | 'keepAliveInitialDelayMillis' | 'options'> {
  const settings: ReturnType<typeof sessionSettings> = {};
  if (limits.statementTimeoutMs) settings.statement_timeout = limits.statementTimeoutMs;
  if (limits.idleInTransactionTimeoutMs) settings.idle_in_transaction_session_timeout = limits.idleInTransactionTimeoutMs;
  if (limits.keepAliveMs) {
    const seconds = Math.max(1, Math.round(limits.keepAliveMs / 1000));
    settings.keepAlive = true;
    settings.keepAliveInitialDelayMillis = limits.keepAliveMs;
    // The server's side: a backend whose worker vanished is ended (and its transaction rolled back) within ~4 keepalive periods.
    settings.options = `-c tcp_keepalives_idle=${seconds} -c tcp_keepalives_interval=${seconds} -c tcp_keepalives_count=3`;
  }
  return settings;
}

/**
 * A pool's clients report a lost server as an 'error' event; pg-pool listens only while a client
 * is idle, so one checked out (held between statements by a cutover, an applier or a lock) would
 * crash the process. Here every client keeps a listener: the loss surfaces as its next query's
 * error instead, and the client is discarded on release.
 */
export function guardPool(pool: pg.Pool): pg.Pool {
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** One connection pool per node DSN, created on first use. */
export class NodePools {
  private readonly pools = new Map<string, pg.Pool>();
  constructor(
    private readonly options: {
      max?: number;
      applicationName?: string;
      connectionTimeoutMillis?: number;
      limits?: SessionLimits;
      /** TLS of the nodes whose DSN names no sslmode (default: the process's, src/catalog/pg-tls.ts). */
      tls?: PgTlsSettings;
    } = {},
  ) {}

  get(dsn: string): pg.Pool {
    let pool = this.pools.get(dsn);
    if (!pool) {
      pool = new pg.Pool({
        ...pgConnection(resolveDsn(dsn), this.options.tls ?? pgTlsDefaults()),
        max: this.options.max ?? 10,
        application_name: this.options.applicationName ?? 'shardcast',
        connectionTimeoutMillis: this.options.connectionTimeoutMillis ?? 5000,
        idleTimeoutMillis: 30_000,
        ...sessionSettings(this.options.limits),
      });
      // A client losing its server (node stopped, backend terminated) must not crash the process.
      guardPool(pool);
      this.pools.set(dsn, pool);
    }
    return pool;
  }

  /** Closes the pools of DSNs no longer in use (after a map change). */
  async retain(dsns: Set<string>): Promise<void> {
    const gone = [...this.pools].filter(([dsn]) => !dsns.has(dsn));
    for (const [dsn] of gone) this.pools.delete(dsn);
    await Promise.all(gone.map(([, pool]) => pool.end().catch(() => undefined)));
  }

  async end(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  }
}
