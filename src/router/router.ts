import { EventEmitter } from 'node:events';
import pg from 'pg';
import { guardPool, NodePools } from '../catalog/node-pools.js';
import { addRegionAccesses } from '../profiling/region-accesses.js';
import type { ProfileOptions, WorkloadProfile } from '../profiling/workload.js';
import { newPgClient, pgConnection, pgTlsDefaults, type PgTlsSettings } from '../catalog/pg-tls.js';
import { errorMessage, InvalidInputError, SHARD_FENCED_SQLSTATE, ShardcastError, UNDEFINED_SCHEMA_SQLSTATE, UNDEFINED_TABLE_SQLSTATE, UnknownTableError, sqlState } from '../errors.js';
import { loadSqlParser, StatementQualifier } from './qualify.js';
import { isStalePlanError, queryInSchema, submitInSchema, type ScopedStatement } from './scoped-query.js';
import { coveredBy, keyComparator, planRescatter, ScatterInterruptedError, shardInterval, type KeyInterval } from './scatter.js';
import { loadShardMap, type NodeCredentials, type ShardMap, type ShardRoute } from './shard-map.js';
import { isReadOnlyStatement, sqlWords } from './sql-words.js';

export interface RouterOptions {
  /**
   * The catalog database. Connect as the application role (`app.user`, made by `shardcast up` and
   * `shardcast nodes add`), which may read the shard map and nothing else of the catalog.
   */
  catalogUrl: string;
  /**
   * The user and password the router connects to the nodes with (the catalog holds the nodes'
   * addresses, never these). Default: the catalog URL's, which is right for the application role:
   * it has the same name and password on the catalog and on every node.
   */
  nodeUser?: string;
  nodePassword?: string;
  /**
   * TLS of the catalog and node connections whose URL names no sslmode: { sslmode: 'verify-full',
   * sslrootcert: '/path/ca.pem' }, optionally sslcert and sslkey. Default: $SHARDCAST_POSTGRES_SSLMODE,
   * $SHARDCAST_POSTGRES_SSLROOTCERT, … (src/catalog/pg-tls.ts), else pg's own defaults.
   */
  tls?: PgTlsSettings;
  /** Connections per node pool (default 10). */
  poolSize?: number;
  /** Backstop for a lost NOTIFY: how often to compare map_version with the catalog (default 5000 ms). */
  versionCheckIntervalMs?: number;
  /** How long a query that met a fenced shard waits for the map to change before failing (default 2000 ms). */
  fenceWaitMs?: number;
  applicationName?: string;
  /** Prepared statements kept per connection (default 100); 0 sends every statement unnamed. */
  statementCacheSize?: number;
  /**
   * LISTEN for map changes (default true). Turn it off where the catalog is reached through a
   * transaction-mode pooler that cannot LISTEN: the version check and the moved-shard retry remain.
   */
  listen?: boolean;
  /**
   * Write each distributed table's shard schema into the SQL text (parsed once per text with
   * PostgreSQL's parser) instead of sending `SET search_path` before it (default true). Statements
   * the rewrite cannot vouch for still take the SET path: see qualify.ts.
   */
  qualifyNames?: boolean;
  /** How long opening a connection to a node or the catalog may take (default 5000 ms). */
  connectTimeoutMs?: number;
  /** statement_timeout of application statements on the nodes (default 30000 ms; 0 for none). */
  statementTimeoutMs?: number;
  /** How long the router's own catalog queries (map loads, version checks) may take (default 5000 ms). */
  catalogTimeoutMs?: number;
  /**
   * How old the map may get, counted from when the catalog last confirmed it, before writes are
   * refused with MapTooStaleError (default 60000 ms). Reads go on being served from the map. A write
   * past it first tries to confirm the map with the catalog, so a quiet router is not refused.
   */
  maxStalenessMs?: number;
  /**
   * The region the application runs in (e.g. "eu"): the router counts the statements it sends to each
   * shard, in memory, and adds the counts to the catalog every `regionFlushIntervalMs`; the planner
   * prefers placing a shard in the region it is reached from (its locality weight). Unset: nothing is counted.
   */
  region?: string;
  /** How often the region counts are written to the catalog (default 60000 ms). */
  regionFlushIntervalMs?: number;
  /**
   * The workload profile (src/profiling/workload.ts), off by default: every statement is reduced to
   * its template (parsed once per SQL text) and counted per template, shard and shard-key value, in
   * bounded memory, and written to the catalog every `flushIntervalMs` (shardcast_stats.query_templates,
   * template_calls, shard_accesses, key_accesses, hot_keys; read by `shardcast hot`). No parameter value
   * is stored but the shard keys given to forKey. `true` takes the defaults.
   */
  profile?: boolean | ProfileOptions;
}

