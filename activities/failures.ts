import { ApplicationFailure } from '@temporalio/activity';
import { AlreadyExistsError, InvalidInputError, NodeUnavailableError, NotFoundError, ShardcastError } from '../src/errors.js';
import { VerificationError } from '../src/movement/cutover.js';
import { MovementInProgressError } from '../src/movement/lease.js';

/** Business errors: retrying cannot help. Workflows list the same names as nonRetryableErrorTypes. */
const BUSINESS_ERRORS = [InvalidInputError, AlreadyExistsError, NotFoundError, MovementInProgressError, VerificationError];
export const NON_RETRYABLE_ERROR_TYPES = BUSINESS_ERRORS.map((e) => e.name);

/** Domain errors become typed Application failures: bad input is not retried, a lost node is. */
export function toApplicationFailure(err: unknown): never {
  if (BUSINESS_ERRORS.some((type) => err instanceof type)) {
    const e = err as ShardcastError;
    throw ApplicationFailure.create({ type: e.name, message: e.message, nonRetryable: true, cause: e });
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
