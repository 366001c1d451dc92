/**
 * The workload description a restore is planned from (JSON or YAML): what the operator expects of the
 * table once restored. Every field is checked; a bad one is one error naming the file and the field.
 */
import { parse as parseYaml } from 'yaml';
import { InvalidInputError, errorMessage } from '../errors.js';

export interface Workload {
  /** Queries per second at the busiest time, now. */
  predictedPeakQps: number;
  /** Bytes of the table, now (the backup's size when not given). */
  predictedDataVolume: number | null;
  /** Rows older than this many days are dropped (null: kept forever) … */
  retentionDays: number | null;
  /** … by this date or timestamp column (null: the table's only one, or the shard key when it is one). */
  retentionColumn: string | null;
  /** Relative size or load skew between shards that starts a rebalance (0.2: 20 %). */
  rebalanceThreshold: number;
  /** Expected growth per month, of load and data (0.1: 10 %). */
  growthPerMonth: number;
  /** Months ahead the layout must hold without a split. */
  horizonMonths: number;
}

const FIELDS = ['predicted_peak_qps', 'predicted_data_volume', 'data_retention_policy', 'retention_column', 'rebalance_threshold', 'growth_per_month', 'horizon_months'];
const UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };
const DAYS: Record<string, number> = { d: 1, day: 1, days: 1, w: 7, week: 7, weeks: 7, month: 30, months: 30, mo: 30, y: 365, year: 365, years: 365 };

/** A fraction from 0.2 or "20%". */
function fraction(value: unknown): number | null {
  if (typeof value === 'number') return value;
  const m = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(value) : null;
  return m ? Number(m[1]) / 100 : null;
}

export function parseWorkload(text: string, file: string): Workload {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new InvalidInputError(`${file}: not valid JSON or YAML: ${errorMessage(err).split('\n')[0]}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new InvalidInputError(`${file}: expected a mapping of ${FIELDS.slice(0, 5).join(', ')}`);
  const w = doc as Record<string, unknown>;
  const bad = (field: string, expected: string) => new InvalidInputError(`${file}: ${field}: expected ${expected}, got ${JSON.stringify(w[field])}`);
  for (const key of Object.keys(w)) if (!FIELDS.includes(key)) throw new InvalidInputError(`${file}: ${key}: unknown field (known: ${FIELDS.join(', ')})`);

  const qps = w.predicted_peak_qps;
  if (qps === undefined) throw new InvalidInputError(`${file}: predicted_peak_qps: required`);
  if (typeof qps !== 'number' || !Number.isFinite(qps) || qps <= 0) throw bad('predicted_peak_qps', 'a positive number of queries per second');

  let volume: number | null = null;
  if (w.predicted_data_volume !== undefined) {
    const v = w.predicted_data_volume;
    const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(v) : null;
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) volume = v;
    else if (m && UNITS[m[2]!.toLowerCase()] !== undefined && Number(m[1]) > 0) volume = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
    else throw bad('predicted_data_volume', 'bytes, or a size like "500GB" or "2 TiB"');
  }

  let retentionDays: number | null = null;
  const r = w.data_retention_policy;
  if (r !== undefined && r !== null && r !== 'forever') {
    const m = typeof r === 'string' ? /^\s*(\d+)\s*([a-z]+)\s*$/i.exec(r) : null;
    if (!m || DAYS[m[2]!.toLowerCase()] === undefined || Number(m[1]) <= 0) throw bad('data_retention_policy', 'a duration like "90d", "6 months", "1 year", or "forever"');
    retentionDays = Number(m[1]) * DAYS[m[2]!.toLowerCase()]!;
  }

  const column = w.retention_column ?? null;
  if (column !== null && (typeof column !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(column))) throw bad('retention_column', 'a column name');

  const threshold = w.rebalance_threshold === undefined ? 0.2 : fraction(w.rebalance_threshold);
  if (threshold === null || !(threshold > 0 && threshold <= 1)) throw bad('rebalance_threshold', 'a fraction in (0, 1] or a percentage like "20%"');

  const growth = w.growth_per_month === undefined ? 0 : fraction(w.growth_per_month);
  if (growth === null || !(growth >= 0 && growth <= 10)) throw bad('growth_per_month', 'a fraction ≥ 0 or a percentage like "10%"');

  const horizon = w.horizon_months ?? 12;
  if (typeof horizon !== 'number' || !Number.isInteger(horizon) || horizon < 1 || horizon > 120) throw bad('horizon_months', 'a whole number of months from 1 to 120');

  return { predictedPeakQps: qps, predictedDataVolume: volume, retentionDays, retentionColumn: column, rebalanceThreshold: threshold, growthPerMonth: growth, horizonMonths: horizon };
}
