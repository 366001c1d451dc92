/**
 * The simulated fleet: nodes, where each shard lives, the movements in flight, and what the run is
 * measured by. Pure bookkeeping; the policies decide, this counts.
 *
 * Time is in seconds from the simulation's epoch; loads hold for a whole 5-minute bucket. Accounting
 * is per minute (`account`): at the start of each minute the movements due to cut over do, then
 * - a node's load is its shards' loads plus the copy load of the movements it takes part in: both
 *   source and target carry copyLoadFactor × the shard's load + bulkCopyShare × their capacity while
 *   the movement runs (the planner's own cost model, planner.ts);
 * - an overload minute is one minute of one node over its capacity (node-minutes, summed over nodes);
 * - node-hours count nodes that are active, activating or draining (standby costs nothing);
 * - a draining node that holds no shard and takes part in no movement goes back to standby.
 * An oscillation is a movement to a node the shard left (cut over from) within the hysteresis window.
 */

export type SimNodeState = 'active' | 'standby' | 'draining';

export interface SimNode {
  id: number;
  name: string;
  capacity: number;
  state: SimNodeState;
  /** Seconds from which an active node takes shards (its activation's end). */
  readyAt: number;
}

export interface SimMove {
  shardId: number;
  from: number;
  to: number;
  start: number;
  end: number;
  bytes: number;
  startedInPeak: boolean;
}

export interface SimMetrics {
  overloadMinutes: number;
  nodeHours: number;
  moves: number;
  bytesMoved: number;
  movesStartedInPeak: number;
  /** Of those, moves whose overload was seen in the observed load of a shard with no trustworthy forecast, not predicted. */
  movesStartedInPeakReactive: number;
  oscillations: number;
}

export interface CopyCost {
  copyLoadFactor: number;
  bulkCopyShare: number;
}

export class SimFleet {
  readonly nodes: SimNode[];
  readonly placement = new Map<number, number>();
  readonly running: SimMove[] = [];
  readonly finished: SimMove[] = [];
  readonly metrics: SimMetrics = { overloadMinutes: 0, nodeHours: 0, moves: 0, bytesMoved: 0, movesStartedInPeak: 0, movesStartedInPeakReactive: 0, oscillations: 0 };
  private readonly bytes = new Map<number, number>();

  constructor(
    nodes: readonly SimNode[],
    shards: ReadonlyArray<{ shardId: number; bytes: number; nodeId: number }>,
    readonly hysteresisSeconds: number,
    readonly copy: CopyCost,
  ) {
    this.nodes = nodes.map((n) => ({ ...n }));
    for (const s of shards) {
      this.node(s.nodeId);
      this.placement.set(s.shardId, s.nodeId);
      this.bytes.set(s.shardId, s.bytes);
    }
  }

  node(id: number): SimNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`simulation: no node ${id}`);
    return n;
  }

  bytesOf(shardId: number): number {
    return this.bytes.get(shardId) ?? 0;
  }

  moving(shardId: number): SimMove | undefined {
    return this.running.find((m) => m.shardId === shardId);
  }

  shardsOn(nodeId: number): number[] {
    return [...this.placement].filter(([, n]) => n === nodeId).map(([s]) => s).sort((a, b) => a - b);
  }

  movesOn(nodeId: number): number {
    return this.running.filter((m) => m.from === nodeId || m.to === nodeId).length;
  }

  /** Whether the shard left `nodeId` (cut over from it) within the hysteresis window before `at`. */
  leftRecently(shardId: number, nodeId: number, at: number): boolean {
    return this.finished.some((m) => m.shardId === shardId && m.from === nodeId && at - m.end < this.hysteresisSeconds);
  }

  activate(nodeId: number, at: number, activationSeconds: number): void {
    const n = this.node(nodeId);
    if (n.state === 'active') return;
    if (n.state === 'standby') n.readyAt = at + activationSeconds;
    n.state = 'active';
  }

  drain(nodeId: number): void {
    const n = this.node(nodeId);
    if (n.state === 'active') n.state = 'draining';
  }

  /** Starts a movement; false (nothing done) when the shard is moving already or is on `to`. */
  startMove(shardId: number, to: number, start: number, seconds: number, startedInPeak: boolean, reactive = false): boolean {
    const from = this.placement.get(shardId);
    if (from === undefined || from === to || this.moving(shardId)) return false;
    this.node(to);
    if (this.leftRecently(shardId, to, start)) this.metrics.oscillations++;
    const bytes = this.bytesOf(shardId);
    this.running.push({ shardId, from, to, start, end: start + seconds, bytes, startedInPeak });
    this.metrics.moves++;
    this.metrics.bytesMoved += bytes;
    if (startedInPeak) this.metrics.movesStartedInPeak++;
    if (startedInPeak && reactive) this.metrics.movesStartedInPeakReactive++;
    return true;
  }

  /** Cuts over every movement that ends by `at`. */
  cutOver(at: number): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const m = this.running[i]!;
      if (m.end > at) continue;
      this.placement.set(m.shardId, m.to);
      this.finished.push(m);
      this.running.splice(i, 1);
    }
  }

  /** Load per node now: shards where they are, plus the copy load of the movements running at `at`. */
  nodeLoads(at: number, shardLoad: (shardId: number) => number): Map<number, number> {
    const loads = new Map(this.nodes.map((n) => [n.id, 0]));
    for (const [shardId, nodeId] of this.placement) loads.set(nodeId, loads.get(nodeId)! + shardLoad(shardId));
    for (const m of this.running) {
      if (m.start > at) continue;
      for (const id of [m.from, m.to]) loads.set(id, loads.get(id)! + this.copy.copyLoadFactor * shardLoad(m.shardId) + this.copy.bulkCopyShare * this.node(id).capacity);
    }
    return loads;
  }

  /** Accounts whole minutes from `from` to `to` (seconds; see the module comment). */
  account(from: number, to: number, shardLoad: (shardId: number, at: number) => number): void {
    for (let at = from; at < to; at += 60) {
      this.cutOver(at);
      const loads = this.nodeLoads(at, (s) => shardLoad(s, at));
      for (const n of this.nodes) {
        if (n.state === 'draining' && this.shardsOn(n.id).length === 0 && this.movesOn(n.id) === 0) n.state = 'standby';
        if (n.state === 'standby') continue;
        this.metrics.nodeHours += 1 / 60;
        if (loads.get(n.id)! > n.capacity + 1e-9) this.metrics.overloadMinutes++;
      }
    }
  }
}
