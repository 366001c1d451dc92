/**
 * What the planner (DESIGN §5) is given and what it returns. Everything here is plain JSON: the plan
 * travels through Temporal and into the catalog as it is, and a test can build any case by hand.
 *
 * Time: the horizon starts at `asOf`; step i covers [asOf + i·step, asOf + (i + 1)·step). A load
 * figure of a step holds for the whole step, so "overloaded at 14:35" means from 14:35 on.
 */

import type { NodeState } from '../catalog/nodes.js';

export type { NodeState };

/** One horizon step of a series' forecast: the point and the 80% and 95% interval bounds. */
export interface StepForecast {
  point: number;
  lo80: number;
  hi80: number;
  lo95: number;
  hi95: number;
}

/** A series' forecast over the horizon (the forecasting engine's `shard:<id>:load`, `table:…`, `index:…`). */
export interface SeriesForecast {
  /** Series name, e.g. "shard:17:load"; shown in notes. */
  series: string;
  /** One entry per horizon step; the length must equal the horizon. */
  steps: StepForecast[];
  /**
   * The series' model has enough history and back-tests better than seasonal naive. When false the
   * planner ignores `steps` and plans on `observedLoad`, reactively, keeping room for `observedPeak`.
   */
  trustworthy: boolean;
  /** Recent observed load (e.g. the mean of the last few buckets): the fallback. */
  observedLoad: number;
  /**
   * The highest observed load over the last day (a load-clock day). For a series with no trustworthy
   * forecast, the planner keeps room for it on the shard's node: no move fills that room, and a move of
   * the shard needs it on its target, so that at whatever hour its load comes back its node can take
   * it. Absent: no room is kept, and scale-in neither drains nor fills its node.
   */
  observedPeak?: number;
  /** Why the model is not trustworthy, for the plan's notes, e.g. "2 days of history". */
  untrustedBecause?: string;
}

export interface ShardForecast extends SeriesForecast {
  shardId: number;
}

export interface TableForecast extends SeriesForecast {
  table: string;
}

/**
 * Where one shard lives. Placements with the same `colocationGroup` and `rangeIndex` hold the same
 * key range of colocated tables: they are one movement unit and always move together (in Shardcast's
 * catalog a shard schema already holds every table of its group, so such a unit has one shard).
 */
export interface Placement {
  shardId: number;
  /** The distributed table (or the lead table of the colocation group). */
  table: string;
  colocationGroup: string;
  /** Position of the shard's key range within its colocation group: ranges i and i + 1 are neighbours. */
  rangeIndex: number;
  nodeId: number;
  bytes: number;
}

export interface PlanNode {
  id: number;
  name: string;
  /** In load units (see capacity.ts for how it is calibrated). */
  capacity: number;
  state: NodeState;
  region: string | null;
  zone: string | null;
  /** False when the node stopped answering: never a target, and nothing can be copied from it. */
  reachable: boolean;
}

/** Fractions of a shard's accesses per client region, as the router records them (they need not sum to 1). */
export interface RegionShares {
  shardId: number;
  shares: Record<string, number>;
}

/**
 * A time-of-day profile: the typical load over one day in equal buckets (e.g. 24 hourly or 288
 * five-minute means), from the series' seasonal component or its history. Used for alignment only.
 */
export interface DailyProfile {
  shardId: number;
  values: number[];
}

/** A finished movement, for hysteresis. */
export interface RecentMove {
  shardId: number;
  fromNodeId: number;
  toNodeId: number;
  /** ISO time. */
  finishedAt: string;
}

/** Recent predicted peak utilisations of a node (fractions), oldest first: one per planning round. */
export interface UtilisationHistory {
  nodeId: number;
  values: number[];
}

/** Seconds a movement takes: (fixedSeconds + bytes / bytesPerSecond) × safetyFactor (duration.ts). */
export interface MoveDurationModel {
  bytesPerSecond: number;
  fixedSeconds: number;
  safetyFactor: number;
  /** How it was obtained, e.g. "learned from 14 movements" or "default (no movement history)". */
  basis: string;
}

