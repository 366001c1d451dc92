import { describe, expect, it } from 'vitest';
import { FORECAST_STEPS } from '../../../src/forecasting/training.js';
import { defaultOptions, simulate, type ForecastSource, type Trace } from '../../../src/simulation/index.js';
import { SIM_STEP_SECONDS } from '../../../src/simulation/trace.js';

/** A daily cycle at 5 minutes, between 0.2 and 1 of its peak, with a little deterministic noise. */
function dailyTrace(name: string, days: number, phase: number): Trace {
  return { name, values: Array.from({ length: days * 288 }, (_, i) => 0.6 + 0.4 * Math.sin((2 * Math.PI * (i + phase)) / 288) + (((i * 7919) % 13) - 6) / 200) };
}

/** Forecasts that are the truth (bounds included), issued hourly and reaching FORECAST_STEPS, as the real forecaster's are. */
function perfectForecasts(loads: ReadonlyMap<number, readonly number[]>): ForecastSource {
  let issued = -1;
  return {
    trainings: 0,
    trainSeconds: 0,
    forecasts: 0,
    retrain: async () => undefined,
    forecast(now: number) {
      issued = now;
    },
    outlook(shardId: number, now: number) {
      if (issued < 0) return undefined;
      const from = Math.round(issued / SIM_STEP_SECONDS);
      const skip = Math.round((now - issued) / SIM_STEP_SECONDS);
      const truth = loads.get(shardId)!.slice(from, from + FORECAST_STEPS).slice(skip);
      return { steps: truth.map((v) => ({ point: v, lo80: v, hi80: v, lo95: v, hi95: v })), trustworthy: true };
    },
  };
}

describe('simulate', () => {
  // The planner on perfect forecasts is the oracle: with the forecast reaching two hours, the
  // predictive policy plans on the first `horizonSteps` of what is left of it, whatever the horizon.
  for (const horizonSteps of [12, 18, 24]) {
    it(`plans on the first ${horizonSteps} steps of the latest forecast: on perfect forecasts it is the oracle`, async () => {
      const traces = [dailyTrace('a', 5, 0), dailyTrace('b', 5, 144)];
      const forecaster = { trainingDays: 2, budgetSeconds: 0.1, searchSeconds: 0 };
      const run = async (policy: 'predictive' | 'oracle') => {
        const o = { ...defaultOptions(policy, forecaster), days: 2, warmupDays: 2, forecastSource: perfectForecasts };
        o.planner = { ...o.planner, horizonSteps };
        return simulate(traces, o);
      };
      const [predictive, oracle] = [await run('predictive'), await run('oracle')];
      expect(oracle.metrics.moves).toBeGreaterThan(0);
      expect(predictive.metrics).toEqual(oracle.metrics);
    });
  }

  it('refuses a planner horizon outside 12 to FORECAST_STEPS steps', async () => {
    const o = { ...defaultOptions('oracle', { trainingDays: 2, budgetSeconds: 0.1, searchSeconds: 0 }), days: 1, warmupDays: 2 };
    o.planner = { ...o.planner, horizonSteps: 30 };
    await expect(simulate([dailyTrace('a', 4, 0)], o)).rejects.toThrow(`the planner's horizon must be 12 to ${FORECAST_STEPS} steps (the forecast's), got 30`);
  });
});