export interface RoutedQueryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
}

export interface ShardHandle extends RoutedQueryable {
  /** Where the key lives now, by the cached map. */
  route(): ShardRoute;
  /**
   * Runs `fn` in one transaction on the key's shard. When the shard moved under it, the transaction
   * was rolled back and `fn` runs once more on the new placement: keep `fn` free of outside effects.
   */
  transaction<T>(fn: (tx: RoutedQueryable) => Promise<T>): Promise<T>;
}

export interface ScatterResult<R> {
  rows: R[];
  rowCount: number;
  fields: pg.FieldDef[];
  shards: number;
}

/**
 * A write refused because the cached map is older than `maxStalenessMs` and the catalog cannot be
 * reached to confirm it: the shard may have moved meanwhile.
 */
export class MapTooStaleError extends ShardcastError {
  constructor(
    readonly stalenessMs: number,
    readonly maxStalenessMs: number,
    cause: unknown,
  ) {
    super(
      'MAP_TOO_STALE',
      `router: write refused: the shard map was last confirmed by the catalog ${Math.round(stalenessMs)} ms ago, over the maximum staleness of ` +
        `${maxStalenessMs} ms, and the catalog cannot be reached to confirm it (${errorMessage(cause instanceof CatalogUnavailableError ? cause.cause : cause)})`,
      { cause },
    );
  }
}

/** The catalog could not be read (down, unreachable, or too slow): the router keeps its map. */
export class CatalogUnavailableError extends ShardcastError {
  constructor(what: string, cause: unknown) {
    super('CATALOG_UNAVAILABLE', `router: ${what}: the catalog cannot be reached (${errorMessage(cause)})`, { cause });
  }
}

const NOTIFY_CHANNEL = 'shardcast_map';
/** After a failed catalog read, how long stale writes fail at once instead of trying the catalog again. */
const CATALOG_RETRY_MS = 1000;
/** How many times a scatter statement follows shards split or merged away under it before giving up. */
const MAX_RESCATTER_ROUNDS = 3;

/**
 * The data interface applications use instead of a bare pg.Pool: routes by shard key from a cached
 * shard map, refreshed on NOTIFY, on a periodic version check and when a shard has moved.
 */
export class Router extends EventEmitter {
  private map!: ShardMap;
  private readonly catalog: pg.Pool;
  /** One pool per node, by DSN. */
  private readonly pools: NodePools;
  /** The search_path each pooled connection was last left with, so an unchanged one is not set again. */
  private readonly connectionSchema = new WeakMap<pg.PoolClient, string>();
  private listener?: pg.Client;
  private versionTimer?: NodeJS.Timeout;
  private refreshing?: Promise<ShardMap>;
  private confirming?: Promise<void>;
  /** When (performance.now()) the catalog last confirmed the map current. */
  private confirmedAt = 0;
  private lastCatalogFailure?: { at: number; err: unknown };
  private readonly qualifier?: StatementQualifier;
  /** Statements sent schema-qualified, and with a SET search_path (of the router's own statements). */
  readonly statements = { qualified: 0, setPath: 0 };
  private closed = false;
  /** Statements sent to each shard since the last flush (with `region`). */
  private regionCounts = new Map<number, number>();
  private regionTimer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private readonly nodeCredentials: NodeCredentials;
  /** @internal The workload profile (with `profile`): undefined when off, so the routing path only tests it. */
  profile?: WorkloadProfile;
  private profileTimer?: NodeJS.Timeout;

