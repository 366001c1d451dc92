import { InvalidInputError } from '../errors.js';
import { learnMoveDuration } from '../planning/duration.js';
import { planRebalance } from '../planning/planner.js';
import { DEFAULT_SETTINGS } from '../planning/settings.js';
import type { DailyProfile, Plan, PlanInput, PlanNode, Placement, RecentMove, ShardForecast, UtilisationHistory } from '../planning/types.js';
import { uniforms } from '../forecasting/random.js';
import { FORECAST_STEPS } from '../forecasting/training.js';
import { EPOCH_MS, ShardForecaster, type ForecasterOptions } from './forecaster.js';
import { SimFleet, type SimMetrics, type SimNode } from './fleet.js';
import { DEFAULT_REACTIVE, reactiveMemory, reactiveRound, type ReactiveSettings } from './reactive.js';
import { DEFAULT_GROUP_OPTIONS, shardGroups, SIM_STEP_SECONDS, type ShardGroupOptions, type SimShard, type Trace } from './trace.js';

/**
 * The simulator (DESIGN §5): traces drive the loads of a fleet's shards (trace.ts), and a policy
 * keeps the fleet under capacity by moving shards and activating or draining nodes. Every policy
 * works in rounds of 5 minutes (a bucket) and moves shards with the same movement engine (fleet.ts):
 * a movement takes (30 s + bytes / 16 MiB/s) × a seeded jitter in [0.9, 1.2] — the move-duration
 * model's defaults without its margin, sometimes slower — and loads source and target while it runs.
 *
 * Timeline: `warmupDays` of history (the models' training data), then the simulated `days` from
 * 03:00 UTC, the production retrain time. Policies:
 * - `static`: as many nodes as the shards' peaks over the simulated days need, packed first-fit
 *   decreasing at the planner's target utilisation on the true peaks; always active, never moves.
 * - `reactive`: reactive.ts, on the last bucket's observed loads.
 * - `predictive`: the real planner every round, on the real forecasting engine's forecasts
 *   (forecaster.ts): retrained daily at 03:00 at the production budgets, forecasting hourly; a round
 *   plans on what is left of the latest hourly forecast (12 steps on the hour, 1 at :55).
 * - `oracle`: the same planner on the true future over the same horizon (point = bounds = truth).
 * The dynamic policies start on the first-fit-decreasing placement of the last history day's peaks;
 * the fleet holds the larger of that and the static fleet, plus `spareNodes` on standby. A node
 * drained empty goes back to standby. A planned split is not carried out (the simulator keeps its
 * shards whole) and is counted in `skippedSplits`; a merge moves the cold shard to its neighbour's node.
 */

import { POLICIES, type Policy } from './policies.js';

export { POLICIES, type Policy };

const DAY_STEPS = 86_400 / SIM_STEP_SECONDS;
const HOUR_STEPS = 3600 / SIM_STEP_SECONDS;
const START_HOUR = 3;
/** True movement speed: the move-duration model's defaults (duration.ts) without the safety factor. */
const TRUE_BYTES_PER_SECOND = 16 * 2 ** 20;
const TRUE_FIXED_SECONDS = 30;

export interface SimulationOptions {
  policy: Policy;
  days: number;
  warmupDays: number;
  group: ShardGroupOptions;
  nodeCapacity: number;
  spareNodes: number;
  /** Planner settings over DEFAULT_SETTINGS (step and horizon are the simulator's). */
  planner: NonNullable<PlanInput['settings']>;
  reactive: ReactiveSettings;
  forecaster: ForecasterOptions;
  /**
   * Rounds (5 minutes) between forecasts, 1 to 12: 12 is production's hourly forecast, and a round
   * plans on what is left of it; less is an experiment (more lead time at the hour's end).
   */
  forecastEverySteps: number;
  /** Where the predictive policy's forecasts come from; default a ShardForecaster on the shards' loads (tests and tuning replace it). */
  forecastSource?: (loads: ReadonlyMap<number, readonly number[]>) => ForecastSource;
  onProgress?: (line: string) => void;
  /** Every plan the predictive or oracle policy made, with its round's time (diagnostics). */
  onPlan?: (now: number, plan: Plan, fleet: SimFleet) => void;
}

