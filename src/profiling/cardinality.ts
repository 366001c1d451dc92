/**
 * Cardinality estimation: the rows a statement returns, predicted from its template's features and its
 * constants, learned from the result sizes observed. A linear model (ridge regression) on
 * log(1 + rows), as a correction of the independence estimate (the table's rows times each
 * predicate's selectivity from the column statistics, which is how PostgreSQL's planner estimates):
 *
 * - dense inputs: a bias, log(table rows) and the independence estimate itself;
 * - the template's feature tokens (featureTokens, and the fingerprint), feature-hashed (±1);
 * - per predicate, numeric features of its constants, each hashed twice — under its column and
 *   operator (shared by every template) and under the template too (learned for that template):
 *   equality: log of the value's frequency (a most common value's, or the rest's share per distinct
 *   value), IN: log of the items' summed frequency and the list's length, range: log of the fraction
 *   of the column's values between the bounds (from the histogram, or the column's min and max) and,
 *   for a one-sided range, log of the fraction below and above the constant (the template's operator
 *   says which one counts: its weight learns it);
 * - a token per equality value (`tenant_id = 17`): heavy values seen often get their own correction.
 *
 * Where two columns are correlated (a city and its country), the independence estimate multiplies two
 * selectivities where one is enough: the template's own weight on the second learns to cancel it.
 * The template's own features and the equality values hash into one half of the vector, what
 * templates share (feature tokens, column-and-operator numbers) into the other, with a 30 times
 * larger penalty, as the dense inputs: one template's correction stays its own, and a template never
 * seen is predicted close to the independence estimate (the shared weights carry only what holds
 * for every template).
 *
 * Bounded memory: the sufficient statistics XᵀX and Xᵀy of a fixed number of dimensions, whatever
 * the number of statements observed; the weights are solved (Cholesky, forecasting/linalg) when predicted after new
 * observations. Deterministic: the same observations in the same order give the same weights.
 */
import { hash32 } from '../backup/stats.js';
import { InvalidInputError } from '../errors.js';
import { solveSpd } from '../forecasting/linalg.js';
import type { Queryable } from '../catalog/nodes.js';
import { featureTokens, type Predicate, type QueryFeatures, type QueryTemplate } from './templates.js';

/** What the model knows of one column: PostgreSQL's pg_stats, or a backup's key statistics. */
export interface CardinalityColumn {
  nullFraction: number;
  /** Distinct values (a count); null when unknown. */
  distinct: number | null;
  mostCommon: Array<{ value: string; frequency: number }>;
  /** Equi-depth histogram bounds (numbers: times as epoch milliseconds), sorted; empty when unknown. */
  histogram: number[];
}

export interface CardinalityTable {
  rows: number;
  /** By column name. */
  columns: Record<string, CardinalityColumn>;
}

/** By table name. */
export type CardinalityStatistics = Record<string, CardinalityTable>;

export interface CardinalityOptions {
  /** Hashed dimensions (besides the dense ones): the model's size is (dense + this)² floats. */
  dimensions?: number;
  /** Ridge penalty on the hashed weights. */
  lambda?: number;
}

/** PostgreSQL's fallbacks when it has no statistics (selfuncs.h: DEFAULT_EQ_SEL, DEFAULT_INEQ_SEL). */
const DEFAULT_EQ_SEL = 0.005;
const DEFAULT_RANGE_SEL = 1 / 3;
const DEFAULT_ROWS = 1000;
/** Selectivities are floored here before their log is taken. */
const MIN_SEL = 1e-9;
const DENSE = 3;
/**
 * A shared weight's penalty against a template's own: a correction one template needs (a correlated
 * pair) is learned by that template's weights, not spread over every template with the same column.
 */
const SHARED_PENALTY = 30;

/** max(est, actual) / min(est, actual), both floored at 1 (an estimate of 0 rows is as good as 1). */
export function qError(estimate: number, actual: number): number {
  const e = Math.max(1, estimate);
  const a = Math.max(1, actual);
  return Math.max(e, a) / Math.min(e, a);
}

/** A constant as a number: integers and decimals as they are, dates and times as epoch milliseconds; null otherwise. */
export function numericValue(text: string): number | null {
  const t = text.trim();
  if (t !== '' && /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) return Number(t);
  if (/^\d{4}-\d{2}-\d{2}/.test(t)) {
    // As PostgreSQL prints them (`2026-01-01 00:00:00+00`): a zone of hours only gets its minutes, none is UTC.
    let iso = t.length === 10 ? `${t}T00:00:00` : t.replace(' ', 'T');
    if (/[+-]\d{2}$/.test(iso)) iso += ':00';
    else if (!/(Z|[+-]\d{2}:?\d{2})$/i.test(iso)) iso += 'Z';
    const ms = Date.parse(iso);
    return Number.isFinite(ms) ? ms : null;
  }
  return null;
}

