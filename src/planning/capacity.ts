import { InvalidInputError } from '../errors.js';
import { theilSen } from './robust.js';

/**
 * Node capacity in load units (DESIGN §5): the shard load figure is rows per second and the like, so
 * a node's capacity must be in the same units before the two can be compared.
 *
 * Method. From the collector's samples of one node — its load figure (the sum of its shards' load)
 * against its host CPU % at the same time — fit CPU = b + m·load with the Theil–Sen estimator (the
 * median of pairwise slopes: robust to the odd vacuum or backup spike). The load at which CPU reaches
 * the target utilisation is L* = (100·u* − b) / m; the capacity is C = L* / u*, so that a node at
 * the planner's target utilisation u* (load / C = u*) is a node whose CPU is at u*·100%.
 *
 * Refused (status "insufficient", no capacity) with fewer than `minSamples` samples, when the load
 * barely varies (its range is under `minLoadSpread` of its mean: the slope would be noise), when CPU
 * does not rise with load (slope ≤ 0), or when the CPU target is already below the idle CPU b.
 * A fit that extrapolates beyond `maxExtrapolation` × the highest observed load is kept but flagged.
 * An operator's override in the catalog always wins.
 */

export interface CapacitySample {
  load: number;
  cpuPercent: number;
}

export interface CapacityOptions {
  targetUtilisation?: number;
  minSamples?: number;
  minLoadSpread?: number;
  maxExtrapolation?: number;
  /** The catalog's override, in load units. */
  override?: number | null;
}

export type CapacityEstimate =
  | { status: 'override'; capacity: number; detail: string }
  | { status: 'calibrated'; capacity: number; slope: number; idleCpuPercent: number; samples: number; extrapolated: boolean; detail: string }
  | { status: 'insufficient'; samples: number; detail: string };

export function calibrateCapacity(samples: readonly CapacitySample[], options: CapacityOptions = {}): CapacityEstimate {
  const target = options.targetUtilisation ?? 0.7;
  const minSamples = options.minSamples ?? 12;
  const minLoadSpread = options.minLoadSpread ?? 0.2;
  const maxExtrapolation = options.maxExtrapolation ?? 3;
  if (!(target > 0 && target <= 1)) throw new InvalidInputError(`capacity calibration: target utilisation must be in (0, 1], got ${target}`);
  if (options.override !== undefined && options.override !== null) {
    if (!(Number.isFinite(options.override) && options.override > 0)) {
      throw new InvalidInputError(`capacity calibration: the override must be a positive number, got ${options.override}`);
    }
    return { status: 'override', capacity: options.override, detail: `catalog override ${options.override}` };
  }
  const usable = samples.filter((s) => Number.isFinite(s.load) && Number.isFinite(s.cpuPercent) && s.load >= 0 && s.cpuPercent >= 0 && s.cpuPercent <= 100);
  const n = usable.length;
  if (n < minSamples) return { status: 'insufficient', samples: n, detail: `${n} usable samples, at least ${minSamples} needed` };
  const loads = usable.map((s) => s.load);
  const maxLoad = Math.max(...loads);
  const meanLoad = loads.reduce((a, b) => a + b, 0) / n;
  if (meanLoad <= 0 || (maxLoad - Math.min(...loads)) / meanLoad < minLoadSpread) {
    return { status: 'insufficient', samples: n, detail: `load barely varies across the samples (spread under ${minLoadSpread * 100}% of its mean): no slope to fit` };
  }
  const line = theilSen(loads, usable.map((s) => s.cpuPercent));
  if (!line || !(line.slope > 0)) {
    return { status: 'insufficient', samples: n, detail: 'CPU does not rise with load in the samples' };
  }
  const atTarget = (100 * target - line.intercept) / line.slope;
  if (!(atTarget > 0)) {
    return { status: 'insufficient', samples: n, detail: `idle CPU ${line.intercept.toFixed(1)}% is already above the ${target * 100}% target` };
  }
  const extrapolated = atTarget > maxExtrapolation * maxLoad;
  const capacity = atTarget / target;
  return {
    status: 'calibrated',
    capacity,
    slope: line.slope,
    idleCpuPercent: line.intercept,
    samples: n,
    extrapolated,
    detail: `CPU ≈ ${line.intercept.toFixed(1)}% + ${line.slope.toPrecision(3)}%/unit × load over ${n} samples; ${target * 100}% CPU at load ${atTarget.toPrecision(4)}${extrapolated ? ` (extrapolated beyond ${maxExtrapolation}× the highest observed load ${maxLoad.toPrecision(4)})` : ''}`,
  };
}
