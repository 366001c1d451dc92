import { ApplicationFailure } from '@temporalio/workflow';
import type { z } from 'zod';
import { inputProblem } from '../src/inputs.js';

/**
 * A workflow's first step: its input checked against the schema the client checks it with. A bad
 * value fails the workflow at once (non-retryable, before any activity) naming the field, e.g.
 * "input.shardId: expected a positive integer". The input itself goes on unchanged, so that a
 * replay sees the same values.
 */
export function validInput<T>(schema: z.ZodType, input: T): T {
  const problem = inputProblem(schema, input);
  if (problem) throw ApplicationFailure.create({ type: 'InvalidInputError', nonRetryable: true, message: problem });
  return input;
}
