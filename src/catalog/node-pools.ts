import pg from 'pg';

/** One connection pool per node DSN, created on first use. */
export class NodePools {
  private readonly pools = new Map<string, pg.Pool>();
  constructor(private readonly options: { max?: number; applicationName?: string; connectionTimeoutMillis?: number } = {}) {}

  get(dsn: string): pg.Pool {
    let pool = this.pools.get(dsn);
    if (!pool) {
      pool = new pg.Pool({
        connectionString: dsn,
        max: this.options.max ?? 10,
        application_name: this.options.applicationName ?? 'shardcast',
        connectionTimeoutMillis: this.options.connectionTimeoutMillis ?? 5000,
        idleTimeoutMillis: 30_000,
      });
      // An idle client losing its server (node stopped) must not crash the process.
      pool.on('error', () => undefined);
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