/** The share of the column's values below `x`: linear within the histogram's buckets (each holds the same share). */
function fractionBelow(histogram: readonly number[], x: number): number | null {
  const n = histogram.length;
  if (n < 2) return null;
  if (x <= histogram[0]!) return 0;
  if (x >= histogram[n - 1]!) return 1;
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (histogram[mid]! <= x) lo = mid;
    else hi = mid;
  }
  const a = histogram[lo]!;
  const b = histogram[hi]!;
  return (lo + (b > a ? (x - a) / (b - a) : 0.5)) / (n - 1);
}

interface PredicateNumbers {
  /** The predicate's selectivity under the statistics (independence estimate's factor). */
  selectivity: number;
  /** Named numeric features (their values; logs). */
  values: Array<[string, number]>;
}

/** Frequency of one equality value: a most common value's own, else the rest's share per other distinct value. */
function valueFrequency(c: CardinalityColumn | undefined, value: string | undefined): number {
  if (!c) return DEFAULT_EQ_SEL;
  const mcv = value === undefined ? undefined : c.mostCommon.find((m) => m.value === value);
  if (mcv) return mcv.frequency;
  if (c.distinct === null || c.distinct <= 0) return DEFAULT_EQ_SEL;
  const listed = c.mostCommon.reduce((a, m) => a + m.frequency, 0);
  const others = Math.max(1, c.distinct - c.mostCommon.length);
  return Math.max(0, 1 - c.nullFraction - listed) / others;
}

const ln = (x: number) => Math.log(Math.max(MIN_SEL, x));

/** A column's range predicates together: the interval between their constants (two or more) or one bound. */
function rangeNumbers(c: CardinalityColumn | undefined, constants: readonly string[]): PredicateNumbers {
  const xs = constants.map(numericValue).filter((x): x is number => x !== null);
  const hist = c?.histogram ?? [];
  if (xs.length >= 2) {
    const lo = fractionBelow(hist, Math.min(...xs));
    const hi = fractionBelow(hist, Math.max(...xs));
    if (lo === null || hi === null) return { selectivity: DEFAULT_RANGE_SEL * DEFAULT_RANGE_SEL, values: [] };
    // At least half a bucket's share of one bucket: a narrow range still holds the rows at its value.
    const width = Math.max(hi - lo, 1 / (2 * Math.max(1, c?.distinct ?? hist.length)));
    return { selectivity: width * (1 - (c?.nullFraction ?? 0)), values: [['width', ln(width)]] };
  }
  const below = xs.length === 1 ? fractionBelow(hist, xs[0]!) : null;
  if (below === null) return { selectivity: DEFAULT_RANGE_SEL, values: [] };
  // One bound: which side the operator keeps is the template's (its weights learn it); the prior takes the larger side.
  return { selectivity: Math.max(below, 1 - below) * (1 - (c?.nullFraction ?? 0)), values: [['below', ln(below)], ['above', ln(1 - below)]] };
}

/** The numbers of one column's conjunctive predicates of one kind. */
function predicateNumbers(c: CardinalityColumn | undefined, op: Predicate['op'], preds: readonly Predicate[]): PredicateNumbers {
  if (op === 'range') return rangeNumbers(c, preds.flatMap((p) => p.values));
  if (op === 'equality') {
    const p = preds[0]!;
    const f = valueFrequency(c, p.values[0]);
    return { selectivity: f, values: [['freq', ln(f)]] };
  }
  // IN: the items' frequencies summed (an unknown list, `= any($1)`: ten values' worth).
  const p = preds[0]!;
  const items = p.values.length > 0 ? p.values : [];
  const f = items.length > 0 ? items.reduce((a, v) => a + valueFrequency(c, v), 0) : 10 * valueFrequency(c, undefined);
  return { selectivity: Math.min(1, f), values: [['freq', ln(Math.min(1, f))], ['items', Math.log(1 + (p.items ?? items.length))]] };
}

export interface CardinalityInput {
  features: QueryFeatures;
  /** The template's fingerprint (its own weights); optional. */
  fingerprint?: string;
}

