import { ApplicationFailure } from '@temporalio/activity';
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
  try {
    return await fn();
  } catch (err) {
    return toApplicationFailure(err);
  }
}
