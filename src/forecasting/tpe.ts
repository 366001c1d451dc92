/**
 * Bayesian optimisation of hyperparameters by a Tree-structured Parzen Estimator (TPE; Bergstra,
 * Bardenet, Bengio and Kégl, "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011), with
 * Optuna's choices where the paper leaves them open (prior component, bandwidth clipping).
 *
 * Written by hand: npm has no maintained TPE or Gaussian-process optimiser (the packages found are
 * unmaintained ports without types, or browser demos), and the method is small.
 *
 * How a point is suggested. The trials so far are split at the γ-quantile of their values: the
 * best ⌈γ·n⌉ are "good", the rest "bad". Each parameter gets two densities, l over the good trials
 * and g over the bad ones: for a number, a mixture of truncated normals at the observed values (in
 * log space for `log` parameters) plus a broad prior component; for a choice, smoothed frequencies.
 * `candidates` points are drawn from l and the one with the largest l/g (summed over parameters in
 * log, i.e. parameters are treated as independent) is evaluated next. The first `startup` trials
 * (initial points included) are uniform random, as the densities need a few observations.
 *
 * Values: lower is better. An objective that throws, or returns a non-finite value, makes a trial
 * with value +∞: it stays in the "bad" set and the search goes on. Everything is seeded.
 */
import { InvalidInputError, errorMessage } from '../errors.js';
import { standardNormal, uniforms } from './random.js';

export type Value = number | string | boolean;
export type Point = Record<string, Value>;

export type Param =
  | { kind: 'float'; name: string; low: number; high: number; log?: boolean }
  | { kind: 'int'; name: string; low: number; high: number; log?: boolean }
  | { kind: 'choice'; name: string; values: readonly Value[] };

export interface Trial {
  point: Point;
  value: number;
  /** Milliseconds the objective took. */
  ms: number;
  /** Why the objective failed, when it threw. */
  error?: string;
}

export interface SearchOptions {
  seed?: number;
  /** `performance.now()` time after which no new trial starts (one trial always runs). */
  deadline?: number;
  /** Default 100. */
  maxTrials?: number;
  /** Points evaluated first, e.g. the defaults or yesterday's best; invalid ones are refused. */
  initial?: readonly Point[];
  /** Uniform random trials (initial points included) before the densities take over (default 4). */
  startup?: number;
  /** Points drawn from l per suggestion (default 24). */
  candidates?: number;
  /** Share of the trials that counts as good (default 0.25). */
  gamma?: number;
}

export interface SearchResult {
  best: Trial;
  trials: Trial[];
  seconds: number;
}

/** Checks a search space; throws InvalidInputError naming the first bad parameter. */
export function validateSpace(space: readonly Param[]): void {
  if (space.length === 0) throw new InvalidInputError('tpe: the search space is empty');
  const names = new Set<string>();
  for (const p of space) {
    if (names.has(p.name)) throw new InvalidInputError(`tpe: parameter ${p.name} appears twice`);
    names.add(p.name);
    if (p.kind === 'choice') {
      if (p.values.length === 0) throw new InvalidInputError(`tpe: parameter ${p.name} has no values to choose from`);
      continue;
    }
    if (!Number.isFinite(p.low) || !Number.isFinite(p.high) || !(p.low <= p.high)) throw new InvalidInputError(`tpe: parameter ${p.name} needs finite low <= high, got [${p.low}, ${p.high}]`);
    if (p.log && !(p.low > 0)) throw new InvalidInputError(`tpe: parameter ${p.name} is searched in log space and needs low > 0, got ${p.low}`);
    if (p.kind === 'int' && (!Number.isInteger(p.low) || !Number.isInteger(p.high))) throw new InvalidInputError(`tpe: integer parameter ${p.name} needs integer bounds, got [${p.low}, ${p.high}]`);
  }
}

