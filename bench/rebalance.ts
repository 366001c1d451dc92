import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from '../cli/format.js';
import { parseConfig, type Config } from '../src/config.js';
import { DEFAULT_SETTINGS } from '../src/planning/settings.js';
import { initBackend } from '../src/forecasting/tf-backend.js';
import { defaultOptions, loadTrace, POLICIES, simulate, type Policy, type SimulationOptions, type SimulationResult, type Trace } from '../src/simulation/index.js';
import type { ForecasterOptions } from '../src/simulation/forecaster.js';
import { round } from './fleet.js';

/**
 * The rebalancing policies on the traces of ../shared/data/traces (src/simulation): static,
 * reactive, predictive (the real planner on the real forecasting engine, retrained daily at the
 * production budgets) and oracle (the planner on the true future).
 *
 * The traces form two fleets, each trace driving its own group of shards: the tuning fleet, on which
 * the planner's and the simulation's defaults were chosen (`--tuning`, default one RDS CPU trace, the
 * bursty ELB trace and the taxi trace), and the held-out fleet of every other trace, which was not
 * looked at while choosing them. Both are reported, then the two together; the last line's ratios are
 * over both fleets (sums of overload minutes and node-hours).
 *
 * `--forecast-every N` (rounds of 5 minutes, default 12: hourly, as production) is an experiment: the
 * forecast issued more often, so that the planner sees a full hour ahead in every round.
 *
 * Training is time-budgeted (`forecast.budgetSeconds`, `forecast.searchSeconds`), so a loaded machine
 * trains weaker models: note `uptime` with the figures.
 */
export const TUNING_TRACES = ['nab_rds_cpu_utilization_e47b3b.csv', 'nab_elb_request_count_8c0756.csv', 'nab_nyc_taxi.csv'];

export const TRACES = resolve(import.meta.dirname, '../../shared/data/traces');

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      traces: { type: 'string', default: TRACES },
      tuning: { type: 'string', default: TUNING_TRACES.join(',') },
      only: { type: 'string' },
      days: { type: 'string', default: '4' },
      'warmup-days': { type: 'string', default: '4' },
      seed: { type: 'string', default: '1' },
      policies: { type: 'string', default: POLICIES.join(',') },
      'forecast-every': { type: 'string', default: '12' },
      // The planner's horizon in 5-minute steps (planning.horizonSteps): 12 to 24.
      horizon: { type: 'string', default: String(DEFAULT_SETTINGS.horizonSteps) },
    },
  });
  const config = parseConfig({});
  const days = wholeNumber(values.days, '--days', 1);
  const warmupDays = wholeNumber(values['warmup-days'], '--warmup-days', 2);
  const seed = wholeNumber(values.seed, '--seed', 0);
  const forecastEverySteps = wholeNumber(values['forecast-every'], '--forecast-every', 1);
  const horizonSteps = wholeNumber(values.horizon, '--horizon', 12);
  if (horizonSteps > 24) throw new Error(`--horizon must be 12 to 24 steps (the forecast's two hours), got ${horizonSteps}`);
  const policies = values.policies.split(',') as Policy[];
  for (const p of policies) if (!POLICIES.includes(p)) throw new Error(`--policies: unknown policy ${p}`);
  const files = (await readdir(values.traces)).filter((f) => f.endsWith('.csv')).sort();
  const only = values.only?.split(',');
  const tuning = values.tuning.split(',');
  const chosen = files.filter((f) => !only || only.includes(f));
  const fleets = [
    // In the order of --tuning: the shards are drawn trace after trace, so the order is part of the fleet.
    { name: 'tuning', files: tuning.filter((f) => chosen.includes(f)) },
    { name: 'held-out', files: chosen.filter((f) => !tuning.includes(f)) },
  ].filter((f) => f.files.length > 0);
  if (policies.includes('predictive')) await initBackend(config.forecast.backend);
  const forecaster = productionForecaster(config);
  console.log(
    `${days} simulated days after ${warmupDays} days of history; training budget ${forecaster.budgetSeconds} s per model, search ${forecaster.searchSeconds} s; seed ${seed}` +
      (forecastEverySteps !== 12 ? `; forecasts every ${forecastEverySteps * 5} minutes (production: hourly)` : '') +
      `; the planner's horizon ${horizonSteps} steps`,
  );

  const results = new Map<string, Map<Policy, SimulationResult>>();
  const started = performance.now();
  for (const fleet of fleets) {
    const traces: Trace[] = [];
    for (const f of fleet.files) traces.push(await loadTrace(join(values.traces, f)));
    console.log(`\n${fleet.name} fleet: ${fleet.files.join(', ')}`);
    const byPolicy = new Map<Policy, SimulationResult>();
    for (const policy of policies) {
      const t0 = performance.now();
      const options = { ...defaultOptions(policy, forecaster), days, warmupDays, forecastEverySteps };
      options.planner = { ...options.planner, horizonSteps };
      options.planner = withBenchPlanner(options.planner);
      options.group = { ...options.group, seed };
      const r = await simulate(traces, options);
      byPolicy.set(policy, r);
      console.log(`  ${policy}: ${round((performance.now() - t0) / 1000, 0)} s${r.trainings > 0 ? ` (${r.trainings} trainings, ${round(r.trainSeconds, 0)} s)` : ''}${r.skippedSplits > 0 ? `, ${r.skippedSplits} planned splits not carried out` : ''}`);
    }
    results.set(fleet.name, byPolicy);
    console.log(`\n${fleet.name} fleet:`);
    printTable(`${fleet.name} fleet (${byPolicy.values().next().value?.shards ?? 0} shards)`, rows(byPolicy), COLUMNS);
    console.log(JSON.stringify({ fleet: fleet.name, ...ratios(byPolicy) }));
  }
  const total = new Map<Policy, SimulationResult>();
  for (const policy of policies) {
    const all = [...results.values()].map((m) => m.get(policy)!);
    total.set(policy, { ...all[0]!, metrics: sum(all.map((r) => r.metrics)), idealNodeHours: all.reduce((a, r) => a + r.idealNodeHours, 0) });
  }
  if (results.size > 1) {
    console.log('\nboth fleets:');
    printTable('both fleets', rows(total), COLUMNS);
  }
  console.log(`\n${round((performance.now() - started) / 1000, 0)} s in all`);
  console.log(JSON.stringify({ bench: 'rebalance', ...ratios(total) }));
}

