import { describe, expect, it } from 'vitest';
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
