/**
 * Training off the event loop. `TrainingThreads` runs `trainSeries` (training.ts) in worker threads,
 * so that the seconds an ETS or ARIMA fit holds the CPU never delay the worker's workflow tasks,
 * its other activities or its heartbeats. A thread fits one series at a time; the catalog reads of
 * `trainSeries` are relayed to the calling thread and run on the caller's catalog (a thread holds
 * no connection), and the caller stores the result. Threads start on demand, each initialising the
 * TensorFlow.js backend; an idle one does not keep the process alive and exits after `idleMs`; an
 * aborted series terminates its thread at once.
 *
 * Plain worker_threads rather than a pool library (piscina): a task needs a side channel for the
 * relayed queries and terminate-on-abort, and the rest is one queue and `size` threads.
 */
import { Worker } from 'node:worker_threads';
import type { Queryable } from '../catalog/nodes.js';
import { ShardcastError, errorMessage } from '../errors.js';
import type { StoredModel } from './store.js';
import { clockCompression } from '../clock.js';
import type { BackendChoice } from './tf-backend.js';
import type { TrainingOptions } from './training.js';

/** What crosses to a thread: the training options without the model factories (functions do not clone). */
export type ThreadTrainingOptions = Omit<TrainingOptions, 'models'>;

export interface ThreadData {
  backend: BackendChoice;
  /** The process's clock.compression (src/clock.ts): a thread has module state of its own. */
  compression: number;
}

/** Messages to a thread. */
export type ToThread =
  | { type: 'train'; id: string; options: ThreadTrainingOptions }
  | { type: 'rows'; query: number; rows: unknown[]; rowCount: number | null }
  | { type: 'query-failed'; query: number; error: string };

/** Messages from a thread. */
export type FromThread =
  | { type: 'ready'; backend: string }
  | { type: 'query'; query: number; text: string; values: unknown[] }
  | { type: 'trained'; model: StoredModel }
  | { type: 'failed'; error: { name: string; message: string; stack?: string } };

/** A training thread could not start (its module or the TensorFlow.js backend did not load), or the threads are closed. */
export class TrainingThreadError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TRAINING_THREAD', message, options);
  }
}

export interface TrainingThreadsOptions {
  /** Series fitted at once, one thread each (default 1). */
  size?: number;
  /** TensorFlow.js backend each thread initialises (default auto, as the LSTM resolves it without a choice). */
  backend?: BackendChoice;
  /** A thread without work for this long exits; the next series starts a new one (default 30 s). */
  idleMs?: number;
}

/**
 * A thread running training-thread.ts, next to this module. From dist it is JavaScript; from source
 * (the CLI and vitest run TypeScript) the thread first registers tsx's loader, as bin/shardcast.js
 * does: Node 20 does not apply an `--import` loader of `execArgv` to a thread's own module.
 */
function startThread(workerData: ThreadData): Worker {
  const self = import.meta.url;
  if (!self.endsWith('.ts')) return new Worker(new URL('./training-thread.js', self), { workerData, execArgv: [] });
  const entry = JSON.stringify(new URL('./training-thread.ts', self).href);
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return new Worker(`import(${tsx}).then(({ register }) => { register(); return import(${entry}); });`, { eval: true, workerData, execArgv: [] });
}

interface Task {
  id: string;
  options: ThreadTrainingOptions;
  catalog: Queryable;
  settle(outcome: { model: StoredModel } | { error: unknown }): void;
  /** The first relayed query that failed: a failure of the series after it is the catalog's. */
  catalogError?: unknown;
}

interface Thread {
  worker: Worker;
  ready: boolean;
  task?: Task;
  idle?: NodeJS.Timeout;
  error?: unknown;
}

export class TrainingThreads {
  readonly size: number;
  readonly backend: BackendChoice;
  readonly idleMs: number;
  private readonly threads = new Set<Thread>();
  private readonly queue: Task[] = [];
  private closed = false;

  constructor(options: TrainingThreadsOptions = {}) {
    this.size = Math.max(1, Math.floor(options.size ?? 1));
    this.backend = options.backend ?? 'auto';
    this.idleMs = options.idleMs ?? 30_000;
  }

  /** Threads alive now, fitting or idle. */
  get threadCount(): number {
    return this.threads.size;
  }

