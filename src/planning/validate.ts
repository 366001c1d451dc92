import { InvalidInputError } from '../errors.js';
import { NODE_STATES } from '../catalog/nodes.js';
import type { PlanInput, PlannerSettings, SeriesForecast, StepForecast } from './types.js';

/**
 * Checks a plan's input before anything is computed from it; the first problem found is thrown as an
 * InvalidInputError that names the node, shard or series and what was wrong with it.
 */
export function validatePlanInput(input: PlanInput, settings: PlannerSettings): void {
  const fail = (message: string): never => {
    throw new InvalidInputError(`planning input: ${message}`);
  };
  if (!Number.isFinite(Date.parse(input.asOf))) fail(`asOf ${JSON.stringify(input.asOf)} is not an ISO time`);

  const nodeIds = new Set<number>();
  for (const n of input.nodes) {
    const label = `node ${JSON.stringify(n.name)} (id ${n.id})`;
    if (nodeIds.has(n.id)) fail(`${label}: node id ${n.id} appears twice`);
    nodeIds.add(n.id);
    if (!(Number.isFinite(n.capacity) && n.capacity > 0)) fail(`${label}: capacity must be a positive number, got ${n.capacity}`);
    if (!NODE_STATES.includes(n.state)) fail(`${label}: state must be one of ${NODE_STATES.join(', ')}, got ${JSON.stringify(n.state)}`);
    if (typeof n.reachable !== 'boolean') fail(`${label}: reachable must be true or false`);
  }

  const shardIds = new Set<number>();
  const unitNode = new Map<string, number>();
  for (const p of input.placements) {
    const label = `placement of shard ${p.shardId}`;
    if (shardIds.has(p.shardId)) fail(`${label}: shard ${p.shardId} is placed twice`);
    shardIds.add(p.shardId);
    if (!nodeIds.has(p.nodeId)) fail(`${label}: unknown node id ${p.nodeId}`);
    if (!(Number.isFinite(p.bytes) && p.bytes >= 0)) fail(`${label}: bytes must be a number ≥ 0, got ${p.bytes}`);
    if (!Number.isInteger(p.rangeIndex)) fail(`${label}: rangeIndex must be an integer, got ${p.rangeIndex}`);
    const unit = `${p.colocationGroup}#${p.rangeIndex}`;
    const other = unitNode.get(unit);
    if (other !== undefined && other !== p.nodeId) {
      fail(`${label}: colocated with shards of group ${JSON.stringify(p.colocationGroup)} range ${p.rangeIndex} on node ${other}, but placed on node ${p.nodeId}`);
    }
    unitNode.set(unit, p.nodeId);
  }

  const forecastIds = new Set<number>();
  for (const f of input.shardForecasts) {
    if (!shardIds.has(f.shardId)) fail(`forecast ${JSON.stringify(f.series)}: shard ${f.shardId} has no placement`);
    if (forecastIds.has(f.shardId)) fail(`forecast ${JSON.stringify(f.series)}: shard ${f.shardId} has two forecasts`);
    forecastIds.add(f.shardId);
    validateSeries(f, settings.horizonSteps, fail);
  }
  for (const id of shardIds) if (!forecastIds.has(id)) fail(`shard ${id} has a placement but no forecast`);
  for (const f of [...(input.tableForecasts ?? []), ...(input.indexForecasts ?? [])]) validateSeries(f, settings.horizonSteps, fail);

  for (const r of input.regionShares ?? []) {
    if (!shardIds.has(r.shardId)) fail(`region shares of shard ${r.shardId}: no such shard`);
    for (const [region, share] of Object.entries(r.shares)) {
      if (!(Number.isFinite(share) && share >= 0 && share <= 1)) fail(`region shares of shard ${r.shardId}: share of ${JSON.stringify(region)} must be in [0, 1], got ${share}`);
    }
  }
  for (const p of input.dailyProfiles ?? []) {
    if (!shardIds.has(p.shardId)) fail(`daily profile of shard ${p.shardId}: no such shard`);
    if (p.values.length === 0 || p.values.some((v) => !(Number.isFinite(v) && v >= 0))) fail(`daily profile of shard ${p.shardId}: values must be finite numbers ≥ 0`);
  }
  const lengths = new Set((input.dailyProfiles ?? []).map((p) => p.values.length));
  if (lengths.size > 1) fail(`daily profiles have different lengths (${[...lengths].join(', ')}): they must share one bucket size`);
  for (const m of input.recentMoves ?? []) {
    if (!Number.isFinite(Date.parse(m.finishedAt))) fail(`recent move of shard ${m.shardId}: finishedAt ${JSON.stringify(m.finishedAt)} is not an ISO time`);
  }
  for (const h of input.utilisationHistory ?? []) {
    if (!nodeIds.has(h.nodeId)) fail(`utilisation history: unknown node id ${h.nodeId}`);
    if (h.values.some((v) => !(Number.isFinite(v) && v >= 0))) fail(`utilisation history of node ${h.nodeId}: values must be finite numbers ≥ 0`);
  }
  const d = input.moveDuration;
  if (!(d && d.bytesPerSecond > 0 && d.fixedSeconds >= 0 && d.safetyFactor >= 1)) {
    fail(`move-duration model: bytesPerSecond must be > 0, fixedSeconds ≥ 0 and safetyFactor ≥ 1`);
  }
}

const FIELDS: readonly (keyof StepForecast)[] = ['point', 'lo80', 'hi80', 'lo95', 'hi95'];

function validateSeries(f: SeriesForecast, horizon: number, fail: (m: string) => never): void {
  const label = `forecast ${JSON.stringify(f.series)}`;
  if (!(Number.isFinite(f.observedLoad) && f.observedLoad >= 0)) fail(`${label}: observedLoad must be a finite number ≥ 0, got ${f.observedLoad}`);
  if (f.observedPeak !== undefined && !(Number.isFinite(f.observedPeak) && f.observedPeak >= 0)) fail(`${label}: observedPeak must be a finite number ≥ 0, got ${f.observedPeak}`);
  if (!f.trustworthy) return;
  if (f.steps.length !== horizon) fail(`${label} has ${f.steps.length} steps, the horizon is ${horizon}`);
  f.steps.forEach((s, i) => {
    for (const k of FIELDS) {
      if (!Number.isFinite(s[k])) fail(`${label}: step ${i + 1} ${k} is ${s[k]}, not a finite number`);
    }
    if (!(s.lo95 <= s.lo80 && s.lo80 <= s.point && s.point <= s.hi80 && s.hi80 <= s.hi95)) {
      fail(`${label}: step ${i + 1} bounds are not nested (lo95 ≤ lo80 ≤ point ≤ hi80 ≤ hi95)`);
    }
  });
}