export type IntervalBound = 'point' | 'upper80' | 'upper95';

export interface PlannerWeights {
  /** Predicted utilisation of the target over the horizon (with the shard), and the copy load of moving a hot shard. */
  load: number;
  /** Bytes to transfer, per GiB. */
  bytes: number;
  /** Share of the shard's accesses that come from outside the target's region. */
  locality: number;
  /** How much the shard's daily peak stacks on the target's daily peak. */
  alignment: number;
}

export interface PlannerSettings {
  stepSeconds: number;
  horizonSteps: number;
  bound: IntervalBound;
  /** Utilisation every node must stay under at every step, as a fraction of capacity. */
  targetUtilisation: number;
  weights: PlannerWeights;
  /** A shard moved within this window is not moved again (except off a draining node), and never back. */
  hysteresisSeconds: number;
  maxConcurrentMovesPerNode: number;
  /** A move that relieves an overload must remove at least this many utilisation-point·steps per GiB moved. */
  minBenefitPerGiB: number;
  /**
   * Hot-shard move cost (see planner.ts): while a move runs, source and target each carry
   * `copyLoadFactor` × the shard's load (streaming its changes) plus `bulkCopyShare` × their capacity (the copy).
   */
  copyLoadFactor: number;
  bulkCopyShare: number;
  /** A move's copy load may take its source over target while it runs (it is shedding load), never over this utilisation. */
  sourceCeiling: number;
  /** Scale-in: a node whose predicted peak utilisation stayed under `lowUtilisation` for the last `sustainedRounds` rounds is drained. */
  /**
   * A node is drained once its predicted peak has stayed under `lowUtilisation` for `sustainedRounds`
   * plans and over the next `lookaheadSteps` steps (the rest of the horizon need only fit on the
   * other nodes under target), never below `minActiveNodes` active nodes.
   */
  scaleIn: {
    lowUtilisation: number;
    sustainedRounds: number;
    minActiveNodes: number;
    lookaheadSteps: number;
    /**
     * Consolidation: a node is also drained, whatever its own load, when for the last
     * `sustainedRounds` plans and the next `lookaheadSteps` steps the active nodes' predicted load
     * added up stayed under this share of what the others can carry at target (0: only low nodes
     * are drained). Its shards must still fit on the others under target at every step.
     */
    consolidateFill: number;
  };
  /** Seconds from activating a standby node to it taking shards. */
  activationSeconds: number;
  /**
   * A node is activated this long before it is first needed plus its activation (room for the moves
   * onto it), not as soon as the forecast shows the need; when the moves would not finish in time
   * from a node activated that late, it is activated at once. The default, two hours, activates at
   * once whatever the horizon: a shorter lead saved the oracle node-hours in the simulation but
   * not (in one run) the predictive policy, whose forecast of when the need comes can be late.
   */
  activationLeadSeconds: number;
  /** A shard is "cold" (merge candidate) when its peak load is under this share of its node's target load. */
  coldShare: number;
  /** Split pieces aim at this share of the largest node's target load, leaving room to place them. */
  splitFill: number;
}

export interface PlanInput {
  /** ISO time at which the horizon starts (the forecast's issue time). */
  asOf: string;
  nodes: PlanNode[];
  placements: Placement[];
  shardForecasts: ShardForecast[];
  tableForecasts?: TableForecast[];
  /** Per-index forecasts are accepted for completeness; the planner reports them but plans on shards. */
  indexForecasts?: SeriesForecast[];
  regionShares?: RegionShares[];
  dailyProfiles?: DailyProfile[];
  recentMoves?: RecentMove[];
  utilisationHistory?: UtilisationHistory[];
  moveDuration: MoveDurationModel;
  settings?: Partial<Omit<PlannerSettings, 'weights' | 'scaleIn'>> & {
    weights?: Partial<PlannerWeights>;
    scaleIn?: Partial<PlannerSettings['scaleIn']>;
  };
}