/**
 * The planner's settings in the simulation: its defaults (DEFAULT_SETTINGS) but for the bound, the
 * 80% upper bound rather than the 95% one. Chosen on the tuning fleet (bench/rebalance.ts): at the
 * 95% bound the predictive policy had no overload minute but kept 0.82× the static fleet's
 * node-hours; at the 80% bound 1 overload minute and 0.67×; on the point forecast 19–35 overload
 * minutes, 0.52×, and moves started inside peaks.
 */
export const SIMULATION_PLANNER: NonNullable<PlanInput['settings']> = { bound: 'upper80' };

/** The daily retrain, the hourly forecast and what is left of it at a round (forecaster.ts). */
export type ForecastSource = Pick<ShardForecaster, 'retrain' | 'forecast' | 'outlook' | 'trainings' | 'trainSeconds' | 'forecasts'>;

export function defaultOptions(policy: Policy, forecaster: ForecasterOptions): SimulationOptions {
  return { policy, days: 4, warmupDays: 4, group: { ...DEFAULT_GROUP_OPTIONS }, nodeCapacity: 100, spareNodes: 2, planner: { ...SIMULATION_PLANNER }, reactive: { ...DEFAULT_REACTIVE }, forecaster, forecastEverySteps: HOUR_STEPS };
}

export interface SimulationResult {
  policy: Policy;
  metrics: SimMetrics;
  shards: number;
  /**
   * The node-hours no policy can go below: at every step, the shards' true load added up, divided
   * into nodes at the target utilisation as if it could be cut anywhere and moved at no cost.
   */
  idealNodeHours: number;
  /** Nodes in the fleet (active or standby) and nodes the static policy provisions. */
  fleetNodes: number;
  staticNodes: number;
  skippedSplits: number;
  trainings: number;
  trainSeconds: number;
  forecasts: number;
}