/** Throws InvalidInputError unless `point` gives every parameter of `space` a value it allows. */
export function validatePoint(space: readonly Param[], point: Point): void {
  for (const p of space) {
    const v = point[p.name];
    const ok =
      p.kind === 'choice'
        ? p.values.includes(v as Value)
        : typeof v === 'number' && v >= p.low && v <= p.high && (p.kind === 'float' || Number.isInteger(v));
    if (!ok) throw new InvalidInputError(`tpe: ${JSON.stringify(v)} is not a valid value of ${p.name}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Numbers live in an internal coordinate: log(x) for log parameters, and integers widened by ±½ so
// that each integer gets an equal share of the interval.

function bounds(p: Exclude<Param, { kind: 'choice' }>): [number, number] {
  const [low, high] = p.kind === 'int' ? [p.low - 0.5, p.high + 0.5] : [p.low, p.high];
  return p.log ? [Math.log(Math.max(low, p.low / 2)), Math.log(high)] : [low, high];
}

const toInternal = (p: Exclude<Param, { kind: 'choice' }>, x: number) => (p.log ? Math.log(x) : x);

function fromInternal(p: Exclude<Param, { kind: 'choice' }>, u: number): number {
  const x = p.log ? Math.exp(u) : u;
  const clamped = Math.min(p.high, Math.max(p.low, p.kind === 'int' ? Math.round(x) : x));
  return clamped;
}

/** Standard normal CDF (erf by Abramowitz–Stegun 7.1.26, |error| < 1.5e-7). */
function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

/** A mixture of normals truncated to [lo, hi], equally weighted: one per observation and a prior. */
class Parzen {
  private readonly mus: number[];
  private readonly sigmas: number[];
  private readonly masses: number[];

  constructor(
    observations: readonly number[],
    private readonly lo: number,
    private readonly hi: number,
  ) {
    const range = hi - lo || 1;
    const sorted = [...observations].sort((a, b) => a - b);
    const mus = [...sorted, (lo + hi) / 2];
    // Bandwidth: the larger gap to a neighbour (bounds count as neighbours), clipped (Optuna's rule).
    const minSigma = range / Math.min(100, 1 + sorted.length);
    const sigmas = sorted.map((mu, i) => {
      const left = mu - (i > 0 ? sorted[i - 1]! : lo);
      const right = (i < sorted.length - 1 ? sorted[i + 1]! : hi) - mu;
      return Math.min(range, Math.max(minSigma, left, right));
    });
    sigmas.push(range);
    this.mus = mus;
    this.sigmas = sigmas;
    this.masses = mus.map((mu, i) => Math.max(normalCdf((hi - mu) / sigmas[i]!) - normalCdf((lo - mu) / sigmas[i]!), 1e-12));
  }

  sample(random: () => number): number {
    const k = Math.floor(random() * this.mus.length);
    for (let tries = 0; tries < 100; tries++) {
      const u = this.mus[k]! + this.sigmas[k]! * standardNormal(random);
      if (u >= this.lo && u <= this.hi) return u;
    }
    return Math.min(this.hi, Math.max(this.lo, this.mus[k]!));
  }

  logDensity(u: number): number {
    let p = 0;
    for (let k = 0; k < this.mus.length; k++) {
      const z = (u - this.mus[k]!) / this.sigmas[k]!;
      p += Math.exp(-0.5 * z * z) / (this.sigmas[k]! * Math.sqrt(2 * Math.PI) * this.masses[k]!);
    }
    return Math.log(p / this.mus.length);
  }
}

/** Frequencies of the observed values, each count plus one. */
class Frequencies {
  private readonly probabilities: number[];

  constructor(
    private readonly values: readonly Value[],
    observed: readonly Value[],
  ) {
    const counts = values.map((v) => 1 + observed.filter((o) => o === v).length);
    const total = counts.reduce((a, b) => a + b, 0);
    this.probabilities = counts.map((c) => c / total);
  }

  sample(random: () => number): Value {
    let r = random();
    for (let i = 0; i < this.values.length; i++) {
      r -= this.probabilities[i]!;
      if (r < 0) return this.values[i]!;
    }
    return this.values[this.values.length - 1]!;
  }

  logDensity(v: Value): number {
    return Math.log(this.probabilities[this.values.indexOf(v)] ?? 1e-12);
  }
}

/** A uniform random point of the space. */
export function randomPoint(space: readonly Param[], random: () => number): Point {
  const point: Point = {};
  for (const p of space) {
    if (p.kind === 'choice') point[p.name] = p.values[Math.floor(random() * p.values.length)]!;
    else {
      const [lo, hi] = bounds(p);
      point[p.name] = fromInternal(p, lo + random() * (hi - lo));
    }
  }
  return point;
}

/** The next point to evaluate given the trials so far (see the module comment). */
export function suggest(space: readonly Param[], trials: readonly Trial[], random: () => number, options: Pick<SearchOptions, 'candidates' | 'gamma'> = {}): Point {
  if (trials.length < 2) return randomPoint(space, random);
  const ranked = [...trials].sort((a, b) => (Number.isFinite(a.value) ? a.value : Infinity) - (Number.isFinite(b.value) ? b.value : Infinity));
  const goodCount = Math.min(ranked.length - 1, Math.max(1, Math.ceil((options.gamma ?? 0.25) * ranked.length)));
  const good = ranked.slice(0, goodCount);
  const bad = ranked.slice(goodCount);
  const densities = space.map((p) => {
    if (p.kind === 'choice') {
      return { p, l: new Frequencies(p.values, good.map((t) => t.point[p.name]!)), g: new Frequencies(p.values, bad.map((t) => t.point[p.name]!)) };
    }
    const [lo, hi] = bounds(p);
    const at = (ts: Trial[]) => ts.map((t) => toInternal(p, t.point[p.name] as number));
    return { p, l: new Parzen(at(good), lo, hi), g: new Parzen(at(bad), lo, hi) };
  });
  let best: Point | undefined;
  let bestScore = -Infinity;
  for (let c = 0; c < (options.candidates ?? 24); c++) {
    const point: Point = {};
    let score = 0;
    for (const { p, l, g } of densities) {
      if (p.kind === 'choice') {
        const v = (l as Frequencies).sample(random);
        point[p.name] = v;
        score += (l as Frequencies).logDensity(v) - (g as Frequencies).logDensity(v);
      } else {
        const u = (l as Parzen).sample(random);
        point[p.name] = fromInternal(p, u);
        // Score where the value will be evaluated: integers at the integer.
        const at = toInternal(p, point[p.name] as number);
        score += (l as Parzen).logDensity(at) - (g as Parzen).logDensity(at);
      }
    }
    if (score > bestScore || best === undefined) [best, bestScore] = [point, score];
  }
  return best!;
}

const sameAs = (a: Point, b: Point) => Object.keys(a).every((k) => a[k] === b[k]);

/**
 * Minimises `objective` over `space` by TPE until `maxTrials` or the deadline. Throws
 * InvalidInputError for a bad space or initial point, before evaluating anything.
 */
export async function minimize(objective: (point: Point) => number | Promise<number>, space: readonly Param[], options: SearchOptions = {}): Promise<SearchResult> {
  validateSpace(space);
  for (const point of options.initial ?? []) validatePoint(space, point);
  const started = performance.now();
  const random = uniforms(options.seed ?? 1);
  const maxTrials = options.maxTrials ?? 100;
  const startup = options.startup ?? 4;
  const deadline = options.deadline ?? Infinity;
  const trials: Trial[] = [];
  while (trials.length < maxTrials && (trials.length === 0 || performance.now() < deadline)) {
    let point = options.initial?.[trials.length] ?? (trials.length < startup ? randomPoint(space, random) : suggest(space, trials, random, options));
    // A point already evaluated teaches nothing (the objectives here are deterministic): try elsewhere.
    for (let tries = 0; tries < 10 && trials.some((t) => sameAs(t.point, point)); tries++) point = randomPoint(space, random);
    const t0 = performance.now();
    let value: number;
    let error: string | undefined;
    try {
      value = await objective(point);
      if (!Number.isFinite(value)) value = Infinity;
    } catch (err) {
      value = Infinity;
      error = errorMessage(err);
    }
    trials.push({ point, value, ms: performance.now() - t0, ...(error === undefined ? {} : { error }) });
  }
  const best = trials.reduce((a, b) => (b.value < a.value ? b : a));
  return { best, trials, seconds: (performance.now() - started) / 1000 };
}
