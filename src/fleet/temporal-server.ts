import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { ShardcastError } from '../errors.js';
import { SEARCH_ATTRIBUTE_TYPES } from '../search-attributes.js';
import { assertPortFree, isAlive, sleep, withTimeout } from './postgres-server.js';

export interface TemporalDevServerOptions {
  cliPath: string;
  port: number;
  /** 0 runs it headless. */
  uiPort: number;
  namespace: string;
  /** SQLite file that keeps workflow histories across restarts; in memory when absent. */
  dbFile?: string;
  /** Where the server's log and pid file go. */
  stateDir: string;
}

/** A Temporal dev server (`temporal server start-dev`) with Shardcast's search attributes registered. */
export class TemporalDevServer {
  readonly options: TemporalDevServerOptions;
  private child?: ChildProcess;
  private exited?: Promise<void>;

  constructor(options: TemporalDevServerOptions) {
    this.options = options;
  }

  get address(): string {
    return `127.0.0.1:${this.options.port}`;
  }

  get uiUrl(): string | undefined {
    return this.options.uiPort ? `http://127.0.0.1:${this.options.uiPort}` : undefined;
  }

  private get pidFile(): string {
    return path.join(this.options.stateDir, 'temporal.pid');
  }

  get logFile(): string {
    return path.join(this.options.stateDir, 'temporal.log');
  }

  async start(): Promise<void> {
    const { cliPath, port, uiPort, namespace, dbFile, stateDir } = this.options;
    mkdirSync(stateDir, { recursive: true });
    await this.stopStale();
    await assertPortFree(port, 'Temporal dev server');
    if (uiPort) await assertPortFree(uiPort, 'Temporal UI');
    const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'warn'];
    if (uiPort) args.push('--ui-port', String(uiPort));
    else args.push('--headless');
    if (dbFile) args.push('--db-filename', dbFile);
    if (namespace !== 'default') args.push('--namespace', namespace);
    for (const [name, type] of Object.entries(SEARCH_ATTRIBUTE_TYPES)) args.push('--search-attribute', `${name}=${type}`);
    const log = openSync(this.logFile, 'a', 0o600);
    chmodSync(this.logFile, 0o600); // an older log may have been made readable by all
    const child = spawn(cliPath, args, { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let exitCode: number | null | undefined;
    child.once('exit', (code) => {
      exitCode = code;
    });
    writeFileSync(this.pidFile, String(child.pid));
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (exitCode !== undefined) {
        throw new ShardcastError('TEMPORAL_START_FAILED', `Temporal dev server exited with code ${exitCode}: ${this.logTail()}`);
      }
      if (await this.ready()) break;
      if (Date.now() > deadline) throw new ShardcastError('TEMPORAL_START_FAILED', `Temporal dev server not ready after 120 s: ${this.logTail()}`);
      await sleep(200);
    }
    child.unref();
  }

  private async ready(): Promise<boolean> {
    let connection: Connection | undefined;
    try {
      connection = await Connection.connect({ address: this.address, connectTimeout: 1000 });
      await connection.workflowService.describeNamespace({ namespace: this.options.namespace });
      const attributes = await connection.operatorService.listSearchAttributes({ namespace: this.options.namespace });
      return Object.keys(SEARCH_ATTRIBUTE_TYPES).every((name) => name in (attributes.customAttributes ?? {}));
    } catch {
      return false;
    } finally {
      await connection?.close().catch(() => undefined);
    }
  }

  async stop(): Promise<void> {
    const pid = this.child?.pid;
    if (!pid) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    if (this.exited) await withTimeout(this.exited, 30_000);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(this.pidFile, { force: true });
    this.child = undefined;
  }

  /** A dev server left running by an earlier `shardcast up` that was killed. */
  private async stopStale(): Promise<void> {
    let pid: number;
    try {
      pid = Number.parseInt(readFileSync(this.pidFile, 'utf8'), 10);
    } catch {
      return;
    }
    if (!Number.isInteger(pid) || !isAlive(pid)) return;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return;
    }
    if (!cmdline.includes('start-dev')) return;
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (isAlive(pid) && Date.now() < deadline) await sleep(50);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }

  private logTail(): string {
    try {
      return readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
    } catch {
      return '(no log)';
    }
  }
}
