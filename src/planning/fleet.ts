import type { PlanNode, PlannerSettings, NodeState } from './types.js';

/**
 * The planner's working picture of the fleet: per node, the predicted shard load per horizon step
 * with the plan so far, and the extra load of the movements the plan runs (the copy load); and the
 * movement units on each node. Transfers are tried on it (`tryTransfer`) and applied (`apply`).
 *
 * Step accounting is conservative: a shard counts on its source for every step that begins before
 * its move ends, and on its target for every step that ends after it, so the step in which a cutover
 * happens carries the shard on both.
 */

/** Colocated shards (one key range of one colocation group): they always move together. */
export interface Unit {
  key: string;
  shardIds: number[];
  tables: string[];
  group: string;
  rangeIndex: number;
  nodeId: number;
  bytes: number;
  /** Predicted load per step at the bound, or the observed load when `fallback`. */
  load: number[];
  fallback: boolean;
  /**
   * How far its fallback shards' observed peaks of the last day lie above the observed load it is
   * planned on (0 without fallback shards): room kept free for it on its node (see `reserve`).
   */
  peakExtra: number;
  /** A fallback shard of the unit has no observed peak (only its recent load): scale-in leaves its node alone. */
  peakUnknown: boolean;
  /** Accesses per client region, summed over the unit's shards. */
  shares: Record<string, number>;
  /** Summed daily profile, when every shard of the unit has one. */
  profile?: number[];
  /** Moved, split or merged in this plan, or within the hysteresis window: relief leaves it alone. */
  frozen: boolean;
  /** Nodes it must not go back to (hysteresis). */
  avoid: number[];
}

export interface FleetNode {
  node: PlanNode;
  state: NodeState;
  /** Seconds after asOf from which it can take shards (activation), or undefined when it cannot. */
  targetFrom: number | undefined;
  load: number[];
  copy: number[];
}

interface Running {
  nodeIds: number[];
  start: number;
  end: number;
}

/** One transfer: a unit leaves `from`, its load split over `parts` (fractions summing to 1). */
export interface Transfer {
  unit: Unit;
  from: number;
  parts: { to: number; fraction: number }[];
  start: number;
  seconds: number;
}

export interface TransferTrial {
  /** Utilisation per step of every node the transfer touches, after it. */
  after: Map<number, { load: number[]; copy: number[] }>;
  /** The start step is inside a peak of one of its nodes: its placed shards over target with the plan so far. */
  inPeak: boolean;
  /** Highest utilisation of its nodes over the steps it runs in. */
  windowPeak: number;
  /** Total overload of placed shards removed, utilisation points × steps, all nodes. */
  benefit: number;
}

export class Fleet {
  readonly nodes = new Map<number, FleetNode>();
  readonly units = new Map<string, Unit>();
  private running: Running[] = [];

  constructor(
    nodes: readonly PlanNode[],
    readonly settings: PlannerSettings,
  ) {
    const h = settings.horizonSteps;
    for (const node of [...nodes].sort((a, b) => a.id - b.id)) {
      const canTake = node.reachable && node.state === 'active';
      this.nodes.set(node.id, { node, state: node.state, targetFrom: canTake ? 0 : undefined, load: new Array<number>(h).fill(0), copy: new Array<number>(h).fill(0) });
    }
  }

  addUnit(unit: Unit): void {
    this.units.set(unit.key, unit);
    const n = this.node(unit.nodeId);
    unit.load.forEach((v, i) => (n.load[i]! += v));
  }