  private constructor(private readonly options: RouterOptions) {
    super();
    const catalog = new URL(options.catalogUrl);
    this.nodeCredentials = {
      user: options.nodeUser ?? decodeURIComponent(catalog.username),
      password: options.nodePassword ?? decodeURIComponent(catalog.password),
    };
    const catalogTimeoutMs = options.catalogTimeoutMs ?? 5000;
    this.catalog = new pg.Pool({
      ...pgConnection(options.catalogUrl, options.tls ?? pgTlsDefaults()),
      max: 2,
      application_name: options.applicationName ?? 'shardcast-router',
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      statement_timeout: catalogTimeoutMs,
      // A catalog that stops answering without closing the connection: given up on the client side too.
      query_timeout: catalogTimeoutMs + 1000,
      keepAlive: true,
    });
    // Idle and checked-out catalog connections alike: a catalog going away must not crash the application.
    guardPool(this.catalog);
    this.pools = new NodePools({
      max: options.poolSize ?? 10,
      applicationName: options.applicationName ?? 'shardcast-router',
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      limits: { statementTimeoutMs: options.statementTimeoutMs ?? 30_000, keepAliveMs: 10_000 },
      ...(options.tls ? { tls: options.tls } : {}),
    });
    if (options.qualifyNames !== false) this.qualifier = new StatementQualifier();
  }

  static async create(options: RouterOptions): Promise<Router> {
    if (!options || typeof options.catalogUrl !== 'string' || !/^postgres(ql)?:\/\//.test(options.catalogUrl)) {
      throw new InvalidInputError('createRouter: catalogUrl must be a postgres:// connection URL');
    }
    if (options.region !== undefined && !(typeof options.region === 'string' && /^\S(.*\S)?$/.test(options.region))) {
      throw new InvalidInputError(`createRouter: region must be a non-empty name without surrounding spaces, got ${JSON.stringify(options.region)}`);
    }
    if (!URL.canParse(options.catalogUrl)) throw new InvalidInputError('createRouter: catalogUrl is not a valid URL');
    const router = new Router(options);
    try {
      if (options.profile) {
        const { WorkloadProfile } = await import('../profiling/workload.js');
        await WorkloadProfile.load();
        router.profile = new WorkloadProfile(options.profile === true ? {} : options.profile, options.region);
      }
      if (router.qualifier) await loadSqlParser();
      await router.refresh();
      if (options.listen !== false) await router.listen();
    } catch (err) {
      await router.close();
      throw err;
    }
    const interval = options.versionCheckIntervalMs ?? 5000;
    if (interval > 0) {
      // Failures are recorded and emitted as 'catalogError' (never 'error', which would throw without a listener).
      router.versionTimer = setInterval(() => void router.checkVersion().catch(() => undefined), interval);
      router.versionTimer.unref();
    }
    if (options.region !== undefined) {
      router.regionTimer = setInterval(() => void router.flushRegionAccesses().catch(() => undefined), options.regionFlushIntervalMs ?? 60_000);
      router.regionTimer.unref();
    }
    if (router.profile) {
      router.profileTimer = setInterval(() => void router.flushProfile().catch(() => undefined), router.profile.options.flushIntervalMs);
      router.profileTimer.unref();
    }
    return router;
  }

  get mapVersion(): number {
    return this.map.version;
  }

  get shardMap(): ShardMap {
    return this.map;
  }

  /** How long ago the catalog last confirmed the cached map current (ms). */
  get mapStalenessMs(): number {
    return performance.now() - this.confirmedAt;
  }

  /** The key's shard, for application SQL. Checks the table and the key's type now. */
  forKey(table: string, key: unknown): ShardHandle {
    if (typeof table !== 'string' || table.length === 0) throw new InvalidInputError('forKey: table name is required');
    // Routed now (a bad key fails here, clearly), again only once the map has changed.
    return new KeyHandle(this, table, key, this.map.tables.has(table) ? this.map.route(table, key) : undefined);
  }

  /** @internal Before a write: refuses it when the map is too stale and cannot be confirmed. */
  confirmIfStale(sql: string | undefined): Promise<void> | undefined {
    if (performance.now() - this.confirmedAt <= this.maxStalenessMs) return undefined;
    return sql === undefined || !isReadOnlyStatement(sql) ? this.confirmMap() : undefined;
  }

