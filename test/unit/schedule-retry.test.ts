import { ServiceError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { retryTransient } from '../../client/schedules.js';
import { errorMessage } from '../../src/errors.js';

/** An error as @grpc/grpc-js makes them: a code, details and metadata. */
function grpcError(code: number, details: string): Error {
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });
}

describe('retryTransient (schedule calls just after a Temporal restart)', () => {
  it('calls again while the server answers DEADLINE_EXCEEDED, and returns what the call then returns', async () => {
    let calls = 0;
    const value = await retryTransient(async () => {
      calls += 1;
      if (calls < 3) throw new ServiceError('Failed to describe schedule', { cause: grpcError(4, 'context deadline exceeded') });
      return 'described';
    }, 10_000);
    expect(value).toBe('described');
    expect(calls).toBe(3);
  });

  it('throws any other error at once', async () => {
    let calls = 0;
    const notFound = new ServiceError('Failed to describe schedule', { cause: grpcError(5, 'schedule not found') });
    await expect(retryTransient(async () => { calls += 1; throw notFound; }, 10_000)).rejects.toBe(notFound);
    await expect(retryTransient(async () => { calls += 1; throw new Error('no'); }, 10_000)).rejects.toThrow('no');
    expect(calls).toBe(2);
  });

  it('gives up once the time is spent, with the last error', async () => {
    const started = Date.now();
    let calls = 0;
    const err = new ServiceError('Failed to describe schedule', { cause: grpcError(14, 'unavailable') });
    await expect(retryTransient(async () => { calls += 1; throw err; }, 1_000)).rejects.toBe(err);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(calls).toBeGreaterThanOrEqual(2);
  });
});

describe('errorMessage', () => {
  it("adds the gRPC error's message to the Temporal client's ServiceError", () => {
    const err = new ServiceError('Failed to describe schedule', { cause: grpcError(4, 'context deadline exceeded') });
    expect(errorMessage(err)).toBe('Failed to describe schedule: 4 context deadline exceeded');
    expect(errorMessage(new Error('plain'))).toBe('plain');
    expect(errorMessage('text')).toBe('text');
  });
});