/** A sparse input: dense values first, then hashed (index, value) pairs. */
interface Encoded {
  dense: number[];
  hashed: Map<number, number>;
  /** The independence estimate's log(1 + rows): the prediction before any observation. */
  prior: number;
}

/** The table a predicate restricts (its own, or the statement's only one). */
const tableOf = (p: Predicate, f: QueryFeatures) => p.table ?? (f.tables.length === 1 ? f.tables[0]! : '?');

export class CardinalityModel {
  readonly dimensions: number;
  readonly lambda: number;
  private readonly size: number;
  /** XᵀX (size × size, row-major) and Xᵀy, over the observations. */
  private readonly xtx: Float64Array;
  private readonly xty: Float64Array;
  private weights: Float64Array;
  private stale = false;
  private n = 0;

  constructor(
    private statistics: CardinalityStatistics,
    options: CardinalityOptions = {},
  ) {
    const dimensions = options.dimensions ?? 512;
    const lambda = options.lambda ?? 1;
    if (!Number.isSafeInteger(dimensions) || dimensions < 16 || dimensions > 4096) throw new InvalidInputError(`cardinality model dimensions: expected a whole number from 16 to 4096, got ${dimensions}`);
    if (!(lambda > 0) || !Number.isFinite(lambda)) throw new InvalidInputError(`cardinality model lambda: expected a positive number, got ${lambda}`);
    this.dimensions = dimensions;
    this.lambda = lambda;
    this.size = DENSE + dimensions;
    this.xtx = new Float64Array(this.size * this.size);
    this.xty = new Float64Array(this.size);
    this.weights = new Float64Array(this.size);
  }

  /** Statements observed. */
  get observed(): number {
    return this.n;
  }

  /** Bytes of the model's arrays: fixed at construction. */
  bytes(): number {
    return this.xtx.byteLength + this.xty.byteLength + this.weights.byteLength;
  }

  /** New column statistics (after ANALYZE): the weights learned stay. */
  setStatistics(statistics: CardinalityStatistics): void {
    this.statistics = statistics;
  }

  /** The independence estimate (the model's prior): the tables' rows times each predicate's selectivity. */
  independenceEstimate(input: CardinalityInput | QueryTemplate): number {
    return Math.expm1(this.encode(input).prior);
  }

  private encode(input: CardinalityInput | QueryTemplate): Encoded {
    const f = input.features;
    const hashed = new Map<number, number>();
    // The first half of the hashed dimensions holds the template's own features, the second what templates share.
    const half = this.dimensions >> 1;
    const put = (token: string, value: number, shared = false) => {
      if (value === 0 || !Number.isFinite(value)) return;
      const at = (hash32(token) % half) + (shared ? half : 0);
      hashed.set(at, (hashed.get(at) ?? 0) + (hash32(token, 0x9747b28c) & 1 ? value : -value));
    };
    const template = input.fingerprint ?? `${f.kind}:${f.tables.join(',')}`;
    put(`template:${template}`, 1);
    for (const t of featureTokens(f)) put(t, 1, true);

    // Rows of the tables read (a join's, their product bounded by the larger: the join keys are mostly keys).
    const rows = f.tables.map((t) => this.statistics[t]?.rows ?? DEFAULT_ROWS);
    const tableRows = rows.length === 0 ? 1 : Math.max(...rows);
    let logSel = 0;
    const groups = new Map<string, Predicate[]>();
    for (const p of f.predicates) {
      if (!p.conjunctive) continue;
      const k = `${tableOf(p, f)}.${p.column}:${p.op}`;
      groups.set(k, [...(groups.get(k) ?? []), p]);
    }
    for (const [k, preds] of groups) {
      const p = preds[0]!;
      const column = this.statistics[tableOf(p, f)]?.columns[p.column];
      const nums = predicateNumbers(column, p.op, preds);
      logSel += ln(nums.selectivity);
      for (const [name, value] of nums.values) {
        put(`${k}:${name}`, value, true);
        put(`${template}:${k}:${name}`, value);
      }
      if (p.op === 'equality' && p.values[0] !== undefined) put(`${k}=${p.values[0]}`, 1);
    }
    const prior = Math.log1p(Math.max(0, tableRows * Math.exp(logSel)));
    return { dense: [1, Math.log1p(tableRows), prior], hashed, prior };
  }

