/**
 * The catalog's forecasting tables (migrations/0006_forecasts.sql): trained models and issued
 * forecasts. One exported function per statement; retried writes overwrite, never duplicate.
 */
import type { Queryable } from '../catalog/nodes.js';
import { RETIRED_SHARDS } from '../profiling/series.js';

export type ModelStatus = 'trained' | 'fallback' | 'failed';

/** One ensemble member: the model's `toJSON()` and its weight. */
export interface StoredMember {
  model: string;
  weight: number;
  json: Record<string, unknown>;
}

/** Interval half-widths per horizon step, by level ("0.8", "0.95"), frozen at training. */
export interface Calibration {
  horizon: number;
  halfWidths: Record<string, number[]>;
}

export interface StoredModel {
  series: string;
  trainedAt: Date;
  status: ModelStatus;
  error?: string;
  /** Start of the cleaned training series and its step; absent for a failed training. */
  seriesStart?: Date;
  stepSeconds?: number;
  members: StoredMember[];
  calibration?: Calibration;
  scores?: Record<string, unknown>;
}

/** Models older than this are pruned when a newer one of the same series is stored. */
export const MODEL_HISTORY_DAYS = 7;

/** Stores one training result (a retried run overwrites its own row) and prunes that series' old history. */
export async function storeModel(db: Queryable, m: StoredModel): Promise<void> {
  await db.query(
    `insert into shardcast_forecast.models (series, trained_at, status, error, series_start, step_seconds, members, calibration, scores)
     values ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb)
     on conflict (series, trained_at) do update set status = excluded.status, error = excluded.error, series_start = excluded.series_start,
       step_seconds = excluded.step_seconds, members = excluded.members, calibration = excluded.calibration, scores = excluded.scores`,
    [
      m.series,
      m.trainedAt.toISOString(),
      m.status,
      m.error ?? null,
      m.seriesStart?.toISOString() ?? null,
      m.stepSeconds ?? null,
      JSON.stringify(m.members),
      m.calibration ? JSON.stringify(m.calibration) : null,
      m.scores ? JSON.stringify(m.scores) : null,
    ],
  );
  await db.query(`delete from shardcast_forecast.models where series = $1 and trained_at < $2::timestamptz - make_interval(days => $3)`, [
    m.series,
    m.trainedAt.toISOString(),
    MODEL_HISTORY_DAYS,
  ]);
}

interface ModelRow {
  series: string;
  trained_at: Date;
  status: ModelStatus;
  error: string | null;
  series_start: Date | null;
  step_seconds: number | null;
  members: StoredMember[];
  calibration: Calibration | null;
  scores: Record<string, unknown> | null;
}

function fromRow(r: ModelRow): StoredModel {
  return {
    series: r.series,
    trainedAt: r.trained_at,
    status: r.status,
    ...(r.error !== null ? { error: r.error } : {}),
    ...(r.series_start ? { seriesStart: r.series_start } : {}),
    ...(r.step_seconds !== null ? { stepSeconds: r.step_seconds } : {}),
    members: r.members,
    ...(r.calibration ? { calibration: r.calibration } : {}),
    ...(r.scores ? { scores: r.scores } : {}),
  };
}

/** The newest model of the series that can forecast (trained or fallback), if any. */
export async function latestUsableModel(db: Queryable, series: string): Promise<StoredModel | undefined> {
  const { rows } = await db.query<ModelRow>(
    `select * from shardcast_forecast.models where series = $1 and status <> 'failed' order by trained_at desc limit 1`,
    [series],
  );
  return rows[0] && fromRow(rows[0]);
}

/** A shard series whose shard was split or merged away (or a retired node's): no longer forecast, nor listed. */
const GONE = `(series ~ '^shard:[0-9]+:' and split_part(series, ':', 2)::bigint = any (${RETIRED_SHARDS}))
   or (series ~ '^node:' and exists (select 1 from shardcast.nodes n where n.name = split_part(series, ':', 2) and n.state = 'retired'))`;

/** Series that have a usable model: what the hourly run forecasts. */
export async function forecastableSeries(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ series: string }>(`select distinct series from shardcast_forecast.models where status <> 'failed' and not (${GONE}) order by series`);
  return rows.map((r) => r.series);
}