  /**
   * Runs `sql` on every shard of the colocation group it reads and concatenates the rows. The group
   * comes from `options.table`, or from the distributed table names found in the SQL. A split or
   * merge under it does not run it twice on any row (see scatter).
   */
  async all<R extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params?: unknown[],
    options: { table?: string } = {},
  ): Promise<ScatterResult<R>> {
    if (typeof sql !== 'string' || sql.trim() === '') throw new InvalidInputError('all: SQL text is required');
    let table = options.table ?? tableNamedIn(sql, this.map);
    if (table && !this.map.tables.has(table)) {
      await this.refresh();
      if (!this.map.tables.has(table)) throw new UnknownTableError(table);
    }
    table ??= tableNamedIn(sql, this.map);
    if (!table) {
      await this.refresh();
      table = tableNamedIn(sql, this.map);
      if (!table) throw new InvalidInputError('all: the SQL names no distributed table; pass { table } to say which shards to run on');
    }
    await this.confirmIfStale(sql);
    const profile = this.profile;
    if (profile === undefined) return this.scatter<R>(table, sql, params);
    const started = performance.now();
    const result = await this.scatter<R>(table, sql, params);
    profile.statement(sql, result.rowCount, performance.now() - started, true);
    profile.shardAccesses(table, this.map.shardsOf(table).map((r) => r.shardId));
    return result;
  }

  /**
   * Runs the statement once on every row of the group: a shard split or merged away under it is
   * owed, and the statement runs on its successors in the new map, which hold exactly its rows. A
   * successor that also holds rows the statement already ran on (a merge that raced it) takes it
   * again only if it is a read, by running the whole read anew; a write fails, naming the shards.
   */
  private async scatter<R extends pg.QueryResultRow>(group: string, sql: string, params: unknown[] | undefined): Promise<ScatterResult<R>> {
    const cmp = keyComparator(this.map.table(group));
    for (let fresh = 0; ; fresh++) {
      const results: Array<pg.QueryResult<R>> = [];
      const done: KeyInterval[] = [];
      let owed: Array<{ shardId: number; range: KeyInterval }> = [];
      let routes = this.map.shardsOf(group);
      for (let round = 0; ; round++) {
        const settled = await Promise.allSettled(routes.map((route) => this.runOnLiveShard<R>(group, route, sql, params)));
        let failure: unknown;
        settled.forEach((outcome, i) => {
          if (outcome.status === 'fulfilled') {
            results.push(outcome.value);
            done.push(shardInterval(routes[i]!));
          } else if (outcome.reason instanceof ShardRetired) {
            owed.push({ shardId: routes[i]!.shardId, range: shardInterval(routes[i]!) });
          } else {
            failure ??= outcome.reason;
          }
        });
        if (failure !== undefined) throw failure;
        owed = owed.filter((o) => !coveredBy(o.range, done, cmp));
        if (owed.length === 0) break;
        await this.refresh();
        const next = planRescatter(this.map.shardsOf(group), done, owed.map((o) => o.range), cmp);
        if (round >= MAX_RESCATTER_ROUNDS || next.run.length + next.mixed.length === 0) {
          throw new ShardcastError('SCATTER_RETIRED', `all: shard ${owed.map((o) => o.shardId).join(', ')} was split or merged away and the statement could not follow its rows; it ran on every other shard`);
        }
        if (next.mixed.length > 0) {
          // A read cannot be completed across such a merge, but may simply run whole again.
          if (isReadOnlyStatement(sql) && fresh < MAX_RESCATTER_ROUNDS) break;
          throw new ScatterInterruptedError(owed.map((o) => o.shardId), next.mixed.map((r) => r.shardId));
        }
        routes = next.run;
      }
      if (owed.length > 0) continue;
      const rows = results.flatMap((r) => r.rows);
      return { rows, rowCount: results.reduce((n, r) => n + (r.rowCount ?? 0), 0), fields: results[0]?.fields ?? [], shards: results.length };
    }
  }

  /** The statement on one shard of the group, following a move; ShardRetired if the shard is gone from the map. */
  private runOnLiveShard<R extends pg.QueryResultRow>(group: string, route: ShardRoute, sql: string, params: unknown[] | undefined): Promise<pg.QueryResult<R>> {
    return this.withPlacementRetry(
      undefined,
      async () => {
        const current = this.map.shardsOf(group).find((r) => r.shardId === route.shardId);
        // Split or merged away: this shard's rows now live in other shards of the new map.
        if (!current) throw new ShardRetired(route.shardId);
        return current;
      },
      (current) => this.runOnShard<R>(current, sql, params),
    );
  }

  /**
   * Reloads the map from the catalog. When the catalog cannot be reached the cached map stays and
   * CatalogUnavailableError is thrown (and emitted as 'catalogError').
   */
  async refresh(): Promise<ShardMap> {
    this.refreshing ??= (async () => {
      const started = performance.now();
      let client: pg.PoolClient | undefined;
      let failed: unknown;
      try {
        client = await this.catalog.connect();
        const map = await loadShardMap(client, this.nodeCredentials);
        if (!this.map || map.version >= this.map.version) {
          const previous = this.map?.version;
          this.map = map;
          if (previous !== undefined && previous !== map.version) this.emit('mapChanged', map.version);
          void this.pools.retain(map.dsns());
        }
        this.confirmed(started);
        return this.map;
      } catch (err) {
        failed = err;
        throw this.catalogFailed('loading the shard map', err);
      } finally {
        // A connection that failed mid-transaction is not put back.
        client?.release(failed instanceof Error ? failed : undefined);
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Resolves once the cached map is at `version` or newer. */
  async waitForVersion(version: number, timeoutMs = 5000): Promise<void> {
    if (this.map.version >= version) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('mapChanged', onChange);
        reject(new ShardcastError('MAP_TIMEOUT', `shard map did not reach version ${version} within ${timeoutMs} ms (at ${this.map.version})`));
      }, timeoutMs);
      const onChange = (): void => {
        if (this.map.version >= version) {
          clearTimeout(timer);
          this.off('mapChanged', onChange);
          resolve();
        }
      };
      this.on('mapChanged', onChange);
    });
  }

  /**
   * Adds the region counts gathered since the last flush to the catalog (every regionFlushIntervalMs,
   * and at close). When the catalog cannot take them they are kept for the next flush; a failure is
   * emitted as 'catalogError'.
   */
  async flushRegionAccesses(): Promise<void> {
    const region = this.options.region;
    if (region === undefined) return;
    await this.flushing;
    const counts = this.regionCounts;
    if (counts.size === 0) return;
    this.regionCounts = new Map();
    this.flushing = addRegionAccesses(this.catalog, region, counts)
      .catch((err: unknown) => {
        for (const [shard, n] of counts) this.regionCounts.set(shard, (this.regionCounts.get(shard) ?? 0) + n);
        if (!this.closed) this.emit('catalogError', new CatalogUnavailableError('recording region accesses', err));
        throw err;
      })
      .finally(() => (this.flushing = undefined));
    await this.flushing;
  }

  /**
   * Writes the workload profile's counts gathered since the last flush (every profile.flushIntervalMs,
   * and at close). When the catalog cannot take them they are kept for the next flush, which writes
   * them first and exactly once; a failure is emitted as 'catalogError'.
   */
  async flushProfile(): Promise<void> {
    if (!this.profile) return;
    try {
      await this.profile.flush(this.catalog);
    } catch (err) {
      if (!this.closed) this.emit('catalogError', new CatalogUnavailableError('recording the workload profile', err));
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.regionTimer) clearInterval(this.regionTimer);
    if (this.profileTimer) clearInterval(this.profileTimer);
    await this.flushRegionAccesses().catch(() => undefined);
    await this.flushProfile().catch(() => undefined);
    this.closed = true;
    if (this.versionTimer) clearInterval(this.versionTimer);
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => undefined);
    await this.pools.end();
    await this.catalog.end().catch(() => undefined);
  }

  get maxStalenessMs(): number {
    return this.options.maxStalenessMs ?? 60_000;
  }

  /** Compares map_version with the catalog's, reloading the map when it is behind. */
  private async checkVersion(): Promise<void> {
    const started = performance.now();
    let version: number;
    try {
      const { rows } = await this.catalog.query<{ version: string }>('select version::text as version from shardcast.map_version');
      version = Number(rows[0]!.version);
    } catch (err) {
      throw this.catalogFailed('checking the map version', err);
    }
    if (version > this.map.version) await this.refresh();
    else this.confirmed(started);
  }

  private confirmed(at: number): void {
    if (at > this.confirmedAt) this.confirmedAt = at;
    this.lastCatalogFailure = undefined;
  }

  private catalogFailed(what: string, err: unknown): CatalogUnavailableError {
    const failure = err instanceof CatalogUnavailableError ? err : new CatalogUnavailableError(what, err);
    this.lastCatalogFailure = { at: performance.now(), err: failure };
    if (!this.closed) this.emit('catalogError', failure);
    return failure;
  }

  /**
   * Before a write on a map older than maxStalenessMs: confirms the map with the catalog, or refuses
   * the write. Shortly after a failed attempt, refuses at once instead of waiting on the catalog again.
   */
  private async confirmMap(): Promise<void> {
    const failure = this.lastCatalogFailure;
    if (!failure || performance.now() - failure.at > CATALOG_RETRY_MS) {
      this.confirming ??= this.checkVersion().finally(() => {
        this.confirming = undefined;
      });
      await this.confirming.catch(() => undefined);
    }
    const staleness = this.mapStalenessMs;
    if (staleness > this.maxStalenessMs) throw new MapTooStaleError(staleness, this.maxStalenessMs, this.lastCatalogFailure?.err ?? failure?.err);
  }

  private async listen(): Promise<void> {
    const client = newPgClient(this.options.catalogUrl, {
      application_name: 'shardcast-router-listen',
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5000,
      keepAlive: true,
    }, this.options.tls ?? pgTlsDefaults());
    client.on('notification', (msg) => {
      if (msg.channel === NOTIFY_CHANNEL && Number(msg.payload) > this.map.version) {
        this.refresh().catch(() => undefined); // recorded and emitted as 'catalogError'
      }
    });
    client.on('error', () => undefined);
    client.on('end', () => {
      if (this.closed || this.listener !== client) return;
      this.listener = undefined;
      this.relisten(1);
    });
    await client.connect();
    await client.query(`listen ${NOTIFY_CHANNEL}`);
    this.listener = client;
    // A change may have landed between the first load and LISTEN (if the catalog fails here, the version check catches up).
    await this.checkVersion().catch(() => undefined);
  }

  private relisten(attempt: number): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.listen().catch(() => this.relisten(Math.min(attempt + 1, 10)));
    }, Math.min(100 * 2 ** attempt, 5000));
    timer.unref();
  }

  /**
   * The statement as sent to `schema`: schema-qualified when the rewrite can vouch for it, else the
   * application's text, to run after `SET search_path`.
   */
  private placed(schema: string, sql: string): ScopedStatement & { qualified: boolean } {
    const q = this.qualifier?.qualify(sql, this.map.tables, schema);
    if (q?.qualified) {
      this.statements.qualified++;
      return q;
    }
    this.statements.setPath++;
    return { text: sql, qualified: false };
  }

  /** One access to the shard from this router's region (a map increment: the flush writes them). */
  private countAccess(shardId: number): void {
    this.regionCounts.set(shardId, (this.regionCounts.get(shardId) ?? 0) + 1);
  }

  /**
   * @internal One statement on the shard: a pooled connection checked out, the statement sent, the
   * connection released, under a single promise and with callbacks inside, as pg.Pool.query does:
   * an awaited checkout, an awaited query and their async frames cost client CPU on every statement
   * (`client_cpu_us` in `npm run bench -- router`).
   */
  runOnShard<R extends pg.QueryResultRow>(route: ShardRoute, sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.options.region !== undefined) this.countAccess(route.shardId);
    const statementCacheSize = this.options.statementCacheSize ?? 100;
    return new Promise((resolve, reject) => {
      this.pools.get(route.dsn).connect((connectErr, checkedOut, release) => {
        if (connectErr || !checkedOut) {
          reject(connectErr ?? new Error(`no connection to ${route.nodeName}`));
          return;
        }
        const client = guard(checkedOut);
        let statement: ScopedStatement & { qualified: boolean };
        try {
          statement = this.placed(route.schema, sql);
        } catch (err) {
          release();
          reject(err);
          return;
        }
        const qualified = statement.qualified;
        const switchPath = !qualified && this.connectionSchema.get(client) !== route.schema;
        const done = (err: Error | null, result: pg.QueryResult): void => {
          if (err) {
            // A SET sent with the failed statement ran in its implicit transaction and was undone with it.
            if (switchPath) this.connectionSchema.delete(client);
            release(isConnectionLoss(err));
            reject(err);
            return;
          }
          if (!qualified) this.connectionSchema.set(client, route.schema);
          release();
          resolve(result as pg.QueryResult<R>);
        };
        submitInSchema(client, route.schema, statement, params, { switchPath, statementCacheSize }, (err, result) => {
          // The table changed shape under a cached plan: the statement was dropped; prepare it anew.
          if (err && isStalePlanError(err)) submitInSchema(client, route.schema, statement, params, { switchPath: !qualified, statementCacheSize }, done);
          else done(err, result);
        });
      });
    });
  }

  /** @internal */
  async transactionOnShard<T>(route: ShardRoute, fn: (tx: RoutedQueryable) => Promise<T>): Promise<T> {
    if (this.options.region !== undefined) this.countAccess(route.shardId);
    const client = guard(await this.pools.get(route.dsn).connect());
    let onSchema = this.connectionSchema.get(client) === route.schema;
    let broken = false;
    try {
      await client.query('begin');
      try {
        const tx: RoutedQueryable = {
          query: async <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) => {
            const statement = this.placed(route.schema, sql);
            const qualified = statement.qualified;
            const started = this.profile === undefined ? 0 : performance.now();
            const result = await queryInSchema<R>(client, route.schema, statement, params, {
              switchPath: !qualified && !onSchema,
              statementCacheSize: this.options.statementCacheSize ?? 100,
            });
            if (!qualified) onSchema = true;
            this.profile?.statement(sql, result.rowCount ?? 0, performance.now() - started, false);
            return result;
          },
        };
        const result = await fn(tx);
        await client.query('commit');
        if (onSchema) this.connectionSchema.set(client, route.schema);
        return result;
      } catch (err) {
        // Rolling back also undoes a SET made inside: the connection is where it was before begin.
        await client.query('rollback').catch(() => {
          broken = true;
        });
        throw err;
      }
    } catch (err) {
      broken ||= isConnectionLoss(err);
      throw err;
    } finally {
      client.release(broken);
    }
  }

  /**
   * @internal Runs `work` on the key's current placement (`known`, or else resolved); if the shard
   * turns out to have left that node (a fence error, or its schema gone after a map change),
   * refreshes the map and retries once.
   */
  async withPlacementRetry<T>(known: ShardRoute | undefined, resolve: () => Promise<ShardRoute>, work: (route: ShardRoute) => Promise<T>): Promise<T> {
    const route = known ?? (await resolve());
    try {
      return await work(route);
    } catch (err) {
      return this.retryElsewhere(route, err, resolve, work);
    }
  }

  /**
   * @internal After `work` failed on `route` with `err`: when the shard has left that placement, the
   * map is refreshed and `work` runs once on the new one; otherwise `err` is thrown again.
   */
  async retryElsewhere<T>(route: ShardRoute, err: unknown, resolve: () => Promise<ShardRoute>, work: (route: ShardRoute) => Promise<T>): Promise<T> {
    const code = sqlState(err);
    const fenced = code === SHARD_FENCED_SQLSTATE;
    if (!fenced && code !== UNDEFINED_TABLE_SQLSTATE && code !== UNDEFINED_SCHEMA_SQLSTATE) throw err;
    const versionAtFailure = this.map.version;
    try {
      await this.refresh();
    } catch (refreshErr) {
      throw new CatalogUnavailableError(
        `shard ${route.shardId} is no longer at ${route.nodeName} (${route.schema}, SQLSTATE ${code}) and where it went cannot be learned`,
        refreshErr instanceof CatalogUnavailableError ? refreshErr.cause : refreshErr,
      );
    }
    let next = await resolve();
    if (samePlacement(next, route) && fenced) {
      // The fence can commit a moment before the catalog switch: wait for the map to change.
      await this.waitForVersion(versionAtFailure + 1, this.options.fenceWaitMs ?? 2000).catch(() => undefined);
      next = await resolve();
    }
    if (samePlacement(next, route)) throw err;
    this.emit('retried', { from: route, to: next, code });
    return work(next);
  }
}