export async function simulate(traces: readonly Trace[], o: SimulationOptions): Promise<SimulationResult> {
  if (traces.length === 0) throw new InvalidInputError('simulate: at least one trace is needed');
  if (!POLICIES.includes(o.policy)) throw new InvalidInputError(`unknown policy ${JSON.stringify(o.policy)}: expected one of ${POLICIES.join(', ')}`);
  if (!(Number.isInteger(o.days) && o.days >= 1)) throw new InvalidInputError(`days must be a whole number ≥ 1, got ${o.days}`);
  if (!(Number.isInteger(o.forecastEverySteps) && o.forecastEverySteps >= 1 && o.forecastEverySteps <= HOUR_STEPS)) throw new InvalidInputError(`forecast interval must be 1 to ${HOUR_STEPS} rounds, got ${o.forecastEverySteps}`);
  if (!(Number.isInteger(o.warmupDays) && o.warmupDays >= 2)) throw new InvalidInputError(`warm-up days must be a whole number ≥ 2 (the models need two days of history), got ${o.warmupDays}`);
  const start = o.warmupDays * DAY_STEPS + START_HOUR * HOUR_STEPS;
  const end = start + o.days * DAY_STEPS;
  const planSteps = o.planner.horizonSteps ?? DEFAULT_SETTINGS.horizonSteps;
  if (!(Number.isInteger(planSteps) && planSteps >= HOUR_STEPS && planSteps <= FORECAST_STEPS)) {
    throw new InvalidInputError(`the planner's horizon must be ${HOUR_STEPS} to ${FORECAST_STEPS} steps (the forecast's), got ${planSteps}`);
  }
  const shards = shardGroups(traces, end + FORECAST_STEPS, o.group);
  const settings = { ...DEFAULT_SETTINGS, ...o.planner, weights: { ...DEFAULT_SETTINGS.weights, ...o.planner.weights }, scaleIn: { ...DEFAULT_SETTINGS.scaleIn, ...o.planner.scaleIn } };
  const target = settings.targetUtilisation;
  const peak = (s: SimShard, from: number, to: number) => Math.max(...s.load.slice(from, to));

  const staticPlacement = firstFitDecreasing(shards.map((s) => ({ shardId: s.shardId, peak: peak(s, start, end) })), target * o.nodeCapacity);
  const initial = o.policy === 'static' ? staticPlacement : firstFitDecreasing(shards.map((s) => ({ shardId: s.shardId, peak: peak(s, start - DAY_STEPS, start) })), target * o.nodeCapacity);
  const staticNodes = Math.max(...staticPlacement.values());
  const initialNodes = Math.max(...initial.values());
  const fleetNodes = o.policy === 'static' ? staticNodes : Math.max(staticNodes, initialNodes) + o.spareNodes;
  const nodes: SimNode[] = Array.from({ length: fleetNodes }, (_, i) => ({ id: i + 1, name: `node-${i + 1}`, capacity: o.nodeCapacity, state: i < initialNodes ? 'active' : 'standby', readyAt: 0 }));
  const fleet = new SimFleet(
    nodes,
    shards.map((s) => ({ shardId: s.shardId, bytes: s.bytes, nodeId: initial.get(s.shardId)! })),
    settings.hysteresisSeconds,
    { copyLoadFactor: settings.copyLoadFactor, bulkCopyShare: settings.bulkCopyShare },
  );
  const byId = new Map(shards.map((s) => [s.shardId, s]));
  const loadAt = (shardId: number, at: number) => byId.get(shardId)!.load[Math.floor(at / SIM_STEP_SECONDS)]!;
  const jitter = uniforms(o.group.seed + 7919);
  const trueSeconds = (bytes: number) => (TRUE_FIXED_SECONDS + bytes / TRUE_BYTES_PER_SECOND) * (0.9 + 0.3 * jitter());

  const loads = new Map(shards.map((s) => [s.shardId, s.load]));
  const forecaster = o.policy !== 'predictive' ? undefined : o.forecastSource ? o.forecastSource(loads) : new ShardForecaster(loads, o.forecaster);
  const memory = reactiveMemory();
  const utilHistory = new Map<number, number[]>();
  let profiles: DailyProfile[] = [];
  let skippedSplits = 0;

  for (let k = start; k < end; k++) {
    const now = k * SIM_STEP_SECONDS;
    if ((k - start) % DAY_STEPS === 0) {
      if (forecaster) await forecaster.retrain(now);
      profiles = shards.map((s) => ({ shardId: s.shardId, values: hourlyProfile(s.load, k) }));
      const day = (k - start) / DAY_STEPS;
      if (day > 0) o.onProgress?.(`${o.policy}: day ${day} of ${o.days}: ${describe(fleet.metrics)}`);
    }
    if (forecaster && k % o.forecastEverySteps === 0) forecaster.forecast(now);

    if (o.policy === 'reactive') {
      const observed = new Map(shards.map((s) => [s.shardId, s.load[k - 1]!]));
      for (const a of reactiveRound(now, fleet, observed, o.reactive, memory)) {
        if (a.kind === 'activate') fleet.activate(a.nodeId, now, settings.activationSeconds);
        else if (a.kind === 'drain') fleet.drain(a.nodeId);
        else {
          const from = fleet.placement.get(a.shardId)!;
          const inPeak = [from, a.to].some((id) => placedLoad(fleet, id, observed) / fleet.node(id).capacity > target + 1e-9);
          fleet.startMove(a.shardId, a.to, Math.max(now, fleet.node(a.to).readyAt), trueSeconds(fleet.bytesOf(a.shardId)), inPeak);
        }
      }
    } else if (o.policy === 'predictive' || o.policy === 'oracle') {
      // The planner's horizon slides with the round: it starts now and reaches as far as the latest
      // forecast does (24 steps issued hourly: at least 13 left), as production's plan does.
      const horizon = Math.min(planSteps, FORECAST_STEPS - (k % o.forecastEverySteps));
      const forecasts: ShardForecast[] = shards.map((s) => {
        const series = `shard:${s.shardId}:load`;
        const observedLoad = s.load[k - 1]!;
        // The highest load seen over the last day: the room the planner keeps for a shard with no trustworthy forecast.
        const observedPeak = k >= DAY_STEPS ? peak(s, k - DAY_STEPS, k) : undefined;
        if (o.policy === 'oracle') {
          return { shardId: s.shardId, series, steps: s.load.slice(k, k + horizon).map((v) => ({ point: v, lo80: v, hi80: v, lo95: v, hi95: v })), trustworthy: true, observedLoad };
        }
        const outlook = forecaster!.outlook(s.shardId, now);
        if (!outlook || outlook.steps.length < horizon) return { shardId: s.shardId, series, steps: [], trustworthy: false, observedLoad, ...(observedPeak !== undefined ? { observedPeak } : {}), untrustedBecause: 'no forecast' };
        // The forecast reaches two hours; the planner plans on the first `horizon` steps of what is left of it.
        return { shardId: s.shardId, series, steps: outlook.steps.slice(0, horizon), trustworthy: outlook.trustworthy, observedLoad, ...(observedPeak !== undefined ? { observedPeak } : {}), ...(outlook.untrustedBecause ? { untrustedBecause: outlook.untrustedBecause } : {}) };
      });
      const plan = planRebalance(planInput(now, fleet, forecasts, profiles, utilHistory, { ...o.planner, stepSeconds: SIM_STEP_SECONDS, horizonSteps: horizon }));
      for (const n of plan.nodes) {
        const values = [...(utilHistory.get(n.nodeId) ?? []), Math.max(...n.with.slice(0, settings.scaleIn.lookaheadSteps))].slice(-24);
        utilHistory.set(n.nodeId, values);
      }
      o.onPlan?.(now, plan, fleet);
      skippedSplits += execute(plan, now, fleet, settings.activationSeconds, trueSeconds);
    }
    fleet.account(now, now + SIM_STEP_SECONDS, loadAt);
  }
  o.onProgress?.(`${o.policy}: done: ${describe(fleet.metrics)}`);
  let idealNodeHours = 0;
  for (let k = start; k < end; k++) idealNodeHours += (Math.ceil(shards.reduce((sum, s) => sum + s.load[k]!, 0) / (target * o.nodeCapacity) - 1e-9) * SIM_STEP_SECONDS) / 3600;
  return {
    policy: o.policy,
    metrics: fleet.metrics,
    idealNodeHours,
    shards: shards.length,
    fleetNodes,
    staticNodes,
    skippedSplits,
    trainings: forecaster?.trainings ?? 0,
    trainSeconds: forecaster?.trainSeconds ?? 0,
    forecasts: forecaster?.forecasts ?? 0,
  };
}