  node(id: number): FleetNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`planner: no node ${id}`);
    return n;
  }

  unitsOn(nodeId: number): Unit[] {
    return [...this.units.values()].filter((u) => u.nodeId === nodeId).sort((a, b) => a.key.localeCompare(b.key));
  }

  /** Utilisation of the shards placed on the node, copy load apart. */
  placedUtil(nodeId: number): number[] {
    const n = this.node(nodeId);
    return n.load.map((v) => v / n.node.capacity);
  }

  util(nodeId: number): number[] {
    const n = this.node(nodeId);
    return n.load.map((v, i) => (v + n.copy[i]!) / n.node.capacity);
  }

  /** Utilisation points of placed shards above target, summed over the steps (copy load apart: it is bounded on its own). */
  overload(nodeId: number): number {
    const t = this.settings.targetUtilisation;
    return this.placedUtil(nodeId).reduce((sum, u) => sum + Math.max(0, u - t) * 100, 0);
  }

  /** First step from `from` at which the node's placed shards are over target: a peak. */
  firstOverloadStep(nodeId: number, from = 0): number | undefined {
    const i = this.placedUtil(nodeId).findIndex((u, step) => step >= from && u > this.settings.targetUtilisation + 1e-9);
    return i < 0 ? undefined : i;
  }

  /**
   * Room kept free on a node for the observed peaks of its shards with no trustworthy forecast: a
   * transfer may not fill it. Overloads are still found on the observed load (reactively).
   */
  reserve(nodeId: number): number {
    return this.unitsOn(nodeId).reduce((sum, u) => sum + u.peakExtra, 0);
  }

  /** Nodes that may receive shards at all (active or being activated, reachable). */
  targets(): FleetNode[] {
    return [...this.nodes.values()].filter((n) => n.targetFrom !== undefined && n.state === 'active');
  }

  runningOn(nodeId: number, start: number, end: number): number {
    return this.running.filter((r) => r.nodeIds.includes(nodeId) && r.start < end && start < r.end).length;
  }

  /** What a transfer would do; undefined when it is not allowed (a target pushed over target, too many moves on a node, a node not ready). */
  tryTransfer(t: Transfer, sourceCeiling = this.settings.sourceCeiling): TransferTrial | undefined {
    const { stepSeconds: step, horizonSteps: h, targetUtilisation: target, copyLoadFactor, bulkCopyShare, maxConcurrentMovesPerNode } = this.settings;
    const end = t.start + t.seconds;
    const involved = [t.from, ...t.parts.map((p) => p.to).filter((id) => id !== t.from)];
    for (const id of involved) {
      if (this.runningOn(id, t.start, end) >= maxConcurrentMovesPerNode) return undefined;
    }
    for (const p of t.parts) {
      const n = this.node(p.to);
      if (p.to !== t.from && (n.targetFrom === undefined || n.targetFrom > t.start || n.state !== 'active')) return undefined;
    }
    const after = new Map<number, { load: number[]; copy: number[] }>();
    for (const id of involved) {
      const n = this.node(id);
      after.set(id, { load: [...n.load], copy: [...n.copy] });
    }
    const src = after.get(t.from)!;
    const firstRunning = Math.floor(t.start / step);
    for (let i = 0; i < h; i++) {
      const running = i * step < end && (i + 1) * step > t.start;
      const onTargets = (i + 1) * step > end;
      const offSource = i * step >= end;
      const unitLoad = t.unit.load[i]!;
      if (running) {
        for (const id of involved) {
          const a = after.get(id)!;
          // The source reads the whole unit; a target writes only its pieces' share of it (a split's).
          const share = id === t.from ? 1 : t.parts.filter((p) => p.to === id).reduce((sum, p) => sum + p.fraction, 0);
          a.copy[i]! += copyLoadFactor * share * unitLoad + bulkCopyShare * this.node(id).node.capacity;
        }
      }
      for (const p of t.parts) {
        if (p.to === t.from) continue;
        if (offSource) src.load[i]! -= p.fraction * unitLoad;
        if (onTargets) after.get(p.to)!.load[i]! += p.fraction * unitLoad;
      }
    }
    const utilOf = (id: number, i: number) => {
      const a = after.get(id)!;
      return (a.load[i]! + a.copy[i]!) / this.node(id).node.capacity;
    };
    // What a target keeps free for observed peaks (its own shards' and the incoming unit's share).
    const reserveOn = (id: number) => this.reserve(id) + t.parts.filter((p) => p.to === id).reduce((sum, p) => sum + p.fraction, 0) * t.unit.peakExtra;
    // A target is never pushed over target at a step the transfer changes.
    for (const id of involved) {
      if (id === t.from) continue;
      const reserved = reserveOn(id) / this.node(id).node.capacity;
      for (let i = Math.min(firstRunning, h); i < h; i++) {
        if (utilOf(id, i) + reserved > target + 1e-9) return undefined;
      }
    }
    // A transfer that ends past the horizon puts its load on the targets at no step the checks above
    // see: without this, any move timed to end there "fitted" anywhere (and a drain planned that way
    // was planned again, as late, in every round). Its targets must take their share at the last step.
    if (end >= h * step) {
      for (const p of t.parts) {
        if (p.to === t.from) continue;
        const n = this.node(p.to);
        if ((after.get(p.to)!.load[h - 1]! + p.fraction * t.unit.load[h - 1]! + reserveOn(p.to)) / n.node.capacity > target + 1e-9) return undefined;
      }
    }
    let windowPeak = 0;
    for (let i = firstRunning; i < h && i * step < end; i++) {
      for (const id of involved) windowPeak = Math.max(windowPeak, utilOf(id, i));
      // The copy may take the source over target, never over the ceiling.
      const before = this.util(t.from)[i]!;
      if (before <= sourceCeiling && utilOf(t.from, i) > sourceCeiling + 1e-9) return undefined;
    }
    const startStep = Math.min(firstRunning, h - 1);
    const inPeak = involved.some((id) => this.placedUtil(id)[startStep]! > target + 1e-9);
    let benefit = 0;
    for (const id of involved) {
      const cap = this.node(id).node.capacity;
      let afterOverload = 0;
      for (let i = 0; i < h; i++) afterOverload += Math.max(0, after.get(id)!.load[i]! / cap - target) * 100;
      benefit += this.overload(id) - afterOverload;
    }
    return { after, inPeak, windowPeak, benefit };
  }

  saveRunning(): string {
    return JSON.stringify(this.running);
  }

  restoreRunning(saved: string): void {
    this.running = JSON.parse(saved) as Running[];
  }

  apply(t: Transfer, trial: TransferTrial): void {
    for (const [id, a] of trial.after) {
      const n = this.node(id);
      n.load = a.load;
      n.copy = a.copy;
    }
    const involved = [...trial.after.keys()];
    this.running.push({ nodeIds: involved, start: t.start, end: t.start + t.seconds });
  }
}
