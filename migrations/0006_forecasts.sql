-- Forecasting (DESIGN §5): the models of the daily retraining and the forecasts of the hourly run.
create schema if not exists shardcast_forecast;

-- One row per series and training run. Forecasting uses the newest usable row (status trained or
-- fallback) of each series, so a failed retraining leaves the previous model in service. Rows
-- older than a week are pruned when a newer one is stored (src/forecasting/store.ts).
create table shardcast_forecast.models (
  series text not null,
  trained_at timestamptz not null,
  status text not null check (status in ('trained', 'fallback', 'failed')),
  error text,
  -- Start of the cleaned training series (ms since the epoch): forecasting extends the members
  -- with the data from here on (FittedModel.update), so it must load the series from the same point.
  series_start timestamptz,
  step_seconds integer,
  -- [{ "model": "ets", "weight": 0.6, "json": { …toJSON() } }, …], LSTM weights included.
  members jsonb not null default '[]',
  -- Conformal half-widths per horizon step, frozen at training: { "horizon": 12, "halfWidths": { "0.8": […], "0.95": […] } }.
  calibration jsonb,
  -- Back-test scores per model and of the ensemble.
  scores jsonb,
  primary key (series, trained_at)
);

-- Forecasts of the hourly run: keyed so that a retried activity rewrites its rows instead of adding more.
create table shardcast_forecast.forecasts (
  series text not null,
  issued_at timestamptz not null,
  step integer not null check (step >= 1),
  ts timestamptz not null,
  yhat double precision not null,
  lo80 double precision not null,
  hi80 double precision not null,
  lo95 double precision not null,
  hi95 double precision not null,
  model text not null,
  primary key (series, issued_at, step)
);
create index on shardcast_forecast.forecasts (series, ts);
