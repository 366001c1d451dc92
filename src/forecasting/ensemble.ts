/**
 * The ensemble: a weighted mean of the members' point forecasts, with weights from their back-test
 * errors at earlier origins. Members whose MASE is worse than the seasonal naive's by more than a
 * margin get no weight. Schemes, compared on the traces by `npm run bench -- forecast`:
 *
 * - `inverse_mase`: w ∝ 1/MASE;
 * - `inverse_mse`: w ∝ 1/MSE;
 * - `softmax`: w ∝ exp(−(MASE/best − 1)/τ), τ = 0.1, sharply favouring the best;
 * - `best`: all weight on the member with the lowest MASE (model selection by back-test).
 * - `softmax_recent`: `softmax` on errors that forget: each origin's errors count half after
 *   RECENT_HALF_LIFE more origins (two days of hourly origins), so a member that turns bad loses
 *   its weight within days rather than weeks.
 *
 * `softmax_recent` is the default. Over the six traces of `npm run bench -- forecast` its MASE
 * relative to the seasonal naive had the lowest geometric mean (0.400, against 0.410 for `softmax`,
 * 0.415 for `best`, 0.435 for `inverse_mse` and 0.468 for `inverse_mase`) and the lowest worst case
 * (0.736), with the same coverage. Before any error is known every member weighs the same.
 */

export const WEIGHT_SCHEMES = ['inverse_mase', 'inverse_mse', 'softmax', 'best', 'softmax_recent'] as const;
export type WeightScheme = (typeof WEIGHT_SCHEMES)[number];

export const DEFAULT_SCHEME: WeightScheme = 'softmax_recent';
/** Members worse than the baseline by more than this fraction of its MASE are dropped. */
export const DROP_MARGIN = 0.05;
const SOFTMAX_TEMPERATURE = 0.1;
/** Origins after which `softmax_recent` counts an origin's errors half. */
export const RECENT_HALF_LIFE = 48;

/** A member's back-test error so far; undefined while none of its forecasts has been scored. */
export interface MemberError {
  mase: number;
  mse: number;
}

export interface WeightOptions {
  scheme?: WeightScheme;
  /** The member every other is measured against (and which is never dropped). */
  baseline?: string;
  margin?: number;
}

/** Weights summing to 1 over the members (see the module comment). */
export function ensembleWeights(errors: ReadonlyMap<string, MemberError | undefined>, options: WeightOptions = {}): Map<string, number> {
  const { scheme = DEFAULT_SCHEME, baseline = 'seasonal_naive', margin = DROP_MARGIN } = options;
  const members = [...errors.keys()];
  const known = members.filter((m) => errors.get(m) !== undefined);
  if (known.length < members.length || members.length === 0) return normalise(new Map(members.map((m) => [m, 1])));
  const err = (m: string) => errors.get(m)!;
  const limit = errors.has(baseline) ? err(baseline).mase * (1 + margin) : Infinity;
  const kept = members.filter((m) => m === baseline || err(m).mase <= limit);
  const score = (m: string) => (scheme === 'inverse_mse' ? err(m).mse : err(m).mase);
  const best = Math.min(...kept.map(score));
  // A perfect member takes everything: shares among perfect members only.
  if (!(best > 0)) return normalise(new Map(members.map((m) => [m, kept.includes(m) && score(m) === best ? 1 : 0])));
  const bestMember = kept.find((m) => score(m) === best)!;
  const raw = (m: string): number => {
    if (!kept.includes(m)) return 0;
    switch (scheme) {
      case 'inverse_mase':
      case 'inverse_mse':
        return 1 / score(m);
      case 'softmax':
      case 'softmax_recent':
        return Math.exp(-(score(m) / best - 1) / SOFTMAX_TEMPERATURE);
      case 'best':
        return m === bestMember ? 1 : 0;
    }
  };
  return normalise(new Map(members.map((m) => [m, raw(m)])));
}

function normalise(weights: Map<string, number>): Map<string, number> {
  const total = [...weights.values()].reduce((a, b) => a + b, 0);
  return new Map([...weights].map(([m, w]) => [m, total > 0 ? w / total : 1 / weights.size]));
}

/** Σ wᵢ·forecastᵢ, step by step. */
export function combine(forecasts: ReadonlyMap<string, readonly number[]>, weights: ReadonlyMap<string, number>): number[] {
  const horizon = Math.min(...[...forecasts.values()].map((f) => f.length));
  const out = new Array<number>(horizon).fill(0);
  for (const [m, f] of forecasts) {
    const w = weights.get(m) ?? 0;
    if (w > 0) for (let i = 0; i < horizon; i++) out[i] = out[i]! + w * f[i]!;
  }
  return out;
}

/** Scaled absolute and squared errors per member, summed over the origins scored so far (with `halfLife`, in origins, older ones count less). */
export class BacktestErrors {
  private readonly sums = new Map<string, { scaled: number; squared: number; count: number }>();
  private readonly decay: number;

  constructor(options: { halfLife?: number } = {}) {
    this.decay = options.halfLife === undefined ? 1 : 0.5 ** (1 / options.halfLife);
  }

  /** The errors of one origin's forecast of one member. */
  add(member: string, actual: readonly number[], forecast: readonly number[], scale: number): void {
    let scaled = 0;
    let squared = 0;
    actual.forEach((a, i) => {
      scaled += Math.abs(a - forecast[i]!) / scale;
      squared += (a - forecast[i]!) ** 2;
    });
    const sum = this.sums.get(member) ?? { scaled: 0, squared: 0, count: 0 };
    const d = this.decay;
    this.sums.set(member, { scaled: d * sum.scaled + scaled, squared: d * sum.squared + squared, count: d * sum.count + actual.length });
  }

  /** MASE and MSE of the member so far, undefined before a value of it was scored. */
  error(member: string): MemberError | undefined {
    const sum = this.sums.get(member);
    return sum && sum.count > 0 ? { mase: sum.scaled / sum.count, mse: sum.squared / sum.count } : undefined;
  }
}
