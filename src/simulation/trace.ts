/**
 * Traces to shard loads for the simulator.
 *
 * A trace (CSV `timestamp,value`, any step from 1 minute to 1 hour) is read and cleaned by the
 * forecasting engine's reader (series.ts) and brought to the simulator's 5-minute buckets, the
 * buckets production collects: each bucket is the mean of the trace's points inside it, and a bucket
 * with none (a trace coarser than 5 minutes) is interpolated linearly between its neighbours. The
 * trace is then divided by its 99th percentile, so that every trace peaks near 1 whatever it measures.
 *
 * Each trace drives a group of `shardsPerTrace` shards. Shard j of a group carries
 *   load(k) = groupPeak × share_j × trace(k + maxShift − shift_j)
 * in bucket k, where, from a seeded RNG (mulberry32, the same seed gives the same fleet):
 * - share_j is skewed: ∝ (r_j + 1)^−skew for a random rank r_j, times a jitter in [0.8, 1.2], normalised;
 * - shift_j is a time shift of 0 to maxShiftHours hours, whole buckets (a shard lags its trace);
 * - its size is uniform in [minGiB, maxGiB] GiB.
 * Bucket 0 is the simulation's epoch; the trace's own dates are not used.
 */
import { InvalidInputError } from '../errors.js';
import { quantile } from '../planning/robust.js';
import { uniforms } from '../forecasting/random.js';
import { cleanSeries, readSeriesCsv, type CleanSeries } from '../forecasting/series.js';

export const SIM_STEP_SECONDS = 300;
const GIB = 2 ** 30;

export interface Trace {
  name: string;
  /** 5-minute buckets, divided by the trace's 99th percentile. */
  values: number[];
}

export interface ShardGroupOptions {
  shardsPerTrace: number;
  seed: number;
  /** Load of a whole group at its trace's 99th percentile, in load units. */
  groupPeak: number;
  skew: number;
  maxShiftHours: number;
  minGiB: number;
  maxGiB: number;
}

export const DEFAULT_GROUP_OPTIONS: ShardGroupOptions = { shardsPerTrace: 4, seed: 1, groupPeak: 120, skew: 0.7, maxShiftHours: 6, minGiB: 4, maxGiB: 16 };

export interface SimShard {
  shardId: number;
  trace: string;
  share: number;
  shiftSteps: number;
  bytes: number;
  /** Load per 5-minute bucket from the epoch. */
  load: number[];
}

/** A trace file, cleaned, in 5-minute buckets, normalised; errors name the file. */
export async function loadTrace(file: string): Promise<Trace> {
  const { name, rows } = await readSeriesCsv(file);
  let clean: CleanSeries;
  try {
    clean = cleanSeries(rows, name);
  } catch (err) {
    throw new InvalidInputError(`${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return normalise(name, toSimSteps(clean.values, clean.stepSeconds));
}

/** Evenly spaced values of any step (60–3600 s) as 5-minute buckets (see the module comment). */
export function toSimSteps(values: readonly number[], stepSeconds: number): number[] {
  const span = values.length * stepSeconds;
  const buckets = Math.floor(span / SIM_STEP_SECONDS);
  const sums = new Array<number>(buckets).fill(0);
  const counts = new Array<number>(buckets).fill(0);
  values.forEach((v, i) => {
    const b = Math.floor((i * stepSeconds) / SIM_STEP_SECONDS);
    if (b < buckets) {
      sums[b]! += v;
      counts[b]!++;
    }
  });
  return sums.map((s, b) => {
    if (counts[b]! > 0) return s / counts[b]!;
    // The last point holds over its own step: no extrapolation past it.
    const x = Math.min((b * SIM_STEP_SECONDS) / stepSeconds, values.length - 1);
    const i = Math.min(Math.floor(x), values.length - 2);
    return values[i]! + (values[i + 1]! - values[i]!) * (x - i);
  });
}

export function normalise(name: string, values: number[]): Trace {
  const p99 = quantile(values, 0.99);
  if (!(p99 > 0)) throw new InvalidInputError(`${name}: its 99th percentile is ${p99}; a load trace needs positive values`);
  return { name, values: values.map((v) => Math.max(0, v / p99)) };
}

/** The shards the traces drive over `steps` buckets (see the module comment); shard ids from 1, group by group. */
export function shardGroups(traces: readonly Trace[], steps: number, options: ShardGroupOptions): SimShard[] {
  const { shardsPerTrace: k, skew, maxShiftHours, minGiB, maxGiB, groupPeak } = options;
  const random = uniforms(options.seed);
  const maxShift = Math.round((maxShiftHours * 3600) / SIM_STEP_SECONDS);
  const shards: SimShard[] = [];
  for (const trace of traces) {
    const needed = steps + maxShift;
    if (trace.values.length < needed) {
      throw new InvalidInputError(`${trace.name}: ${fmtDays(trace.values.length)} of data, the simulation needs ${fmtDays(needed)} (history, simulated days and ${maxShiftHours} h of shifts)`);
    }
    const ranks = Array.from({ length: k }, (_, j) => j);
    for (let j = k - 1; j > 0; j--) {
      const r = Math.floor(random() * (j + 1));
      [ranks[j], ranks[r]] = [ranks[r]!, ranks[j]!];
    }
    const raw = ranks.map((r) => (r + 1) ** -skew * (0.8 + 0.4 * random()));
    const total = raw.reduce((a, b) => a + b, 0);
    for (let j = 0; j < k; j++) {
      const share = raw[j]! / total;
      const shiftSteps = Math.floor(random() * (maxShift + 1));
      const bytes = Math.round((minGiB + (maxGiB - minGiB) * random()) * GIB);
      const offset = maxShift - shiftSteps;
      const load = Array.from({ length: steps }, (_, i) => groupPeak * share * trace.values[i + offset]!);
      shards.push({ shardId: shards.length + 1, trace: trace.name, share, shiftSteps, bytes, load });
    }
  }
  return shards;
}

function fmtDays(buckets: number): string {
  return `${((buckets * SIM_STEP_SECONDS) / 86_400).toFixed(1)} days`;
}