/** Shards by peak, largest first, each on the first node whose peaks stay within `room`; node numbers from 1. */
export function firstFitDecreasing(shards: ReadonlyArray<{ shardId: number; peak: number }>, room: number): Map<number, number> {
  const bins: number[] = [];
  const placement = new Map<number, number>();
  for (const s of [...shards].sort((a, b) => b.peak - a.peak || a.shardId - b.shardId)) {
    let i = bins.findIndex((used) => used + s.peak <= room + 1e-9);
    if (i < 0) i = bins.push(0) - 1;
    bins[i]! += s.peak;
    placement.set(s.shardId, i + 1);
  }
  return placement;
}

/** Mean load per hour of day over the week of history before bucket `k`, for the planner's alignment. */
export function hourlyProfile(load: readonly number[], k: number): number[] {
  const sums = new Array<number>(24).fill(0);
  const counts = new Array<number>(24).fill(0);
  for (let i = Math.max(0, k - 7 * DAY_STEPS); i < k; i++) {
    const hour = Math.floor((i % DAY_STEPS) / HOUR_STEPS);
    sums[hour]! += load[i]!;
    counts[hour]!++;
  }
  return sums.map((s, h) => (counts[h]! > 0 ? s / counts[h]! : 0));
}

function placedLoad(fleet: SimFleet, nodeId: number, loads: ReadonlyMap<number, number>): number {
  return fleet.shardsOn(nodeId).reduce((sum, id) => sum + (loads.get(id) ?? 0), 0);
}

/**
 * The planner's view of the simulated fleet. A shard in flight is shown on its target, as moved
 * just now (so the planner neither moves it again nor back); moves that finished within the
 * hysteresis window are its recent moves; the movement history teaches the duration model.
 */
