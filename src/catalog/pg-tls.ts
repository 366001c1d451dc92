import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';
import { ConfigError, InvalidInputError, ShardcastError, errorMessage } from '../errors.js';
import { SSL_MODES, type PgTlsSettings, type SslMode } from './pg-tls-settings.js';

export { SSL_MODES, type PgTlsSettings, type SslMode };

/**
 * TLS of every PostgreSQL connection Shardcast opens (catalog, nodes, router, CLI) and of the
 * subscriptions it creates, configured once (postgres.sslmode, postgres.sslrootcert, … or
 * SHARDCAST_POSTGRES_SSLMODE, …) and applied to each DSN that does not set its own `sslmode`.
 *
 * node-postgres does not treat a URL's ssl parameters as libpq does (it has no verify-ca without a
 * host check, and reads sslrootcert only from the URL), so its `ssl` option is built here, with the
 * URL's ssl parameters removed (pg lets the URL's override the option). Subscriptions are opened by
 * the target server's libpq: their conninfo carries `sslmode` and `sslrootcert` as parameters.
 */

const SSL_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'ssl', 'sslcrl', 'sslnegotiation'] as const;

/** The settings from the environment (SHARDCAST_POSTGRES_SSLMODE, …), the default of processes given no configuration. */
export function pgTlsFromEnv(env: NodeJS.ProcessEnv = process.env): PgTlsSettings {
  const settings: PgTlsSettings = {};
  const mode = env.SHARDCAST_POSTGRES_SSLMODE;
  if (mode) {
    if (!(SSL_MODES as readonly string[]).includes(mode)) throw new ConfigError('postgres.sslmode', `SHARDCAST_POSTGRES_SSLMODE must be one of ${SSL_MODES.join(', ')}`);
    settings.sslmode = mode as SslMode;
  }
  if (env.SHARDCAST_POSTGRES_SSLROOTCERT) settings.sslrootcert = env.SHARDCAST_POSTGRES_SSLROOTCERT;
  if (env.SHARDCAST_POSTGRES_SSLCERT) settings.sslcert = env.SHARDCAST_POSTGRES_SSLCERT;
  if (env.SHARDCAST_POSTGRES_SSLKEY) settings.sslkey = env.SHARDCAST_POSTGRES_SSLKEY;
  if (env.SHARDCAST_POSTGRES_NODE_SSLROOTCERT) settings.nodeSslrootcert = env.SHARDCAST_POSTGRES_NODE_SSLROOTCERT;
  return settings;
}

let defaults: PgTlsSettings | undefined;

/** Sets the process's settings (from the configuration, once at start). */
export function setPgTlsDefaults(settings: PgTlsSettings): void {
  checkSettings(settings, 'postgres');
  defaults = { ...settings };
}

/** The process's settings: those set, else the environment's. */
export function pgTlsDefaults(): PgTlsSettings {
  defaults ??= pgTlsFromEnv();
  return defaults;
}

function checkSettings(settings: PgTlsSettings, where: string): void {
  if (settings.sslmode !== undefined && !(SSL_MODES as readonly string[]).includes(settings.sslmode)) {
    throw new ConfigError(`${where}.sslmode`, `must be one of ${SSL_MODES.join(', ')}`);
  }
  if ((settings.sslcert === undefined) !== (settings.sslkey === undefined)) {
    throw new ConfigError(`${where}.${settings.sslcert === undefined ? 'sslcert' : 'sslkey'}`, 'the client certificate (sslcert) and its key (sslkey) go together');
  }
}

/** The settings for one DSN: its own sslmode (with its own files, else the defaults'), or the defaults. */
function settingsFor(url: URL, fallback: PgTlsSettings): PgTlsSettings {
  const own = url.searchParams.get('sslmode');
  if (own === null) return fallback;
  // libpq's allow is prefer's weaker twin; no-verify is pg's own name for require.
  const mode = own === 'allow' ? 'prefer' : own === 'no-verify' ? 'require' : own;
  if (!(SSL_MODES as readonly string[]).includes(mode)) {
    throw new InvalidInputError(`the DSN of ${hostOf(url)}: sslmode=${own} is not one of ${SSL_MODES.join(', ')}`);
  }
  const param = (name: 'sslrootcert' | 'sslcert' | 'sslkey') => url.searchParams.get(name) ?? fallback[name];
  const [sslrootcert, sslcert, sslkey] = [param('sslrootcert'), param('sslcert'), param('sslkey')];
  return { sslmode: mode as SslMode, ...(sslrootcert ? { sslrootcert } : {}), ...(sslcert && sslkey ? { sslcert, sslkey } : {}) };
}

function readPem(file: string, what: string, host: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ShardcastError('PG_TLS', `TLS to the PostgreSQL server at ${host}: cannot read the ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`, { cause: err });
  }
}

