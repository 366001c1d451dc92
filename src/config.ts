import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { COMPRESSIONS, setClockCompression } from './clock.js';
import { ConfigError } from './errors.js';
import { DEFAULT_GOVERNOR } from './movement/governor-settings.js';
import { SSL_MODES, type PgTlsSettings } from './catalog/pg-tls-settings.js';
import { parseListenAddress } from './listen-address.js';
import { embeddedPasswordFile, readEmbeddedPassword } from './fleet/embedded-password.js';

const port = z.number().int().min(1).max(65535);
const identifier = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'lower-case letters, digits, "-" or "_", starting with a letter');

const registeredNode = z
  .object({
    name: identifier,
    dsn: z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// connection URL'),
    region: z.string().optional(),
    zone: z.string().optional(),
    /** In load units; absent: calibrated from the node's own history. */
    capacity: z.number().positive().optional(),
    state: z.enum(['active', 'standby', 'draining', 'retired']).default('active'),
  })
  .strict();

/** What an external provisioner's settings share: its calls' time limit, and what the planner assumes of a node not yet created. */
const provisionerOptions = {
  timeoutSeconds: z.number().int().min(1).max(86_400).default(600),
  capacity: z.number().gt(0).optional(),
  region: z.string().min(1).optional(),
  zone: z.string().min(1).optional(),
};