export interface SeriesListing {
  series: string;
  /** The newest model: trained (an ensemble), fallback (seasonal naive) or failed; null when never trained. */
  status: ModelStatus | null;
  model: string | null;
  trainedAt: Date | null;
  /** Its back-test: the ensemble's MASE and that of the seasonal naive baseline (lower is better). */
  mase: number | null;
  baselineMase: number | null;
  error: string | null;
}

/** Every series there is: those with samples (`sampled`) and those with a model, with the newest model of each. */
export async function listSeriesWithModels(db: Queryable, sampled: readonly string[]): Promise<SeriesListing[]> {
  const { rows } = await db.query<{ series: string; status: ModelStatus; trained_at: Date; members: StoredMember[]; scores: Record<string, unknown> | null; error: string | null }>(
    `select distinct on (series) series, status, trained_at, members, scores, error from shardcast_forecast.models
      where not (${GONE}) order by series, trained_at desc`,
  );
  const models = new Map(rows.map((r) => [r.series, r]));
  const ids = [...new Set([...sampled, ...models.keys()])].sort();
  return ids.map((series) => {
    const m = models.get(series);
    const scores = (m?.scores ?? {}) as { ensemble?: { mase?: number }; models?: Record<string, { mase?: number }> };
    const members = m?.members.map((x) => x.model) ?? [];
    return {
      series,
      status: m?.status ?? null,
      model: m ? (members.length > 1 ? `ensemble(${members.join(',')})` : (members[0] ?? null)) : null,
      trainedAt: m?.trained_at ?? null,
      mase: scores.ensemble?.mase ?? (members.length === 1 ? (scores.models?.[members[0]!]?.mase ?? null) : null),
      baselineMase: scores.models?.seasonal_naive?.mase ?? null,
      error: m?.error ?? null,
    };
  });
}

export interface ForecastRow {
  series: string;
  issuedAt: Date;
  /** 1-based horizon step. */
  step: number;
  ts: Date;
  yhat: number;
  lo80: number;
  hi80: number;
  lo95: number;
  hi95: number;
  /** What produced it, e.g. "ensemble(ets,arima)" or "seasonal_naive". */
  model: string;
}

/** Stores one issue of a series' forecast; a retried activity rewrites the same rows. */
export async function storeForecasts(db: Queryable, rows: readonly ForecastRow[]): Promise<void> {
  if (rows.length === 0) return;
  const col = <K extends keyof ForecastRow>(k: K) => rows.map((r) => r[k]);
  await db.query(
    `insert into shardcast_forecast.forecasts (series, issued_at, step, ts, yhat, lo80, hi80, lo95, hi95, model)
     select * from unnest($1::text[], $2::timestamptz[], $3::int[], $4::timestamptz[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::text[])
     on conflict (series, issued_at, step) do update set ts = excluded.ts, yhat = excluded.yhat, lo80 = excluded.lo80, hi80 = excluded.hi80,
       lo95 = excluded.lo95, hi95 = excluded.hi95, model = excluded.model`,
    [
      col('series'),
      rows.map((r) => r.issuedAt.toISOString()),
      col('step'),
      rows.map((r) => r.ts.toISOString()),
      col('yhat'),
      col('lo80'),
      col('hi80'),
      col('lo95'),
      col('hi95'),
      col('model'),
    ],
  );
}

/** The series' most recent forecast issue, step by step. */
export async function latestForecast(db: Queryable, series: string): Promise<ForecastRow[]> {
  const { rows } = await db.query<{ series: string; issued_at: Date; step: number; ts: Date; yhat: number; lo80: number; hi80: number; lo95: number; hi95: number; model: string }>(
    `select * from shardcast_forecast.forecasts
      where series = $1 and issued_at = (select max(issued_at) from shardcast_forecast.forecasts where series = $1)
      order by step`,
    [series],
  );
  return rows.map((r) => ({ series: r.series, issuedAt: r.issued_at, step: r.step, ts: r.ts, yhat: r.yhat, lo80: r.lo80, hi80: r.hi80, lo95: r.lo95, hi95: r.hi95, model: r.model }));
}

/** Whether the series has a model (of any status) that is not of a retired shard or node. */
export async function hasModel(db: Queryable, series: string): Promise<boolean> {
  const { rows } = await db.query(`select 1 from shardcast_forecast.models where series = $1 and not (${GONE}) limit 1`, [series]);
  return rows.length > 0;
}