/** The forecaster at the production budgets (forecast.trainingDays, budgetSeconds, searchSeconds). */
export function productionForecaster(config: Config): ForecasterOptions {
  return { trainingDays: config.forecast.trainingDays, budgetSeconds: config.forecast.budgetSeconds, searchSeconds: config.forecast.searchSeconds };
}

/** BENCH_PLANNER (JSON): planner settings over the simulation's, for trying other defaults. */
export function withBenchPlanner(planner: SimulationOptions['planner']): SimulationOptions['planner'] {
  return process.env.BENCH_PLANNER ? { ...planner, ...(JSON.parse(process.env.BENCH_PLANNER) as SimulationOptions['planner']) } : planner;
}

const COLUMNS = ['policy', 'overload_minutes', 'node_hours', 'moves', 'gib_moved', 'moves_started_in_peak', 'of_them_reactive', 'oscillations'];

function rows(byPolicy: ReadonlyMap<Policy, SimulationResult>): Array<Record<string, unknown>> {
  return [...byPolicy].map(([policy, r]) => ({
    policy,
    overload_minutes: r.metrics.overloadMinutes,
    node_hours: round(r.metrics.nodeHours, 1),
    moves: r.metrics.moves,
    gib_moved: round(r.metrics.bytesMoved / 2 ** 30, 1),
    moves_started_in_peak: r.metrics.movesStartedInPeak,
    of_them_reactive: r.metrics.movesStartedInPeakReactive,
    oscillations: r.metrics.oscillations,
  }));
}

function sum(ms: SimulationResult['metrics'][]): SimulationResult['metrics'] {
  const total = (pick: (m: SimulationResult['metrics']) => number) => ms.reduce((a, m) => a + pick(m), 0);
  return {
    overloadMinutes: total((m) => m.overloadMinutes),
    nodeHours: total((m) => m.nodeHours),
    moves: total((m) => m.moves),
    bytesMoved: total((m) => m.bytesMoved),
    movesStartedInPeak: total((m) => m.movesStartedInPeak),
    movesStartedInPeakReactive: total((m) => m.movesStartedInPeakReactive),
    oscillations: total((m) => m.oscillations),
  };
}

/** a / b, with 0/0 = 0 and x/0 = null (no ratio). */
function ratio(a: number | undefined, b: number | undefined): number | null {
  if (a === undefined || b === undefined) return null;
  if (b === 0) return a === 0 ? 0 : null;
  return round(a / b, 3);
}

function ratios(byPolicy: ReadonlyMap<Policy, SimulationResult>) {
  const m = (p: Policy) => byPolicy.get(p)?.metrics;
  return {
    predictive_over_reactive_overload: ratio(m('predictive')?.overloadMinutes, m('reactive')?.overloadMinutes),
    predictive_node_hours_over_static: ratio(m('predictive')?.nodeHours, m('static')?.nodeHours),
    // The floor under any policy (SimulationResult.idealNodeHours) over static's: what the node-hours goal can reach at best.
    ideal_node_hours_over_static: ratio(byPolicy.values().next().value?.idealNodeHours, m('static')?.nodeHours),
    oracle_node_hours_over_static: ratio(m('oracle')?.nodeHours, m('static')?.nodeHours),
    predictive_over_oracle_overload: ratio(m('predictive')?.overloadMinutes, m('oracle')?.overloadMinutes),
    oscillations: m('predictive')?.oscillations ?? null,
    moves_started_in_peak: m('predictive')?.movesStartedInPeak ?? null,
    // Of those, the ones whose overload no forecast predicted: seen in the observed load of a shard with no trustworthy
    // model, which the planner plans on reactively. The rest started inside a peak a forecast predicted.
    moves_started_in_peak_reactive: m('predictive')?.movesStartedInPeakReactive ?? null,
    moves_started_in_predicted_peak: m('predictive') ? m('predictive')!.movesStartedInPeak - m('predictive')!.movesStartedInPeakReactive : null,
  };
}

function wholeNumber(text: string, option: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${option} must be a whole number ≥ ${min}, got ${text}`);
  return n;
}
