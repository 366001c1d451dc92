import { ApplicationFailure, Context } from '@temporalio/activity';
import { ApplicationFailureCategory } from '@temporalio/common';
import type { NodeRecord } from '../src/catalog/nodes.js';
import { failpoint } from '../src/failpoints.js';
import { BUSINESS_ERROR_TYPES, NodeUnavailableError, ShardcastError } from '../src/errors.js';

const BUSINESS = new Set<string>(BUSINESS_ERROR_TYPES);

/**
 * Domain errors become typed Application failures: bad input is not retried, a lost node is.
 * Business errors are BENIGN: the worker logs them as one line (workers/control.ts), not as a stack.
 */
export function toApplicationFailure(err: unknown): never {
  if (err instanceof ShardcastError && BUSINESS.has(err.name)) {
    throw ApplicationFailure.create({ type: err.name, message: err.message, nonRetryable: true, cause: err, category: ApplicationFailureCategory.BENIGN });
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
  // `activity.<type>=sleep:MS` holds the activity (heartbeating) before its work; a cancellation ends it there.
  // Outside an activity (tests and tools calling the functions directly) there is nothing to hold.
  const context = activityContext();
  if (context) await failpoint(`activity.${context.info.activityType}`, { signal: context.cancellationSignal, onWait: () => context.heartbeat('held at a failpoint') });
  try {
    return await fn();
  } catch (err) {
    return toApplicationFailure(err);
  }
}

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** Socket errors and PostgreSQL's shutdown codes, in words. */
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  '57P01': 'server shut down',
  '57P02': 'server crashed',
  '57P03': 'server not accepting connections',
};

/**
 * A connection error as "node "node-3": unreachable (connection refused)" when it names one of
 * `nodes` (by host and port), instead of "connect ECONNREFUSED 127.0.0.1:5433".
 */
export function unreachableNode(err: unknown, nodes: readonly NodeRecord[]): NodeUnavailableError | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; address?: unknown; port?: unknown; message?: unknown };
  const why = typeof e.code === 'string' ? UNREACHABLE[e.code] : undefined;
  if (!why) return undefined;
  const node = nodes.find((n) => {
    try {
      const url = new URL(n.dsn);
      return String(e.port ?? '') === (url.port || '5432') && (e.address === undefined || hostMatches(String(e.address), url.hostname));
    } catch {
      return false;
    }
  });
  const only = new Set(nodes.map((n) => n.name)).size === 1 ? nodes[0] : undefined;
  const named = node ?? (e.port === undefined ? only : undefined);
  return named ? new NodeUnavailableError(named.name, `unreachable (${why})`, { cause: err }) : undefined;
}

function hostMatches(address: string, hostname: string): boolean {
  const local = (h: string) => h === 'localhost' || h === '::1' || h === '[::1]' || h.startsWith('127.');
  return address === hostname || (local(address) && local(hostname));
}

/** `run`, naming the node a lost connection was to (one of `nodes`). */
export async function runOn<T>(nodes: readonly NodeRecord[], fn: () => Promise<T>): Promise<T> {
  return run(async () => {
    try {
      return await fn();
    } catch (err) {
      throw unreachableNode(err, nodes) ?? err;
    }
  });
}
