/**
 * The contract every forecasting model follows. Models see a clean, evenly spaced series (gaps
 * filled, no NaN: see series.ts) and produce point forecasts; prediction intervals are calibrated
 * outside the models, from rolling-origin back-test residuals per horizon step (conformal), so that
 * every model and the ensemble get intervals the same way.
 */

import type { Point } from './tpe.js';

/** A model's hyperparameters by name, as its `tune` searches them and its `fit` takes them. */
export type Hyperparameters = Point;

/** Where a search starts, by model: points each model's `tune` tries first. */
export type InitialParams = Readonly<Record<string, readonly Hyperparameters[]>>;

/** What a model is told about the series it fits. */
export interface FitContext {
  /** Season length of one day, in steps (288 at 5 minutes). 0 or 1 when unknown or not meaningful. */
  dailyPeriod: number;
  /** Season length of one week, in steps (2016 at 5 minutes); undefined when the history is shorter than two weeks. */
  weeklyPeriod?: number;
  /** Wall-clock budget for fitting, hyperparameter search included, in milliseconds. */
  budgetMs?: number;
  /** Deterministic seed for models with randomness. */
  seed?: number;
  /** Hyperparameters the model's `tune` chose; the model's defaults without. */
  params?: Readonly<Hyperparameters>;
}

export interface FittedModel {
  /** Model family, e.g. "seasonal_naive", "ets", "arima", "lstm". */
  readonly model: string;
  /** Human-readable variant, e.g. "ETS(A,Ad,A) period 288". */
  readonly description: string;
  /** Point forecasts for the next `horizon` steps after the end of the fitted series. Always finite. */
  forecast(horizon: number): number[];
  /**
   * The same fitted parameters applied to a longer series that starts with the fitted one (new
   * observations appended), without re-estimating: used by back-tests between daily retrains.
   */
  update(y: readonly number[]): FittedModel;
  /** JSON-serialisable state, enough for `restore` of the same model module. */
  toJSON(): Record<string, unknown>;
}

/** What a hyperparameter search (`ModelFactory.tune`) found. */
export interface Tuning {
  /** Pass as `FitContext.params` to fit with them. */
  params: Hyperparameters;
  /** The objective at `params` (lower is better), and what it measures. */
  score: number;
  objective: string;
  /** Search method, e.g. "tpe". */
  method: string;
  trials: number;
  /** Trials that failed (non-finite objective or an error). */
  failedTrials: number;
  seconds: number;
  /** The objective at the model's defaults (the first trial), for comparison. */
  defaultScore: number;
}

export interface ModelFactory {
  readonly model: string;
  /** Optional: whether the model has anything to add for a series with this context (MSTL needs two weeks); a back-test leaves out a model that does not apply at its first fit. */
  applies?(ctx: FitContext): boolean;
  fit(y: readonly number[], ctx: FitContext): FittedModel | Promise<FittedModel>;
  /**
   * Optional: searches the model's hyperparameters on `y` within `ctx.budgetMs`, scoring each
   * candidate out of sample (never on what it was trained on). Models whose search space is a small
   * grid choose inside `fit` instead (ETS by AICc over its variants, ARIMA by a stepwise AICc search).
   */
  tune?(y: readonly number[], ctx: FitContext & { budgetMs: number }, options?: { initial?: readonly Hyperparameters[] }): Promise<Tuning>;
}