export function planInput(
  now: number,
  fleet: SimFleet,
  shardForecasts: ShardForecast[],
  dailyProfiles: DailyProfile[],
  utilHistory: ReadonlyMap<number, number[]>,
  settings: NonNullable<PlanInput['settings']>,
): PlanInput {
  const iso = (seconds: number) => new Date(EPOCH_MS + seconds * 1000).toISOString();
  const nodes: PlanNode[] = fleet.nodes.map((n) => ({ id: n.id, name: n.name, capacity: n.capacity, state: n.state, region: null, zone: null, reachable: true }));
  const placements: Placement[] = [...fleet.placement].map(([shardId, nodeId]) => ({
    shardId,
    table: `t${shardId}`,
    colocationGroup: `shard${shardId}`,
    rangeIndex: 0,
    nodeId: fleet.moving(shardId)?.to ?? nodeId,
    bytes: fleet.bytesOf(shardId),
  }));
  const recentMoves: RecentMove[] = [
    ...fleet.finished.filter((m) => now - m.end < fleet.hysteresisSeconds).map((m) => ({ shardId: m.shardId, fromNodeId: m.from, toNodeId: m.to, finishedAt: iso(m.end) })),
    ...fleet.running.map((m) => ({ shardId: m.shardId, fromNodeId: m.from, toNodeId: m.to, finishedAt: iso(now) })),
  ];
  const utilisationHistory: UtilisationHistory[] = [...utilHistory].map(([nodeId, values]) => ({ nodeId, values }));
  return {
    asOf: iso(now),
    nodes,
    placements,
    shardForecasts,
    dailyProfiles,
    recentMoves,
    utilisationHistory,
    moveDuration: learnMoveDuration(fleet.finished.map((m) => ({ bytes: m.bytes, seconds: m.end - m.start }))),
    settings,
  };
}

/** Carries out the plan's actions due in this round; returns the number of splits not carried out. */
function execute(plan: Plan, now: number, fleet: SimFleet, activationSeconds: number, trueSeconds: (bytes: number) => number): number {
  const roundEnd = now + SIM_STEP_SECONDS;
  const at = (iso: string) => (Date.parse(iso) - EPOCH_MS) / 1000;
  const done = new Set<string>();
  let splits = 0;
  for (const a of [...plan.actions].sort((x, y) => at(x.startAt) - at(y.startAt))) {
    const startAt = Math.max(now, at(a.startAt));
    if (startAt >= roundEnd || !a.after.every((id) => done.has(id))) continue;
    switch (a.kind) {
      case 'activate':
        fleet.activate(a.nodeId, startAt, activationSeconds);
        break;
      case 'drain':
        fleet.drain(a.nodeId);
        break;
      case 'retire':
        break;
      case 'split':
        splits++;
        break;
      case 'move':
      case 'merge':
        for (const shardId of a.shardIds) {
          const start = Math.max(startAt, fleet.node(a.toNodeId).readyAt);
          if (start < roundEnd) fleet.startMove(shardId, a.toNodeId, start, trueSeconds(fleet.bytesOf(shardId)), a.startsInPeak, a.reactive === true);
        }
        break;
    }
    done.add(a.id);
  }
  return splits;
}

export function describe(m: SimMetrics): string {
  return `${m.overloadMinutes} overload minutes, ${m.nodeHours.toFixed(1)} node-hours, ${m.moves} moves (${(m.bytesMoved / 2 ** 30).toFixed(1)} GiB), ${m.movesStartedInPeak} started in a peak (${m.movesStartedInPeakReactive} of them on observed load), ${m.oscillations} oscillations`;
}

/** The last line of `shardcast simulate`. */
export function resultLine(r: SimulationResult): Record<string, string | number> {
  const m = r.metrics;
  return {
    policy: r.policy,
    overload_minutes: m.overloadMinutes,
    node_hours: Math.round(m.nodeHours * 100) / 100,
    moves: m.moves,
    bytes_moved: m.bytesMoved,
    moves_started_in_peak: m.movesStartedInPeak,
    moves_started_in_peak_reactive: m.movesStartedInPeakReactive,
    oscillations: m.oscillations,
    ideal_node_hours: Math.round(r.idealNodeHours * 100) / 100,
  };
}

