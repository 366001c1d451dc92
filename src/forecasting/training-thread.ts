/**
 * A training thread of thread-pool.ts: initialises the TensorFlow.js backend, then runs
 * `trainSeries` for each series it is sent, one at a time. Its catalog is a relay: each query is
 * posted to the main thread, which runs it on the worker's pool and posts the rows back (`query`
 * only: a transaction would need a client of its own).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Queryable } from '../catalog/nodes.js';
import { setClockCompression } from '../clock.js';
import { initBackend } from './tf-backend.js';
import type { FromThread, ThreadData, ToThread } from './thread-pool.js';
import { trainSeries } from './training.js';

const port = parentPort!;
const post = (msg: FromThread) => port.postMessage(msg);

const pending = new Map<number, { resolve: (result: { rows: unknown[]; rowCount: number | null }) => void; reject: (err: Error) => void }>();
let lastQuery = 0;
const catalog = {
  query: (text: string, values: unknown[] = []) =>
    new Promise((resolve, reject) => {
      const query = ++lastQuery;
      pending.set(query, { resolve, reject });
      post({ type: 'query', query, text, values });
    }),
} as unknown as Queryable;

setClockCompression((workerData as ThreadData).compression);
// Before the first message is read: a backend that fails to initialise stops the thread before it is ready.
const backend = await initBackend((workerData as ThreadData).backend);

port.on('message', (msg: ToThread) => {
  if (msg.type === 'train') {
    trainSeries(catalog, msg.id, msg.options).then(
      (model) => post({ type: 'trained', model }),
      (err: unknown) => {
        const error = err instanceof Error ? { name: err.name, message: err.message, stack: err.stack } : { name: 'Error', message: String(err) };
        post({ type: 'failed', error });
      },
    );
    return;
  }
  const waiting = pending.get(msg.query);
  pending.delete(msg.query);
  if (msg.type === 'rows') waiting?.resolve({ rows: msg.rows, rowCount: msg.rowCount });
  else waiting?.reject(new Error(msg.error));
});
post({ type: 'ready', backend });
