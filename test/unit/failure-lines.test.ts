import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { unreachableNode } from '../../activities/failures.js';
import type { NodeRecord } from '../../src/catalog/nodes.js';
import { businessErrorLine, workerLogLine } from '../../workers/control.js';

const node = (name: string, port: number): NodeRecord =>
  ({ id: port, name, dsn: `postgres://postgres:secret@127.0.0.1:${port}/shardcast`, state: 'active' }) as unknown as NodeRecord;
const nodes = [node('node-1', 5433), node('node-3', 5435)];

function socketError(code: string, port?: number): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:${port}`), { code, address: '127.0.0.1', ...(port ? { port } : {}) });
}

describe('a lost connection, in words', () => {
  it('names the node by its port, and says why', () => {
    expect(unreachableNode(socketError('ECONNREFUSED', 5435), nodes)?.message).toBe('node "node-3": unreachable (connection refused)');
    expect(unreachableNode(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), [nodes[0]!])?.message).toBe(
      'node "node-1": unreachable (server shut down)',
    );
  });

  it('leaves alone what it cannot pin on one node, and errors that are no connection error', () => {
    expect(unreachableNode(socketError('ECONNREFUSED', 9999), nodes)).toBeUndefined();
    expect(unreachableNode(Object.assign(new Error('terminating connection'), { code: '57P01' }), nodes)).toBeUndefined(); // two nodes, no port
    expect(unreachableNode(Object.assign(new Error('duplicate key'), { code: '23505' }), nodes)).toBeUndefined();
    expect(unreachableNode('ECONNREFUSED', nodes)).toBeUndefined();
  });

  it('never repeats the DSN (it holds a password)', () => {
    expect(unreachableNode(socketError('ECONNREFUSED', 5433), nodes)?.message).not.toMatch(/secret|postgres:\/\//);
  });
});

describe('worker log lines', () => {
  it('a business error is one line naming the activity, the workflow and the refusal', () => {
    const err = ApplicationFailure.create({ type: 'InvalidInputError', message: 'shard 17 is already on node-2', nonRetryable: true });
    expect(businessErrorLine('beginMove', 'move-shard-17', err)).toBe('beginMove (move-shard-17): InvalidInputError: shard 17 is already on node-2');
    expect(businessErrorLine('beginMove', 'move-shard-17', ApplicationFailure.create({ type: 'NodeUnavailableError', message: 'x' }))).toBeUndefined();
    expect(businessErrorLine('beginMove', 'move-shard-17', new Error('boom'))).toBeUndefined();
  });

  it('a failed workflow is one line with its message, whatever its stack', () => {
    const error = new Error('move shard 17 of orders: node-1 → node-3 failed in copy: node "node-3": unreachable (connection refused); undone');
    const line = workerLogLine({ level: 'WARN', message: 'Workflow failed', timestampNanos: 1_700_000_000_000_000_000n, meta: { error, workflowType: 'moveShard', workflowId: 'move-shard-17' } });
    expect(line).toBe(`2023-11-14T22:13:20.000Z [WARN] workflow moveShard move-shard-17 failed: ${error.message}`);
    expect(line.split('\n')).toHaveLength(1);
    expect(workerLogLine({ level: 'WARN', message: 'Activity failed', timestampNanos: 0n, meta: undefined })).toBe('1970-01-01T00:00:00.000Z [WARN] Activity failed');
  });
});
