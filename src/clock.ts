/**
 * Shardcast's load clock: the 5-minute step of every load series, the hour a forecast looks ahead and
 * is issued on, and the day its daily season spans. `clock.compression` N (default 1) runs them N times
 * faster — a 300/N s step, a 3600/N s hour, an 86400/N s day — for demonstrations and end-to-end tests
 * that play a day in minutes. The forecasters and the planner count in steps (288 to a day, 12 to an
 * hour), so they see the same shapes either way; rates stay per real second, and timeouts, leases,
 * collection intervals and retention are real time.
 *
 * One setting per process (the worker, its training threads, the CLI): set once from the
 * configuration as the process starts (loadConfig).
 */

/** Divisors of 300: the step stays whole seconds. */
export const COMPRESSIONS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 25, 30, 50, 60, 75, 100, 150, 300] as const;

const STEP_MS = 300_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

let compression = 1;

export function setClockCompression(n: number): void {
  if (!(COMPRESSIONS as readonly number[]).includes(n)) throw new RangeError(`clock.compression: ${n} is not one of ${COMPRESSIONS.join(', ')}`);
  compression = n;
}

export function clockCompression(): number {
  return compression;
}

/** One step of every load series (5 minutes ÷ N). */
export const stepMs = (): number => STEP_MS / compression;
/** One hour of the load clock. */
export const hourMs = (): number => HOUR_MS / compression;
/** One day of the load clock. */
export const dayMs = (): number => DAY_MS / compression;
/** The start of the step `ms` falls in (epoch milliseconds). */
export const stepStart = (ms: number): number => Math.floor(ms / stepMs()) * stepMs();
/** A period given in load-clock seconds (a planning window), in real seconds. */
export const clockSeconds = (seconds: number): number => seconds / compression;