  /** Learns from one statement: its template (or features) and the rows it returned. */
  observe(input: CardinalityInput | QueryTemplate, rows: number): void {
    if (!(rows >= 0) || !Number.isFinite(rows)) throw new InvalidInputError(`cardinality: rows observed must be a number ≥ 0, got ${rows}`);
    const x = this.encode(input);
    // The target is the correction of the prior: with nothing learned, the model says the prior.
    const y = Math.log1p(rows) - x.prior;
    const idx: number[] = [];
    const val: number[] = [];
    x.dense.forEach((v, i) => {
      idx.push(i);
      val.push(v);
    });
    for (const [i, v] of [...x.hashed].sort((a, b) => a[0] - b[0])) {
      idx.push(DENSE + i);
      val.push(v);
    }
    const s = this.size;
    for (let a = 0; a < idx.length; a++) {
      const ia = idx[a]!;
      const va = val[a]!;
      this.xty[ia]! += va * y;
      for (let b = 0; b < idx.length; b++) this.xtx[ia * s + idx[b]!]! += va * val[b]!;
    }
    this.n++;
    this.stale = true;
  }

  /** Solves (XᵀX + λI) w = Xᵀy (Cholesky); the dense weights' penalty is small: the bias and the prior's scale are free. */
  private solve(): void {
    const s = this.size;
    const a = Float64Array.from(this.xtx);
    const shared = DENSE + (this.dimensions >> 1);
    for (let i = 0; i < s; i++) a[i * s + i]! += i < DENSE || i >= shared ? SHARED_PENALTY * this.lambda : this.lambda;
    // Positive definite by the penalty: solveSpd fails only on non-finite input, which observe refuses.
    this.weights = solveSpd(a, this.xty, s) ?? new Float64Array(s);
    this.stale = false;
  }

  /** Rows the statement is predicted to return (≥ 0). */
  predict(input: CardinalityInput | QueryTemplate): number {
    if (this.stale) this.solve();
    const x = this.encode(input);
    let y = x.prior;
    x.dense.forEach((v, i) => (y += v * this.weights[i]!));
    for (const [i, v] of x.hashed) y += v * this.weights[DENSE + i]!;
    return Math.max(0, Math.expm1(y));
  }
}

/** PostgreSQL's own estimate of the rows a statement returns: EXPLAIN's top plan node's "Plan Rows". */
export async function postgresEstimate(client: Queryable, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await client.query<{ 'QUERY PLAN': Array<{ Plan: { 'Plan Rows': number } }> }>(`explain (format json) ${sql}`, params);
  const plan = rows[0]?.['QUERY PLAN']?.[0]?.Plan;
  if (!plan || typeof plan['Plan Rows'] !== 'number') throw new InvalidInputError(`EXPLAIN gave no plan rows for: ${sql.slice(0, 100)}`);
  return plan['Plan Rows'];
}

/**
 * A table's statistics from PostgreSQL's pg_stats and pg_class on one database (analyzed: an
 * unanalyzed table is an error saying so). Histogram bounds of numeric and time columns as numbers.
 */
export async function cardinalityStatistics(client: Queryable, schema: string, table: string): Promise<CardinalityTable> {
  const rel = await client.query<{ rows: number }>(`select reltuples::float8 as rows from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2`, [schema, table]);
  const rows = rel.rows[0]?.rows;
  if (rows === undefined) throw new InvalidInputError(`no table ${schema}.${table}`);
  if (rows < 0) throw new InvalidInputError(`table ${schema}.${table} has no statistics yet (never analyzed)`);
  const stats = await client.query<{ column: string; null_frac: number; n_distinct: number; mcv: string[] | null; mcf: number[] | null; hist: string[] | null }>(
    `select attname as column, null_frac::float8 as null_frac, n_distinct::float8 as n_distinct, most_common_vals::text::text[] as mcv,
            most_common_freqs::float8[] as mcf, histogram_bounds::text::text[] as hist
       from pg_stats where schemaname = $1 and tablename = $2`,
    [schema, table],
  );
  const columns: Record<string, CardinalityColumn> = {};
  for (const s of stats.rows) {
    const hist = (s.hist ?? []).map(numericValue);
    columns[s.column] = {
      nullFraction: s.null_frac,
      distinct: s.n_distinct < 0 ? -s.n_distinct * rows : s.n_distinct,
      mostCommon: (s.mcv ?? []).map((value, i) => ({ value, frequency: s.mcf?.[i] ?? 0 })),
      histogram: hist.every((x) => x !== null) ? (hist as number[]) : [],
    };
  }
  return { rows, columns };
}
