import { ApplicationFailure, Context } from '@temporalio/activity';
import { failpoint } from '../src/failpoints.js';
import { BUSINESS_ERROR_TYPES, NodeUnavailableError, ShardcastError } from '../src/errors.js';

const BUSINESS = new Set<string>(BUSINESS_ERROR_TYPES);

/** Domain errors become typed Application failures: bad input is not retried, a lost node is. */
export function toApplicationFailure(err: unknown): never {
  if (err instanceof ShardcastError && BUSINESS.has(err.name)) {
    throw ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true, cause: err });
  }
  if (err instanceof NodeUnavailableError) {
    throw ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: false, details: [err.node], cause: err });
  }
  if (err instanceof ShardcastError) {
    throw ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: false, cause: err });
  }
  throw err;
}

/** Runs an activity's work, turning domain errors into Application failures. */
export async function run<T>(fn: () => Promise<T>): Promise<T> {
  const context = Context.current();
  // `activity.<type>=sleep:MS` holds the activity (heartbeating) before its work; a cancellation ends it there.
  await failpoint(`activity.${context.info.activityType}`, { signal: context.cancellationSignal, onWait: () => context.heartbeat('held at a failpoint') });
  try {
    return await fn();
  } catch (err) {
    return toApplicationFailure(err);
  }
}