  /**
   * `trainSeries(catalog, id, options)` in a thread. Rejects with the catalog's error when a relayed
   * query failed, with `signal.reason` when aborted (the thread is terminated), with a
   * TrainingThreadError when no thread starts; any other rejection is the series' own failure.
   */
  train(catalog: Queryable, id: string, options: ThreadTrainingOptions, signal?: AbortSignal): Promise<StoredModel> {
    if (this.closed) return Promise.reject(new TrainingThreadError('the training threads are closed'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<StoredModel>((resolve, reject) => {
      let settled = false;
      const onAbort = () => this.abort(task, signal!.reason);
      const task: Task = {
        id,
        options,
        catalog,
        settle(outcome) {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          if ('model' in outcome) resolve(outcome.model);
          else reject(outcome.error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(task);
      this.dispatch();
    });
  }

  /** Fails what is queued or running and terminates every thread. */
  async close(): Promise<void> {
    this.closed = true;
    const closed = () => ({ error: new TrainingThreadError('the training threads are closed') });
    for (const task of this.queue.splice(0)) task.settle(closed());
    const threads = [...this.threads];
    for (const thread of threads) thread.task?.settle(closed());
    await Promise.all(threads.map((thread) => this.discard(thread)));
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let thread = [...this.threads].find((t) => !t.task);
      if (!thread) {
        if (this.threads.size >= this.size) return;
        thread = this.spawn();
      }
      const task = this.queue.shift()!;
      clearTimeout(thread.idle);
      try {
        thread.worker.postMessage({ type: 'train', id: task.id, options: task.options } satisfies ToThread);
        thread.task = task;
        thread.worker.ref();
      } catch (err) {
        task.settle({ error: err }); // options that do not clone
      }
    }
  }

  private spawn(): Thread {
    const worker = startThread({ backend: this.backend, compression: clockCompression() });
    const thread: Thread = { worker, ready: false };
    worker.on('message', (msg: FromThread) => this.onMessage(thread, msg));
    worker.on('error', (err) => {
      thread.error ??= err;
    });
    worker.on('exit', (code) => this.onExit(thread, code));
    this.threads.add(thread);
    return thread;
  }

  private onMessage(thread: Thread, msg: FromThread): void {
    const task = thread.task;
    if (msg.type === 'ready') {
      thread.ready = true;
      return;
    }
    if (!task) return;
    if (msg.type === 'query') {
      const reply = (answer: ToThread) => {
        if (thread.task === task) thread.worker.postMessage(answer);
      };
      task.catalog.query(msg.text, msg.values).then(
        (result) => reply({ type: 'rows', query: msg.query, rows: result.rows, rowCount: result.rowCount }),
        (err: unknown) => {
          task.catalogError ??= err;
          reply({ type: 'query-failed', query: msg.query, error: errorMessage(err) });
        },
      );
      return;
    }
    thread.task = undefined;
    if (msg.type === 'trained') task.settle({ model: msg.model });
    else task.settle({ error: task.catalogError ?? Object.assign(new Error(msg.error.message), { name: msg.error.name, stack: msg.error.stack }) });
    thread.worker.unref(); // an idle thread never keeps the process alive
    thread.idle = setTimeout(() => void this.discard(thread), this.idleMs).unref();
    this.dispatch();
  }

  private onExit(thread: Thread, code: number): void {
    if (!this.threads.delete(thread)) return; // discarded on purpose
    clearTimeout(thread.idle);
    const task = thread.task;
    if (task) {
      const why = thread.error ? errorMessage(thread.error) : `exit code ${code}`;
      task.settle({
        error: thread.ready
          ? new Error(`the training thread stopped while fitting ${task.id}: ${why}`, { cause: thread.error })
          : new TrainingThreadError(`a training thread did not start: ${why}`, { cause: thread.error }),
      });
    }
    this.dispatch();
  }

  private abort(task: Task, reason: unknown): void {
    const queued = this.queue.indexOf(task);
    if (queued >= 0) this.queue.splice(queued, 1);
    const thread = [...this.threads].find((t) => t.task === task);
    if (thread) void this.discard(thread);
    task.settle({ error: reason });
    this.dispatch();
  }

  private async discard(thread: Thread): Promise<void> {
    this.threads.delete(thread);
    clearTimeout(thread.idle);
    thread.task = undefined;
    await thread.worker.terminate();
  }
}