/** pg's `ssl` option for these settings and host. */
function sslOption(settings: PgTlsSettings, hostname: string, where: string): false | ConnectionOptions | undefined {
  const mode = settings.sslmode;
  if (mode === undefined) return undefined;
  if (mode === 'disable') return false;
  const options: ConnectionOptions = {};
  if (settings.sslcert && settings.sslkey) {
    options.cert = readPem(settings.sslcert, 'client certificate (sslcert)', where);
    options.key = readPem(settings.sslkey, 'client key (sslkey)', where);
  }
  const ca = settings.sslrootcert ? readPem(settings.sslrootcert, 'CA file (sslrootcert)', where) : undefined;
  // libpq: require with a CA file checks the chain (as verify-ca); prefer cannot fall back in pg, so it is require.
  const verifyChain = mode === 'verify-ca' || mode === 'verify-full' || ((mode === 'require' || mode === 'prefer') && ca !== undefined);
  if (!verifyChain) return { ...options, rejectUnauthorized: false };
  if (ca !== undefined) options.ca = ca;
  options.rejectUnauthorized = true;
  if (mode === 'verify-full') {
    if (isIP(hostname) === 0) options.servername = hostname;
  } else {
    options.checkServerIdentity = () => undefined;
  }
  return options;
}

/** `user:password@host:port`'s `host:port`, for messages. */
function hostOf(url: URL): string {
  return `${url.hostname || 'localhost'}${url.port ? `:${url.port}` : ''}`;
}

/**
 * What to give pg.Client/pg.Pool for a DSN: the URL without its ssl parameters and the `ssl` option
 * they (or the defaults) mean, plus the Client class that explains TLS failures.
 */
export function pgConnection(dsn: string, fallback: PgTlsSettings = pgTlsDefaults()): Pick<pg.PoolConfig, 'connectionString' | 'ssl' | 'Client'> {
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    return { connectionString: dsn };
  }
  const settings = settingsFor(url, fallback);
  for (const p of SSL_PARAMS) url.searchParams.delete(p);
  const ssl = sslOption(settings, url.hostname, hostOf(url));
  const client = tlsClientClass(hostOf(url), settings);
  return { connectionString: url.toString(), ...(ssl !== undefined ? { ssl } : {}), Client: client };
}

/**
 * The conninfo of a subscription to `dsn`, opened by the subscriber's libpq: the DSN's own ssl
 * parameters, else the defaults' sslmode and CA file (as the nodes see it). A client certificate
 * is not passed: the paths of the worker's files mean nothing on a node.
 */
export function libpqConninfo(dsn: string, fallback: PgTlsSettings = pgTlsDefaults()): string {
  const url = new URL(dsn);
  if (url.searchParams.has('sslmode') || fallback.sslmode === undefined) return dsn;
  url.searchParams.set('sslmode', fallback.sslmode);
  const ca = fallback.nodeSslrootcert ?? fallback.sslrootcert;
  if (ca && fallback.sslmode !== 'disable') url.searchParams.set('sslrootcert', ca);
  return url.toString();
}

/** Node's codes for a certificate it would not accept. */
const CERT_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH/;

/** A connect error, reworded when TLS is why: which host, what failed, with which settings. */
export function explainTlsError(err: unknown, host: string, settings: PgTlsSettings): unknown {
  if (!(err instanceof Error) || err instanceof PgTlsError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const how = `sslmode=${settings.sslmode ?? '(pg default)'}${settings.sslrootcert ? `, CA file ${settings.sslrootcert}` : ''}`;
  if (CERT_ERROR.test(code) || /certificate/i.test(err.message)) {
    return new PgTlsError(`TLS certificate verification of the PostgreSQL server at ${host} failed (${how}): ${err.message}`, err);
  }
  if (/does not support SSL/i.test(err.message)) {
    return new PgTlsError(`TLS to the PostgreSQL server at ${host}: the server does not support SSL connections (${how})`, err);
  }
  return err;
}

export class PgTlsError extends ShardcastError {
  constructor(message: string, cause: Error) {
    super('PG_TLS', message, { cause });
  }
}

const clientClasses = new Map<string, typeof pg.Client>();

/** A pg.Client whose connect errors name the host and the TLS settings when TLS is why it failed. */
function tlsClientClass(host: string, settings: PgTlsSettings): typeof pg.Client {
  const key = JSON.stringify([host, settings]);
  let cls = clientClasses.get(key);
  if (!cls) {
    cls = class extends pg.Client {
      override connect(): Promise<pg.Client>;
      override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
      override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
        if (callback) {
          const done = callback as (err: Error | null, c?: pg.Client) => void;
          super.connect((err: Error | null, c?: pg.Client) => done(err ? (explainTlsError(err, host, settings) as Error) : null, c));
          return;
        }
        return super.connect().catch((err: unknown) => {
          throw explainTlsError(err, host, settings);
        });
      }
    };
    clientClasses.set(key, cls);
  }
  return cls;
}

/** A pg.Client for a DSN with the TLS settings applied. */
export function newPgClient(dsn: string, config: Omit<pg.ClientConfig, 'connectionString' | 'ssl'> = {}, tls: PgTlsSettings = pgTlsDefaults()): pg.Client {
  const { Client, ...connection } = pgConnection(dsn, tls);
  return new ((Client as typeof pg.Client | undefined) ?? pg.Client)({ ...config, ...connection });
}

/** A pg.Pool for a DSN with the TLS settings applied. */
export function newPgPool(dsn: string, config: Omit<pg.PoolConfig, 'connectionString' | 'ssl' | 'Client'> = {}, tls: PgTlsSettings = pgTlsDefaults()): pg.Pool {
  return new pg.Pool({ ...config, ...pgConnection(dsn, tls) });
}