/** What an action is predicted to achieve. */
export interface Benefit {
  /** Utilisation above target removed, in percentage points summed over steps, over all nodes. */
  overloadPointSteps: number;
  /** Peak utilisation of the relieved node over the horizon, before and after this action (fractions). */
  peakBefore?: number;
  peakAfter?: number;
  /** The node this action helps empty (drain, merge, retire). */
  frees?: string;
  /** Nodes this action adds (scale-out). */
  adds?: string;
  summary: string;
}

interface ActionBase {
  /** Stable within the plan, e.g. "a3"; `after` refers to it. */
  id: string;
  /** Planned start (ISO): in a predicted trough when the deadline allows. */
  startAt: string;
  /** Latest start that still finishes before the overload it prevents (ISO). */
  startBy: string;
  /** Predicted finish at `startAt` (ISO). */
  finishAt: string;
  etaSeconds: number;
  /** Actions that must finish first. */
  after: string[];
  reason: string;
  benefit: Benefit;
}

export interface MoveAction extends ActionBase {
  kind: 'move';
  shardIds: number[];
  fromNodeId: number;
  toNodeId: number;
  bytes: number;
  /** True when it could only start inside a peak: a present overload relieved reactively. */
  startsInPeak: boolean;
  /**
   * With startsInPeak: the overload it relieves was not predicted but seen, in the load of a shard with
   * no trustworthy forecast (planned on its observed load, reactively); false when a forecast saw it.
   */
  reactive?: boolean;
  /** True when it cannot finish before the overload it prevents. */
  late: boolean;
}

export interface SplitAction extends ActionBase {
  kind: 'split';
  shardIds: number[];
  fromNodeId: number;
  /** Node of each piece, in key order; the movement engine splits in two, so more pieces are successive halvings. */
  pieceNodeIds: number[];
  bytes: number;
  startsInPeak: boolean;
  /**
   * With startsInPeak: the overload it relieves was not predicted but seen, in the load of a shard with
   * no trustworthy forecast (planned on its observed load, reactively); false when a forecast saw it.
   */
  reactive?: boolean;
  late: boolean;
}

export interface MergeAction extends ActionBase {
  kind: 'merge';
  /** The cold shards merged into their neighbour's range, which stays where it is. */
  shardIds: number[];
  intoShardIds: number[];
  fromNodeId: number;
  toNodeId: number;
  bytes: number;
  startsInPeak: boolean;
  /**
   * With startsInPeak: the overload it relieves was not predicted but seen, in the load of a shard with
   * no trustworthy forecast (planned on its observed load, reactively); false when a forecast saw it.
   */
  reactive?: boolean;
  late: boolean;
}

export interface NodeAction extends ActionBase {
  kind: 'activate' | 'drain' | 'retire';
  nodeId: number;
}

export type PlanAction = MoveAction | SplitAction | MergeAction | NodeAction;

export interface NodeOutlook {
  nodeId: number;
  name: string;
  capacity: number;
  /** State after the plan's node actions. */
  state: NodeState;
  /** Predicted utilisation per step (fractions) at the bound of the shards placed on it, without and with the plan. */
  without: number[];
  with: number[];
  /** Utilisation the plan's movements add per step while they copy (see the hot-shard move cost in planner.ts). */
  copy: number[];
}

export interface TableOutlook {
  table: string;
  /** Peak predicted load over the horizon at the bound (from the table's own forecast when given). */
  peakLoad: number;
  shards: number;
  /** Shards the table needs so that each fits under the target of the largest node. */
  neededShards: number;
}

export interface Plan {
  asOf: string;
  stepSeconds: number;
  horizonSteps: number;
  bound: IntervalBound;
  targetUtilisation: number;
  /** Nodes the predicted peak needs at the target utilisation. */
  requiredNodes: number;
  actions: PlanAction[];
  nodes: NodeOutlook[];
  tables: TableOutlook[];
  /** Every reachable node's shards under target at every step with the plan (`with`; copy load apart). */
  feasible: boolean;
  /** Series planned on observed load because their model is not trustworthy. */
  fallbackSeries: string[];
  notes: string[];
  moveDuration: MoveDurationModel;
}
