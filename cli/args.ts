/**
 * Parsers of command-line values, shared by the commands. Numbers are decimal only (no `0x10`, `1e3`,
 * `Infinity`, blanks), whole where a count is wanted, and bounded where a large value can hurt; a bad
 * value is commander's one-line error, which names the option and the value.
 */
import { InvalidArgumentError } from 'commander';
import { parseListenAddress } from '../src/listen-address.js';

const WHOLE = /^\d+$/;
const DECIMAL = /^\d+(\.\d+)?$/;

/** A whole number from `min` to `max`; `what` is how the error describes it (e.g. "seconds"). */
export function wholeNumber(min: number, max: number, what = ''): (value: string) => number {
  return (value: string): number => {
    const n = WHOLE.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number${what ? ` of ${what}` : ''} from ${min} to ${max}`);
    return n;
  };
}

/** A decimal number above 0 (or from 0, with `zeroOk`) up to `max`. */
export function decimalNumber(max: number, what = '', zeroOk = false): (value: string) => number {
  return (value: string): number => {
    const n = DECIMAL.test(value) ? Number(value) : NaN;
    if (!Number.isFinite(n) || n > max || (zeroOk ? n < 0 : n <= 0)) {
      throw new InvalidArgumentError(`expected a decimal number${what ? ` of ${what}` : ''} ${zeroOk ? 'from 0' : 'above 0'} up to ${max}`);
    }
    return n;
  };
}

/** Shard ids (catalog bigints, shown as numbers). */
export function shardId(value: string): number {
  const n = WHOLE.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a shard id (a whole number, 1 or more)');
  return n;
}
/** Seconds a fenced copy is kept after a cutover: `movement.graceSeconds`'s bounds, up to 30 days. */
export const graceSeconds = wholeNumber(0, 30 * 86_400, 'seconds');
/** Load units of a node's capacity. */
export const capacityUnits = decimalNumber(1e9, 'load units');
/** Seconds of a forecasting budget: `forecast.budgetSeconds`' bounds. */
export const budgetSeconds = decimalNumber(600, 'seconds');
/** Seconds of hyperparameter search: `forecast.searchSeconds`' bounds (0: none). */
export const searchSeconds = decimalNumber(600, 'seconds', true);
/** Seconds between two progress polls of `--follow`. */
export const pollSeconds = decimalNumber(60, 'seconds');

/** The copy governor's latency ratio (--governor-ratio): a decimal from 1 to 100. */
export function governorRatio(value: string): number {
  const n = DECIMAL.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(n) || n < 1 || n > 100) throw new InvalidArgumentError('expected a latency ratio, a decimal number from 1 to 100 (e.g. 1.3)');
  return n;
}

/** `host:port` to listen on; kept as text, the config checks it again. */
export function listenAddress(value: string): string {
  if (!parseListenAddress(value)) throw new InvalidArgumentError('expected host:port (e.g. 127.0.0.1:9464, or [::1]:9464)');
  return value;
}

/** A comma-separated list, blanks dropped. */
export function list(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration such as 30s, 15m, 2h or 7d, in milliseconds (1 second to 366 days). */
export function duration(value: string): number {
  const m = /^(\d{1,6})([smhd])$/.exec(value);
  const ms = m ? Number(m[1]) * DURATION_UNITS[m[2]!]! : NaN;
  if (!(ms >= 1000 && ms <= 366 * 86_400_000)) throw new InvalidArgumentError('expected a duration such as 30s, 15m, 2h or 7d (up to 366d)');
  return ms;
}
