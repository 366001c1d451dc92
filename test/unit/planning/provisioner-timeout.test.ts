import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { provisionNode, ProvisionerError } from '../../../src/planning/provisioner.js';

/**
 * The provisioner command's time limit against a worker that was stopped (SIGSTOP, a suspended VM):
 * the worker wakes with the limit's timer due and the command's exit and answer waiting. Blocking
 * this thread past the limit while the command runs makes the same situation, without a signal.
 */

const NODE = { name: 'node-9', dsn: 'postgres://shardcast@127.0.0.1:5999/app' };

function blockThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * A webhook in a process of its own (it must answer while this thread is blocked): it says "got" on its
 * output when a request has come, and answers with the node 100 ms later; `/slow`: never.
 */
const SERVER = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.url === '/slow') return;
    console.log('got');
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(process.env.NODE_JSON);
    }, 100);
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;
let webhook: ChildProcess;
let base: string;

beforeAll(async () => {
  webhook = spawn(process.execPath, ['-e', SERVER], { env: { ...process.env, NODE_JSON: JSON.stringify(NODE) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve) => webhook.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim())));
  base = `http://127.0.0.1:${port}`;
});

afterAll(() => {
  webhook?.kill();
});

describe('provisioner webhook time limit', () => {
  it('an answer that arrived while the worker was stopped past the limit: it is taken, not a timeout', async () => {
    const got = new Promise((resolve) => webhook.stdout!.once('data', resolve));
    const call = provisionNode({ webhook: `${base}/node`, timeoutSeconds: 0.3 }, { requestId: 'r-3', reason: 'test' });
    await got; // the request is there
    blockThread(1500); // the webhook answers meanwhile; the limit is overdue when the loop runs again
    await expect(call).resolves.toEqual(NODE);
  });

  it('a webhook that does not answer in time: the call fails naming the limit', async () => {
    const call = provisionNode({ webhook: `${base}/slow`, timeoutSeconds: 0.3 }, { requestId: 'r-4', reason: 'test' });
    await expect(call).rejects.toThrow(`provisioner: webhook ${base}: no answer within 0.3 s`);
  });
});

describe('provisioner command time limit', () => {
  it('a command that finished while the worker was stopped past the limit: its answer is taken, not a timeout', async () => {
    const call = provisionNode({ command: `echo '${JSON.stringify(NODE)}'`, timeoutSeconds: 0.3 }, { requestId: 'r-1', reason: 'test' });
    blockThread(1500); // the command ends meanwhile; the timer is overdue when the loop runs again
    await expect(call).resolves.toEqual(NODE);
  });

  it('a command still running at the limit is killed, with its process group, and the call fails naming the limit', async () => {
    const started = Date.now();
    const call = provisionNode({ command: 'sleep 30', timeoutSeconds: 0.3 }, { requestId: 'r-2', reason: 'test' });
    await expect(call).rejects.toThrow(ProvisionerError);
    await expect(call).rejects.toThrow('provision: the command did not finish within 0.3 s');
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
