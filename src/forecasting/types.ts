/**
 * The contract every forecasting model follows. Models see a clean, evenly spaced series (gaps
 * filled, no NaN: see series.ts) and produce point forecasts; prediction intervals are calibrated
 * outside the models, from rolling-origin back-test residuals per horizon step (conformal), so that
 * every model and the ensemble get intervals the same way.
 */

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

export interface ModelFactory {
  readonly model: string;
  fit(y: readonly number[], ctx: FitContext): FittedModel | Promise<FittedModel>;
}
