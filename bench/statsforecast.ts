/**
 * The statsforecast reference of `npm run bench -- forecast`: scores of Nixtla's AutoETS, AutoARIMA,
 * AutoTheta and MSTL on the same traces under the same protocol, computed by
 * scripts/statsforecast_reference.py and committed as bench/fixtures/statsforecast.json (the product
 * needs no Python). A trace is compared only when the fixture's horizon and number of evaluated
 * origins are the bench's: a fixture from another protocol is reported, not silently compared.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { InvalidInputError } from '../src/errors.js';
import { BASELINE, type BacktestReport } from '../src/forecasting/backtest.js';

export const REFERENCE_FIXTURE = resolve(import.meta.dirname, 'fixtures/statsforecast.json');

const fixtureSchema = z.object({
  versions: z.record(z.string(), z.string()),
  traces: z.record(
    z.string(),
    z.object({
      horizon: z.number().int().positive(),
      origins: z.number().int().positive(),
      models: z.record(z.string(), z.object({ mase: z.number().nonnegative() })),
    }),
  ),
});
export type ReferenceFixture = z.infer<typeof fixtureSchema>;

export async function readReference(file = REFERENCE_FIXTURE): Promise<ReferenceFixture> {
  const parsed = fixtureSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
  if (!parsed.success) throw new InvalidInputError(`${file}: not a statsforecast reference: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  return parsed.data;
}

/** One trace side by side: MASE of the seasonal naive, the ensemble and each reference model. */
export interface SideBySideRow {
  trace: string;
  naive: number;
  ensemble: number;
  /** By reference model; empty when the trace is not in the fixture or not comparable. */
  reference: Record<string, number>;
  best?: { model: string; mase: number };
  ensembleOverNaive: number;
  ensembleOverBest?: number;
}

export interface Comparison {
  rows: SideBySideRow[];
  /** Reference model names, in the fixture's order. */
  models: string[];
  /** Traces in both, under the same protocol. */
  shared: number;
  /** Why a trace of the bench has no reference. */
  skipped: string[];
  /** Geometric mean over every trace of ensemble MASE / seasonal naive MASE. */
  ensembleOverNaiveGeomean: number;
  /** The largest ensemble MASE / best reference MASE over shared traces (undefined without any). */
  ensembleOverBestWorst?: number;
  worstTrace?: string;
}

const traceName = (series: string) => series.replace(/\.csv$/, '');

/** The bench's reports beside the reference (see the module comment). */
export function compareWithReference(reports: readonly Pick<BacktestReport, 'series' | 'horizon' | 'origins' | 'models' | 'ensemble'>[], fixture: ReferenceFixture | undefined): Comparison {
  const models = [...new Set(Object.values(fixture?.traces ?? {}).flatMap((t) => Object.keys(t.models)))];
  const skipped: string[] = [];
  const rows = reports.map((r): SideBySideRow => {
    const trace = traceName(r.series);
    const naive = r.models[BASELINE]!.mase;
    const row: SideBySideRow = { trace, naive, ensemble: r.ensemble.mase, reference: {}, ensembleOverNaive: r.ensemble.mase / naive };
    const ref = fixture?.traces[trace];
    if (!fixture) return row;
    if (!ref) {
      skipped.push(`${trace}: not in the reference`);
      return row;
    }
    if (ref.horizon !== r.horizon || ref.origins !== r.origins) {
      skipped.push(`${trace}: the reference has horizon ${ref.horizon} and ${ref.origins} origins, the bench ${r.horizon} and ${r.origins}`);
      return row;
    }
    row.reference = Object.fromEntries(Object.entries(ref.models).map(([m, s]) => [m, s.mase]));
    const [model, mase] = Object.entries(row.reference).reduce((a, b) => (b[1] < a[1] ? b : a));
    row.best = { model, mase };
    row.ensembleOverBest = mase > 0 ? r.ensemble.mase / mase : r.ensemble.mase > 0 ? Infinity : 1;
    return row;
  });
  const shared = rows.filter((r) => r.ensembleOverBest !== undefined);
  const worst = shared.reduce<SideBySideRow | undefined>((a, b) => (a === undefined || b.ensembleOverBest! > a.ensembleOverBest! ? b : a), undefined);
  return {
    rows,
    models,
    shared: shared.length,
    skipped,
    ensembleOverNaiveGeomean: Math.exp(rows.reduce((s, r) => s + Math.log(r.ensembleOverNaive), 0) / rows.length),
    ...(worst ? { ensembleOverBestWorst: worst.ensembleOverBest, worstTrace: worst.trace } : {}),
  };
}