/** The handle forKey returns: its route is computed once per map. */
class KeyHandle implements ShardHandle {
  private map: ShardMap;

  constructor(
    private readonly router: Router,
    private readonly table: string,
    private readonly key: unknown,
    private known: ShardRoute | undefined,
  ) {
    this.map = router.shardMap;
  }

  route(): ShardRoute {
    const map = this.router.shardMap;
    if (this.known === undefined || this.map !== map) {
      this.known = map.route(this.table, this.key);
      this.map = map;
    }
    return this.known;
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    let stale: Promise<void> | undefined;
    let known: ShardRoute | undefined;
    try {
      stale = this.router.confirmIfStale(sql);
      known = stale === undefined && this.router.profile === undefined ? this.current() : undefined;
    } catch (err) {
      // A bad key under a new map, or SQL that is not text: a rejection, as from any query.
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (known === undefined) return this.queryAfterChecks(stale, sql, params);
    // The common case, without an async frame: the route is known and the map fresh enough.
    const work = (route: ShardRoute) => this.router.runOnShard<R>(route, sql, params);
    return work(known).catch((err: unknown) => this.router.retryElsewhere(known, err, () => this.resolve(), work));
  }

  private async queryAfterChecks<R extends pg.QueryResultRow>(stale: Promise<void> | undefined, sql: string, params?: unknown[]): Promise<pg.QueryResult<R>> {
    if (stale) await stale;
    const profile = this.router.profile;
    if (profile === undefined) return this.router.withPlacementRetry(this.current(), () => this.resolve(), (route) => this.router.runOnShard<R>(route, sql, params));
    const started = performance.now();
    const result = await this.router.withPlacementRetry(this.current(), () => this.resolve(), (route) => this.router.runOnShard<R>(route, sql, params));
    profile.statement(sql, result.rowCount ?? 0, performance.now() - started, false);
    profile.keyAccess(this.table, this.key, this.route().shardId);
    return result;
  }

  async transaction<T>(fn: (tx: RoutedQueryable) => Promise<T>): Promise<T> {
    // What the transaction will do is not known beforehand: it counts as a write.
    const stale = this.router.confirmIfStale(undefined);
    if (stale) await stale;
    const result = await this.router.withPlacementRetry(this.current(), () => this.resolve(), (route) => this.router.transactionOnShard(route, fn));
    // A transaction is one access to its key (its statements are counted one by one, by template).
    this.router.profile?.keyAccess(this.table, this.key, this.route().shardId);
    return result;
  }

  /** The route when the table is in the current map, without waiting. */
  private current(): ShardRoute | undefined {
    return this.router.shardMap.tables.has(this.table) ? this.route() : undefined;
  }

  private async resolve(): Promise<ShardRoute> {
    if (!this.router.shardMap.tables.has(this.table)) await this.router.refresh();
    return this.route();
  }
}

/** Pooled node connections that already have an 'error' listener of the router's. */
const guarded = new WeakSet<pg.PoolClient>();

/**
 * pg.Pool listens for errors only on idle clients: a node going away during a query would otherwise
 * emit an unhandled 'error' on the checked-out client and crash the application.
 */
function guard(client: pg.PoolClient): pg.PoolClient {
  if (!guarded.has(client)) {
    client.on('error', () => undefined);
    guarded.add(client);
  }
  return client;
}

/** A shard of a scatter query that the refreshed map no longer has (a split or merge retired it). */
class ShardRetired extends Error {
  constructor(readonly shardId: number) {
    super(`shard ${shardId} was split or merged away`);
  }
}

function samePlacement(a: ShardRoute, b: ShardRoute): boolean {
  return a.dsn === b.dsn && a.schema === b.schema;
}

function isConnectionLoss(err: unknown): boolean {
  const code = sqlState(err) ?? '';
  return code.startsWith('08') || code.startsWith('57P') || code === 'ECONNRESET' || code === 'EPIPE';
}

/**
 * The first known distributed table named in `sql`, outside string literals, comments and
 * dollar-quoted bodies; quoted identifiers count. Good enough to pick a colocation group; anything
 * subtler passes { table } explicitly.
 */
export function tableNamedIn(sql: string, map: ShardMap): string | undefined {
  for (const { word } of sqlWords(sql)) if (map.tables.has(word)) return word;
  return undefined;
}

export function createRouter(options: RouterOptions): Promise<Router> {
  return Router.create(options);
}
