/**
 * Pure helpers of the retraining and forecasting runs, shared by their workflows and activities:
 * batching, bounded fan-out, and the run's summary.
 */

/** What became of one series in a run. */
export interface SeriesOutcome {
  series: string;
  status: 'trained' | 'fallback' | 'forecast' | 'failed';
  error?: string;
}

/** What a retraining or forecasting run did, series by series counted. */
export interface ForecastingSummary {
  kind: 'retrain' | 'forecast';
  /** ISO time the run trained or forecast as of. */
  asOf: string;
  series: number;
  trained: number;
  fallback: number;
  forecast: number;
  failed: number;
  /** Failed series with why (the first 20). */
  failures: Array<{ series: string; error: string }>;
  /** Forecasting only: what the hand-over to the rebalancer did (started its run, found one running, or none). */
  rebalance?: string;
  /** Forecasting only: the hot, warm and cold shards classified after the forecasts, per table, or why not. */
  temperature?: string;
}

/** Splits the series into batches of at most `size`. */
export function batches<T>(items: readonly T[], size: number): T[][] {
  const n = Math.max(1, Math.floor(size));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += n) out.push(items.slice(i, i + n));
  return out;
}

/** Runs `work` over the items with at most `parallel` in flight; `progress` sees the results after each. */
export async function runBounded<T, R>(items: readonly T[], parallel: number, work: (item: T) => Promise<R[]>, progress: (results: readonly R[]) => void): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      results.push(...(await work(item)));
      progress(results);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, lane));
  return results;
}

export function summarise(kind: ForecastingSummary['kind'], asOf: string, series: number, outcomes: readonly SeriesOutcome[]): ForecastingSummary {
  const count = (status: SeriesOutcome['status']) => outcomes.filter((o) => o.status === status).length;
  const failures = outcomes.filter((o) => o.status === 'failed').map((o) => ({ series: o.series, error: o.error ?? 'unknown error' }));
  return { kind, asOf, series, trained: count('trained'), fallback: count('fallback'), forecast: count('forecast'), failed: failures.length, failures: failures.slice(0, 20) };
}

/**
 * A run's fan-out: the series in batches of `batchSize` through `work`, at most `parallelBatches`
 * at once, with the progress so far (then the summary) handed to `report` after each batch, e.g.
 * the workflow's current details. Returns the run's summary.
 */
export async function runInBatches(
  kind: ForecastingSummary['kind'],
  asOf: string,
  series: readonly string[],
  sizes: { batchSize: number; parallelBatches: number },
  work: (batch: string[]) => Promise<SeriesOutcome[]>,
  report: (line: string) => void,
): Promise<ForecastingSummary> {
  const outcomes = await runBounded(batches(series, sizes.batchSize), sizes.parallelBatches, work, (done) =>
    report(describeSummary(summarise(kind, asOf, series.length, done), done.length)),
  );
  const summary = summarise(kind, asOf, series.length, outcomes);
  report(describeSummary(summary));
  return summary;
}

/** The summary of a batch's activity in the UI, e.g. "train 10 series: table:orders:inserts …". */
export function batchSummary(verb: string, batch: readonly string[]): string {
  return `${verb} ${batch.length} series: ${batch[0]}${batch.length > 1 ? ' …' : ''}`;
}

/** One line, for the UI's current details and the CLI. */
export function describeSummary(s: Pick<ForecastingSummary, 'kind' | 'series' | 'trained' | 'fallback' | 'forecast' | 'failed'>, done = s.series): string {
  const counts = s.kind === 'retrain' ? `${s.trained} trained, ${s.fallback} fell back, ${s.failed} failed` : `${s.forecast} forecast, ${s.failed} failed`;
  return `${done} of ${s.series} series done: ${counts}`;
}