export const configSchema = z
  .object({
    /** Where the embedded stack keeps its PostgreSQL data, Temporal's SQLite file and logs. */
    dataDir: z.string().min(1).default('.shardcast'),
    catalog: z
      .object({
        /** An existing catalog database; when absent the embedded catalog PostgreSQL is started. */
        url: z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// connection URL').optional(),
        port: port.default(5440),
        database: identifier.default('shardcast'),
      })
      .strict()
      .prefault({}),
    nodes: z
      .object({
        /** How many embedded node PostgreSQLs `shardcast up` starts; 3, or 0 when catalog.url names an existing catalog. */
        count: z.number().int().min(0).max(64).default(3),
        basePort: port.default(5441),
        database: identifier.default('shardcast'),
        /**
         * max_slot_wal_keep_size of the embedded nodes: WAL a replication slot may hold back before
         * PostgreSQL invalidates it, so a leftover slot cannot fill the disk. External nodes: set it yourself.
         */
        maxSlotWalKeepSize: z.string().regex(/^(-1|\d+(kB|MB|GB|TB))$/, 'a size such as 10GB (or -1 for no limit)').default('10GB'),
        /** Nodes registered in the catalog at start-up when missing (a real deployment's fleet). */
        register: z.array(registeredNode).default([]),
      })
      .strict()
      .prefault({}),
    postgres: z
      .object({
        user: identifier.default('postgres'),
        /** Default: a random password generated at the first start, kept in <dataDir>/postgres-password (mode 0600). */
        password: z.string().min(1).optional(),
        /**
         * TLS of every connection to the catalog and the nodes (and of the subscriptions between nodes) whose
         * DSN names no sslmode of its own: disable, prefer, require, verify-ca or verify-full. Default: pg's (no TLS unless PGSSLMODE).
         */
        sslmode: z.enum(SSL_MODES).optional(),
        /** PEM file of the CA that signed the servers' certificates (verify-ca, verify-full). */
        sslrootcert: z.string().min(1).optional(),
        /** PEM files of a client certificate and its key, for servers that ask for one (given together). */
        sslcert: z.string().min(1).optional(),
        sslkey: z.string().min(1).optional(),
        /** sslrootcert's path on the nodes' own hosts, for the subscriptions a node opens to another (default: sslrootcert). */
        nodeSslrootcert: z.string().min(1).optional(),
      })
      .strict()
      .prefault({})
      .superRefine((pgc, ctx) => {
        if ((pgc.sslcert === undefined) !== (pgc.sslkey === undefined)) {
          ctx.addIssue({ code: 'custom', path: [pgc.sslcert === undefined ? 'sslcert' : 'sslkey'], message: 'the client certificate (sslcert) and its key (sslkey) go together' });
        }
      }),
    app: z
      .object({
        /** Create (or update) the application role on the catalog and every node at `up`/`worker` start and at `nodes add`. */
        provision: z.boolean().default(true),
        /** The application role: DML on shard schemas only, read-only on the catalog's shard map; what the router connects as. */
        user: identifier.default('shardcast_app'),
        /** Default: a random password generated at the first start, kept in <dataDir>/app-password (mode 0600). */
        password: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    temporal: z
      .object({
        /** host:port of an existing Temporal frontend; when absent the embedded dev server is started. */
        address: z.string().regex(/^[^\s:]+:\d+$/, 'host:port').optional(),
        namespace: z.string().min(1).default('default'),
        port: port.default(7233),
        uiPort: port.default(8233),
        taskQueue: z.string().min(1).default('shardcast-control'),
        /** TLS to an existing Temporal frontend (temporal.address): server CA, client certificate for mTLS, server name. */
        tls: z
          .object({
            /** TLS with the system's trusted CAs, without any file (Temporal Cloud with an API key needs nothing more). */
            enabled: z.boolean().default(false),
            /** PEM file of the CA that signed the server's certificate (default: the system's trusted CAs). */
            caFile: z.string().min(1).optional(),
            /** PEM files of the client certificate and its private key (mTLS), given together. */
            certFile: z.string().min(1).optional(),
            keyFile: z.string().min(1).optional(),
            /** The name the server's certificate is checked against (SNI), when it differs from the address's host. */
            serverName: z.string().min(1).optional(),
          })
          .strict()
          .prefault({})
          .superRefine((tls, ctx) => {
            if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
              ctx.addIssue({ code: 'custom', path: [tls.certFile === undefined ? 'certFile' : 'keyFile'], message: 'the client certificate (certFile) and its key (keyFile) go together' });
            }
          }),
        /** API key (Temporal Cloud), sent as a bearer token over TLS; prefer apiKeyFile or the environment to a key in the file. */
        apiKey: z.string().min(1).optional(),
        /** A file holding the API key. */
        apiKeyFile: z.string().min(1).optional(),
        /** Payload encryption (AES-256-GCM) of everything Shardcast puts in Temporal; on when a key is configured. */
        encryption: z
          .object({
            /** A file of keys, one `KEY_ID=BASE64` per line; keys may also come from $SHARDCAST_TEMPORAL_ENCRYPTION_KEYS. */
            keyFile: z.string().min(1).optional(),
            /** The key new payloads are encrypted with (needed when more than one key is configured). */
            keyId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, '1-64 letters, digits, ".", "_" or "-"').optional(),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({})
      .superRefine((temporal, ctx) => {
        if (temporal.apiKey !== undefined && temporal.apiKeyFile !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['apiKeyFile'], message: 'give the API key once: apiKey or apiKeyFile, not both' });
        }
      }),
    codecServer: z
      .object({
        /** host:port of `shardcast codec-server` (the Temporal UI and CLI decode payloads through it). */
        listen: z.string().refine((v) => parseListenAddress(v) !== undefined, 'host:port, port 0-65535').default('127.0.0.1:8888'),
        /** Origins whose browsers may call it (the Temporal UI's address), e.g. http://127.0.0.1:8233. */
        corsOrigins: z.array(z.string().regex(/^https?:\/\/[^\s/]+$/, 'an origin such as http://127.0.0.1:8233 (scheme, host, port; no path)')).default([]),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        /** Prometheus endpoint of the worker; 0 turns it off. */
        port: z.number().int().min(0).max(65535).default(9464),
        /** The address it listens on: loopback unless opened (0.0.0.0, or one interface's address) for a Prometheus elsewhere. */
        host: z.string().regex(/^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9.-]+)$/, 'a host name or IP address').default('127.0.0.1'),
      })
      .strict()
      .prefault({}),
    clock: z
      .object({
        /**
         * Runs the load clock N times faster (src/clock.ts): 5-minute steps of 300/N s, an hour of
         * 3600/N s, a day of 86400/N s, and the schedules and planning windows with them. 1 in production;
         * 60 plays a day in 24 minutes. A divisor of 300.
         */
        compression: z
          .number()
          .int()
          .refine((n) => (COMPRESSIONS as readonly number[]).includes(n), `one of ${COMPRESSIONS.join(', ')} (a divisor of 300)`)
          .default(1),
      })
      .strict()
      .prefault({}),
    collection: z
      .object({
        /** Seconds between two statistics samples of every node. */
        intervalSeconds: z.number().int().min(1).max(3600).default(15),
        /** Days of samples kept; older daily partitions are dropped. */
        retentionDays: z.number().int().min(1).max(3650).default(35),
      })
      .strict()
      .prefault({}),
    forecast: z
      .object({
        /** TensorFlow.js backend of the LSTM: tensorflow (needs @tensorflow/tfjs-node installed), wasm, cpu, or auto (the first available). */
        backend: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'),
        /** When the daily retraining starts, HH:MM UTC (schedule shardcast-retrain-daily). */
        retrainAt: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a UTC time HH:MM').default('03:00'),
        /** How late a missed scheduled run (server or workers down) may still start. */
        catchupWindowMinutes: z.number().int().min(1).max(1440).default(60),
        /** Days of history each series is trained on. */
        trainingDays: z.number().int().min(1).max(365).default(30),
        /** Fitting seconds per model and series, half back-test and half final fit: ~6 s a series in all with five members and the search, so 100 series take ~10 minutes on one worker. */
        budgetSeconds: z.number().positive().max(600).default(1.2),
        /**
         * Seconds of hyperparameter search (TPE) per series for each model that has one (the LSTM), before its back-test; 0 keeps the defaults.
         * 0.8 since the Theta and MSTL members joined (1.5 before): the retrain's ten minutes for 100 series hold five members, and
         * at these budgets the searched LSTM scored no better than its defaults (bench forecast: tuned ÷ defaults 1.02).
         */
        searchSeconds: z.number().min(0).max(600).default(0.8),
        /** Threads per worker that train series (off the worker's event loop); at most the machine's cores make sense. */
        threads: z.number().int().min(1).max(64).default(1),
        /** Series per training or forecasting activity (heartbeating after each). */
        batchSize: z.number().int().min(1).max(1000).default(10),
        /** Batches running at once, shared by the workers of the task queue. */
        parallelBatches: z.number().int().min(1).max(64).default(4),
      })
      .strict()
      .prefault({}),
    movement: z
      .object({
        /** Every movement waits for an `approve` signal before its cutover. */
        requireApproval: z.boolean().default(false),
        /** … and so does a movement of a shard larger than this many bytes … */
        approvalOverBytes: z.number().int().min(0).optional(),
        /** … or one that would cut over inside these UTC hours, [from, to), wrapping past midnight. */
        approvalHoursUtc: z.tuple([z.number().int().min(0).max(23), z.number().int().min(0).max(24)]).optional(),
        /** How long the fenced source copy is kept after a cutover, in seconds. */
        graceSeconds: z.number().int().min(0).max(30 * 86_400).default(300),
        /** Running movements a node may take part in at once. */
        maxPerNode: z.number().int().min(1).max(64).default(2),
        /** The cutover starts once the replication lag is at most this many bytes. */
        catchUpLagBytes: z.number().int().min(0).default(1024 * 1024),
        /** statement_timeout of the cutover's connections (source and catalog): a stuck statement cannot hold the write lock longer. */
        statementTimeoutSeconds: z.number().int().min(1).max(86_400).default(60),
        /** idle_in_transaction_session_timeout of the worker's node connections: a transaction its worker abandoned ends, with its locks. */
        idleInTransactionTimeoutSeconds: z.number().int().min(1).max(86_400).default(30),
        /** TCP keepalive of the worker's node connections (both ends): a vanished worker's session ends within about four of these. */
        keepAliveSeconds: z.number().int().min(1).max(7200).default(10),
        /** The copy governor (src/movement/governor.ts): paces copy and apply to keep the nodes' own latency near its idle value. */
        governor: z
          .object({
            enabled: z.boolean().default(DEFAULT_GOVERNOR.enabled),
            /** Copying holds while the probe's recent p90 exceeds this many times its idle baseline. */
            latencyRatio: z.number().min(1).max(100).default(DEFAULT_GOVERNOR.latencyRatio),
            probeIntervalMs: z.number().int().min(10).max(10_000).default(DEFAULT_GOVERNOR.probeIntervalMs),
            /** A split's or merge's apply is paced only while its lag is at most this many bytes. */
            maxLagBytes: z.number().int().min(0).default(DEFAULT_GOVERNOR.maxLagBytes),
            minBaselineMs: z.number().min(0).max(10_000).default(DEFAULT_GOVERNOR.minBaselineMs),
            maxPauseMs: z.number().int().min(0).max(600_000).default(DEFAULT_GOVERNOR.maxPauseMs),
            chunkRows: z.number().int().min(1).max(10_000_000).default(DEFAULT_GOVERNOR.chunkRows),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    janitor: z
      .object({
        /** Minutes between two janitor runs (schedule shardcast-janitor): leftovers of closed movements found, counted and fixed; 0 turns it off. */
        intervalMinutes: z.number().int().min(0).max(1440).default(10),
        /** false: the janitor only counts (metric shardcast_leftovers), `shardcast doctor --fix` cleans. */
        fix: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    restore: z
      .object({
        /** A restore waits for `shardcast approve` (or `--yes`) after printing its proposal, before it creates anything. */
        requireApproval: z.boolean().default(true),
        /** Import units running at once, spread over the workers. */
        parallelism: z.number().int().min(1).max(64).default(4),
        /** Record batches (up to 65,536 rows each) per import unit: what a retried unit repeats at most. */
        batchesPerUnit: z.number().int().min(1).max(10_000).default(2),
      })
      .strict()
      .prefault({}),
    retention: z
      .object({
        /** Where the retention of restored tables archives expired rows: a backup directory per run and table (default <dataDir>/archive). */
        archiveDir: z.string().min(1).optional(),
        /** Schedule shardcast-retention runs daily at this UTC time; intervalHours > 0 runs it every so many hours instead. */
        at: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a UTC time HH:MM').default('02:30'),
        intervalHours: z.number().int().min(0).max(168).default(0),
        /** false: no schedule (`shardcast retention` still runs it by hand). */
        enabled: z.boolean().default(true),
        /** The rebalance-threshold check of restored tables in the same run (may start one split per table). */
        rebalanceCheck: z.boolean().default(true),
        /** A shard under this many bytes is not split by the check, whatever its skew. */
        minShardBytes: z.number().int().min(0).default(64 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    planning: z
      .object({
        /** What the hourly forecast hands over to the rebalancer: carry out its plans ('on'), only store them ('dry-run'), or nothing ('off'). */
        mode: z.enum(['off', 'dry-run', 'on']).default('on'),
        /** Utilisation every node must stay under at every step of the horizon, as a fraction of its capacity. */
        targetUtilisation: z.number().gt(0).max(1).default(0.7),
        /** The forecast bound planned on: the point forecast, or the 80% or 95% upper bound. */
        bound: z.enum(['point', 'upper80', 'upper95']).default('upper95'),
        /** A shard moved within this many seconds is not moved again (except off a draining node), and never back. */
        hysteresisSeconds: z.number().int().min(0).max(30 * 86_400).default(7200),
        /** Planned movements a node takes part in at once. */
        maxConcurrentMovesPerNode: z.number().int().min(1).max(64).default(2),
        /** Least predicted benefit (overload point·steps removed) per GiB moved. */
        minBenefitPerGiB: z.number().min(0).default(0.5),
        /**
         * 5-minute steps of the forecast planned on: 12 (the next hour) to 24 (the forecast's two hours).
         * Longer sees a peak past the hour in time to move before it, and drains fewer nodes.
         */
        horizonSteps: z.number().int().min(12).max(24).default(12),
        /**
         * With mode 'on': plan again every this many minutes on the latest forecast, starting only
         * what is due before the next round (a receding horizon, as the simulation plans). 0: plan
         * once an hour, after the forecast, and carry the whole plan out.
         */
        replanMinutes: z.number().int().min(0).max(60).default(5),
        /**
         * Tenant isolation by the rebalancer (src/profiling/tenants.ts): a shard-key value taking at
         * least this share of its shard's accesses over the last 15 minutes, on a node predicted over
         * target, is split off into a shard of its own before the shard is planned again. 0: never.
         */
        isolateTenantShare: z.number().min(0).max(1).default(0.5),
        /**
         * Where scale-out's new nodes come from (src/planning/provisioner.ts): "standby" activates nodes
         * registered beforehand; { command } or { webhook } asks real infrastructure for one.
         */
        provisioner: z
          .union([
            z.literal('standby'),
            z.object({ command: z.string().min(1), ...provisionerOptions }).strict(),
            z.object({ webhook: z.url({ protocol: /^https?$/ }), ...provisionerOptions }).strict(),
          ], { error: 'expected "standby", { command: "…" } or { webhook: "http://…" }' })
          .default('standby'),
        /** Weights of the target cost: predicted load, bytes moved, locality, peak alignment. */
        weights: z
          .object({ load: z.number().min(0).default(1), bytes: z.number().min(0).default(0.05), locality: z.number().min(0).default(0.5), alignment: z.number().min(0).default(0.5) })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    tableCreation: z
      .object({
        /** Attempts of the per-node DDL activity before the node counts as failed for good. */
        maximumAttempts: z.number().int().min(1).max(100).default(5),
        initialRetryIntervalMs: z.number().int().min(10).max(600_000).default(1000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;

/** The planner settings the configuration gives (the rest are the planner's defaults, src/planning/settings.ts). */
export function plannerSettings(config: Config): {
  targetUtilisation: number;
  bound: 'point' | 'upper80' | 'upper95';
  hysteresisSeconds: number;
  maxConcurrentMovesPerNode: number;
  minBenefitPerGiB: number;
  horizonSteps: number;
  weights: Config['planning']['weights'];
} {
  const { targetUtilisation, bound, hysteresisSeconds, maxConcurrentMovesPerNode, minBenefitPerGiB, horizonSteps, weights } = config.planning;
  return { targetUtilisation, bound, hysteresisSeconds, maxConcurrentMovesPerNode, minBenefitPerGiB, horizonSteps, weights };
}

/** The movement settings of the configuration, as every movement the CLI or the rebalancer starts gets them. */
/** The retention archive root: retention.archiveDir, else <dataDir>/archive (relative paths as the worker's directory resolves them). */
export function retentionArchiveDir(config: Config): string {
  return path.resolve(config.retention.archiveDir ?? path.join(config.dataDir, 'archive'));
}

export function movementSettings(config: Config): { approvalRequired: boolean; approvalOverBytes?: number; approvalHoursUtc?: [number, number]; graceSeconds: number; maxMovesPerNode: number; catchUpLagBytes: number; governor: Config['movement']['governor'] } {
  const m = config.movement;
  return {
    approvalRequired: m.requireApproval,
    ...(m.approvalOverBytes !== undefined ? { approvalOverBytes: m.approvalOverBytes } : {}),
    ...(m.approvalHoursUtc ? { approvalHoursUtc: m.approvalHoursUtc } : {}),
    graceSeconds: m.graceSeconds,
    maxMovesPerNode: m.maxPerNode,
    catchUpLagBytes: m.catchUpLagBytes,
    governor: m.governor,
  };
}
export type RegisteredNode = z.infer<typeof registeredNode>;

/**
 * Environment variables that override the file, one per leaf key: `SHARDCAST_` + the key path in
 * upper snake case (`temporal.address` → `SHARDCAST_TEMPORAL_ADDRESS`).
 */
export const ENV_OVERRIDES: Record<string, string> = {
  SHARDCAST_DATA_DIR: 'dataDir',
  SHARDCAST_CATALOG_URL: 'catalog.url',
  SHARDCAST_CATALOG_PORT: 'catalog.port',
  SHARDCAST_CATALOG_DATABASE: 'catalog.database',
  SHARDCAST_NODES_COUNT: 'nodes.count',
  SHARDCAST_NODES_BASE_PORT: 'nodes.basePort',
  SHARDCAST_NODES_DATABASE: 'nodes.database',
  SHARDCAST_POSTGRES_USER: 'postgres.user',
  SHARDCAST_POSTGRES_PASSWORD: 'postgres.password',
  SHARDCAST_POSTGRES_SSLMODE: 'postgres.sslmode',
  SHARDCAST_POSTGRES_SSLROOTCERT: 'postgres.sslrootcert',
  SHARDCAST_POSTGRES_SSLCERT: 'postgres.sslcert',
  SHARDCAST_POSTGRES_SSLKEY: 'postgres.sslkey',
  SHARDCAST_POSTGRES_NODE_SSLROOTCERT: 'postgres.nodeSslrootcert',
  SHARDCAST_APP_PROVISION: 'app.provision',
  SHARDCAST_APP_USER: 'app.user',
  SHARDCAST_APP_PASSWORD: 'app.password',
  SHARDCAST_TEMPORAL_ADDRESS: 'temporal.address',
  SHARDCAST_TEMPORAL_NAMESPACE: 'temporal.namespace',
  SHARDCAST_TEMPORAL_PORT: 'temporal.port',
  SHARDCAST_TEMPORAL_UI_PORT: 'temporal.uiPort',
  SHARDCAST_TEMPORAL_TASK_QUEUE: 'temporal.taskQueue',
  SHARDCAST_TEMPORAL_TLS_ENABLED: 'temporal.tls.enabled',
  SHARDCAST_TEMPORAL_TLS_CA_FILE: 'temporal.tls.caFile',
  SHARDCAST_TEMPORAL_TLS_CERT_FILE: 'temporal.tls.certFile',
  SHARDCAST_TEMPORAL_TLS_KEY_FILE: 'temporal.tls.keyFile',
  SHARDCAST_TEMPORAL_TLS_SERVER_NAME: 'temporal.tls.serverName',
  SHARDCAST_TEMPORAL_API_KEY: 'temporal.apiKey',
  SHARDCAST_TEMPORAL_API_KEY_FILE: 'temporal.apiKeyFile',
  SHARDCAST_TEMPORAL_ENCRYPTION_KEY_FILE: 'temporal.encryption.keyFile',
  SHARDCAST_TEMPORAL_ENCRYPTION_KEY_ID: 'temporal.encryption.keyId',
  SHARDCAST_CODEC_SERVER_LISTEN: 'codecServer.listen',
  SHARDCAST_CODEC_SERVER_CORS_ORIGINS: 'codecServer.corsOrigins',
  SHARDCAST_METRICS_PORT: 'metrics.port',
  SHARDCAST_METRICS_HOST: 'metrics.host',
  SHARDCAST_FORECAST_BACKEND: 'forecast.backend',
  SHARDCAST_FORECAST_RETRAIN_AT: 'forecast.retrainAt',
  SHARDCAST_FORECAST_CATCHUP_WINDOW_MINUTES: 'forecast.catchupWindowMinutes',
  SHARDCAST_FORECAST_TRAINING_DAYS: 'forecast.trainingDays',
  SHARDCAST_FORECAST_BUDGET_SECONDS: 'forecast.budgetSeconds',
  SHARDCAST_FORECAST_SEARCH_SECONDS: 'forecast.searchSeconds',
  SHARDCAST_FORECAST_THREADS: 'forecast.threads',
  SHARDCAST_FORECAST_BATCH_SIZE: 'forecast.batchSize',
  SHARDCAST_FORECAST_PARALLEL_BATCHES: 'forecast.parallelBatches',
  SHARDCAST_CLOCK_COMPRESSION: 'clock.compression',
  SHARDCAST_COLLECTION_INTERVAL_SECONDS: 'collection.intervalSeconds',
  SHARDCAST_COLLECTION_RETENTION_DAYS: 'collection.retentionDays',
  SHARDCAST_MOVEMENT_APPROVAL_OVER_BYTES: 'movement.approvalOverBytes',
  SHARDCAST_MOVEMENT_GRACE_SECONDS: 'movement.graceSeconds',
  SHARDCAST_MOVEMENT_MAX_PER_NODE: 'movement.maxPerNode',
  SHARDCAST_MOVEMENT_CATCH_UP_LAG_BYTES: 'movement.catchUpLagBytes',
  SHARDCAST_NODES_MAX_SLOT_WAL_KEEP_SIZE: 'nodes.maxSlotWalKeepSize',
  SHARDCAST_MOVEMENT_STATEMENT_TIMEOUT_SECONDS: 'movement.statementTimeoutSeconds',
  SHARDCAST_MOVEMENT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS: 'movement.idleInTransactionTimeoutSeconds',
  SHARDCAST_MOVEMENT_KEEP_ALIVE_SECONDS: 'movement.keepAliveSeconds',
  SHARDCAST_JANITOR_INTERVAL_MINUTES: 'janitor.intervalMinutes',
  SHARDCAST_RETENTION_ARCHIVE_DIR: 'retention.archiveDir',
  SHARDCAST_RETENTION_AT: 'retention.at',
  SHARDCAST_RETENTION_INTERVAL_HOURS: 'retention.intervalHours',
  SHARDCAST_MOVEMENT_GOVERNOR_ENABLED: 'movement.governor.enabled',
  SHARDCAST_MOVEMENT_GOVERNOR_LATENCY_RATIO: 'movement.governor.latencyRatio',
  SHARDCAST_MOVEMENT_GOVERNOR_PROBE_INTERVAL_MS: 'movement.governor.probeIntervalMs',
  SHARDCAST_MOVEMENT_GOVERNOR_MAX_LAG_BYTES: 'movement.governor.maxLagBytes',
  SHARDCAST_MOVEMENT_GOVERNOR_CHUNK_ROWS: 'movement.governor.chunkRows',
  SHARDCAST_PLANNING_MODE: 'planning.mode',
  SHARDCAST_PLANNING_TARGET_UTILISATION: 'planning.targetUtilisation',
  SHARDCAST_PLANNING_BOUND: 'planning.bound',
  SHARDCAST_PLANNING_HYSTERESIS_SECONDS: 'planning.hysteresisSeconds',
  SHARDCAST_PLANNING_MAX_CONCURRENT_MOVES_PER_NODE: 'planning.maxConcurrentMovesPerNode',
  SHARDCAST_PLANNING_HORIZON_STEPS: 'planning.horizonSteps',
  SHARDCAST_PLANNING_REPLAN_MINUTES: 'planning.replanMinutes',
  SHARDCAST_PLANNING_ISOLATE_TENANT_SHARE: 'planning.isolateTenantShare',
  SHARDCAST_TABLE_CREATION_MAXIMUM_ATTEMPTS: 'tableCreation.maximumAttempts',
  SHARDCAST_TABLE_CREATION_INITIAL_RETRY_INTERVAL_MS: 'tableCreation.initialRetryIntervalMs',
};

const DEFAULT_FILES = ['shardcast.config.json', 'shardcast.config.yaml', 'shardcast.config.yml'];

export interface LoadConfigOptions {
  /** Explicit file; otherwise $SHARDCAST_CONFIG, otherwise the first default file found in cwd. */
  file?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Highest precedence, e.g. command-line flags, as key paths (`catalog.url`). */
  overrides?: Record<string, unknown>;
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const file = options.file ?? env.SHARDCAST_CONFIG ?? DEFAULT_FILES.map((f) => path.join(cwd, f)).find((f) => existsSync(f));
  let raw: Record<string, unknown> = {};
  if (file) raw = readConfigFile(path.resolve(cwd, file));
  for (const [variable, key] of Object.entries(ENV_OVERRIDES)) {
    const value = env[variable];
    if (value !== undefined && value !== '') setPath(raw, key, coerceEnvValue(key, value));
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) setPath(raw, key, value);
  }
  const config = parseConfig(raw);
  setClockCompression(config.clock.compression); // the process's load clock (src/clock.ts)
  return config;
}

export function parseConfig(raw: unknown): Config {
  const result = configSchema.safeParse(withContextualDefaults(raw));
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.length > 0 ? issue.path.join('.') : '(root)';
    if (issue.code === 'unrecognized_keys') return failUnknownKeys(key, issue.keys);
    throw new ConfigError(key, describeIssue(issue));
  }
  return result.data;
}

/** An existing catalog has its own fleet: start no embedded nodes unless asked to. */
function withContextualDefaults(raw: unknown): unknown {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const { catalog, nodes } = raw as { catalog?: { url?: unknown }; nodes?: unknown };
  if (!catalog || typeof catalog !== 'object' || catalog.url === undefined) return raw;
  if (nodes !== undefined && (typeof nodes !== 'object' || nodes === null || 'count' in nodes)) return raw;
  return { ...raw, nodes: { ...((nodes as object | undefined) ?? {}), count: 0 } };
}

function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type': {
      const received = /received (\w+)/.exec(issue.message)?.[1];
      return `expected ${article(issue.expected)}${received ? `, got ${article(received)}` : ''}`;
    }
    case 'too_small':
      return `must be ${issue.inclusive ? 'at least' : 'more than'} ${String(issue.minimum)}`;
    case 'too_big':
      return `must be ${issue.inclusive ? 'at most' : 'less than'} ${String(issue.maximum)}`;
    default:
      return issue.message.replace(/^Invalid input: /, '');
  }
}

function article(type: string): string {
  const name = type === 'int' ? 'integer' : type;
  return `${/^[aeiou]/.test(name) ? 'an' : 'a'} ${name}`;
}

function failUnknownKeys(parent: string, keys: string[]): never {
  const where = parent === '(root)' ? '' : `${parent}.`;
  throw new ConfigError(`${where}${keys[0]}`, 'unknown key');
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  if (file.endsWith('.json')) {
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ConfigError('(file)', `${file} is not valid JSON${jsonErrorPosition(text, (err as Error).message)}`, { cause: err });
    }
  } else {
    // The YAML parser loads only for a YAML file: most commands read JSON or no file at all.
    const { parse: parseYaml, YAMLParseError } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
    try {
      parsed = parseYaml(text);
    } catch (err) {
      const pos = err instanceof YAMLParseError ? err.linePos?.[0] : undefined;
      const where = pos ? ` at line ${pos.line}, column ${pos.col}` : '';
      const code = err instanceof YAMLParseError ? ` (${err.code.toLowerCase().replaceAll('_', ' ')})` : '';
      throw new ConfigError('(file)', `${file} is not valid YAML${where}${code}`, { cause: err });
    }
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError('(root)', `${file} must hold an object`);
  }
  return parsed as Record<string, unknown>;
}

/** Keys whose values are numbers: their environment values are parsed as numbers, all others stay text. */
const NUMERIC_KEYS = new Set([
  'catalog.port',
  'nodes.count',
  'nodes.basePort',
  'temporal.port',
  'temporal.uiPort',
  'metrics.port',
  'clock.compression',
  'collection.intervalSeconds',
  'collection.retentionDays',
  'forecast.catchupWindowMinutes',
  'forecast.trainingDays',
  'forecast.budgetSeconds',
  'forecast.searchSeconds',
  'forecast.threads',
  'forecast.batchSize',
  'forecast.parallelBatches',
  'movement.approvalOverBytes',
  'movement.graceSeconds',
  'movement.maxPerNode',
  'movement.catchUpLagBytes',
  'movement.statementTimeoutSeconds',
  'movement.idleInTransactionTimeoutSeconds',
  'movement.keepAliveSeconds',
  'janitor.intervalMinutes',
  'retention.intervalHours',
  'retention.minShardBytes',
  'movement.governor.latencyRatio',
  'movement.governor.probeIntervalMs',
  'movement.governor.maxLagBytes',
  'movement.governor.chunkRows',
  'planning.targetUtilisation',
  'planning.hysteresisSeconds',
  'planning.maxConcurrentMovesPerNode',
  'planning.horizonSteps',
  'planning.replanMinutes',
  'planning.isolateTenantShare',
  'tableCreation.maximumAttempts',
  'tableCreation.initialRetryIntervalMs',
]);

/**
 * Where JSON.parse stopped, as line and column. Its own message is not shown: it can quote the
 * file, and the file may hold a password.
 */
function jsonErrorPosition(text: string, message: string): string {
  let offset: number | undefined;
  const position = /at position (\d+)/.exec(message);
  if (position) offset = Number(position[1]);
  else if (/Unexpected end of JSON input/.test(message)) offset = text.length;
  else {
    const token = /^Unexpected token '(.)'/.exec(message);
    if (token) offset = firstUnexpected(text, token[1]!);
  }
  if (offset === undefined) return '';
  const before = text.slice(0, offset).split('\n');
  return ` at line ${before.length}, column ${before.at(-1)!.length + 1}`;
}

/** The first occurrence of `char` outside a JSON string: where an unquoted word begins. */
function firstUnexpected(text: string, char: string): number | undefined {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === char) return i;
  }
  return undefined;
}

/** Keys whose values are lists: their environment values are comma-separated. */
const LIST_KEYS = new Set(['codecServer.corsOrigins']);

/** Keys whose values are switches: true/false (or 1/0, yes/no) in the environment. */
const BOOLEAN_KEYS = new Set(['temporal.tls.enabled', 'movement.governor.enabled', 'app.provision']);

function coerceEnvValue(key: string, value: string): unknown {
  if (BOOLEAN_KEYS.has(key) && /^\s*(true|1|yes|false|0|no)\s*$/i.test(value)) return /^\s*(true|1|yes)\s*$/i.test(value);
  if (LIST_KEYS.has(key)) return value.split(',').map((v) => v.trim()).filter((v) => v !== '');
  if (NUMERIC_KEYS.has(key) && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  return value;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let cursor = target;
  for (const part of parts.slice(0, -1)) {
    const next = cursor[part];
    if (next === undefined || next === null || typeof next !== 'object' || Array.isArray(next)) {
      cursor[part] = {};
    }
    cursor = cursor[part] as Record<string, unknown>;
  }
  cursor[parts.at(-1)!] = value;
}

export { parseListenAddress };

/** Connection URL of one database on a local embedded PostgreSQL; its password is postgres.password or the data directory's. */
export function localUrl(config: Config, port: number, database: string): string {
  const { user } = config.postgres;
  const password = config.postgres.password ?? readEmbeddedPassword(config.dataDir);
  if (password === undefined) {
    throw new ConfigError(
      'postgres.password',
      `not set, and there is no ${embeddedPasswordFile(config.dataDir)}: \`shardcast up\` generates it at its first start (run commands from the same directory, or set dataDir)`,
    );
  }
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

/** The PostgreSQL TLS settings of the configuration (src/catalog/pg-tls.ts). */
export function pgTlsOf(config: Config): PgTlsSettings {
  const { sslmode, sslrootcert, sslcert, sslkey, nodeSslrootcert } = config.postgres;
  return {
    ...(sslmode ? { sslmode } : {}),
    ...(sslrootcert ? { sslrootcert } : {}),
    ...(sslcert ? { sslcert } : {}),
    ...(sslkey ? { sslkey } : {}),
    ...(nodeSslrootcert ? { nodeSslrootcert } : {}),
  };
}
