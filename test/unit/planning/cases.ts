import type { MoveDurationModel, PlanInput, PlanNode, Placement, ShardForecast, StepForecast } from '../../../src/planning/index.js';

/** Builders for planner cases: nodes, shards with their forecasts, and the input around them. */

export const AS_OF = '2025-03-03T14:00:00.000Z';
export const STEP_MS = 300_000;
export const H = 12;

/** 10 MB/s, 10 s fixed, no margin: a 310 MB shard moves in 41 s. */
export const TEN_MB: MoveDurationModel = { bytesPerSecond: 10e6, fixedSeconds: 10, safetyFactor: 1, basis: 'test' };

export function node(id: number, over: Partial<PlanNode> = {}): PlanNode {
  return { id, name: `node-${id}`, capacity: 1000, state: 'active', region: 'eu', zone: null, reachable: true, ...over };
}

/** Per-step values with intervals around them: the 95% upper bound is `value` × (1 + spread). */
export function steps(values: readonly number[], spread = 0): StepForecast[] {
  return values.map((v) => ({ point: v / (1 + spread), lo80: v / (1 + spread) * 0.9, hi80: v / (1 + spread / 2), lo95: v / (1 + spread) * 0.8, hi95: v }));
}

export function flat(v: number): number[] {
  return new Array<number>(H).fill(v);
}

export function ramp(from: number, by: number): number[] {
  return Array.from({ length: H }, (_, i) => from + by * i);
}

export interface ShardSpec {
  id: number;
  node: number;
  load: number[];
  bytes?: number;
  group?: string;
  rangeIndex?: number;
  table?: string;
  trustworthy?: boolean;
  observed?: number;
  /** The observed peak of the last day (only with `trustworthy: false` does the planner use it). */
  observedPeak?: number;
}

export interface Shard {
  placement: Placement;
  forecast: ShardForecast;
}

export function shard(spec: ShardSpec): Shard {
  return {
    placement: {
      shardId: spec.id,
      table: spec.table ?? `t${spec.id}`,
      colocationGroup: spec.group ?? `g${spec.id}`,
      rangeIndex: spec.rangeIndex ?? 0,
      nodeId: spec.node,
      bytes: spec.bytes ?? 100e6,
    },
    forecast: {
      shardId: spec.id,
      series: `shard:${spec.id}:load`,
      steps: steps(spec.load),
      trustworthy: spec.trustworthy ?? true,
      observedLoad: spec.observed ?? spec.load[0]!,
      ...(spec.observedPeak !== undefined ? { observedPeak: spec.observedPeak } : {}),
    },
  };
}

export function planInput(nodes: PlanNode[], shards: ShardSpec[], extra: Partial<PlanInput> = {}): PlanInput {
  const built = shards.map(shard);
  return {
    asOf: AS_OF,
    nodes,
    placements: built.map((s) => s.placement),
    shardForecasts: built.map((s) => s.forecast),
    moveDuration: TEN_MB,
    ...extra,
    // The cases' forecasts are H steps: the planner's horizon, whatever its default.
    settings: { horizonSteps: H, ...extra.settings },
  };
}

/** Milliseconds after asOf. */
export function offset(iso: string): number {
  return Date.parse(iso) - Date.parse(AS_OF);
}
