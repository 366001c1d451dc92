import { localityCost, peakStacking, targetCost } from './cost.js';
import { moveSeconds } from './duration.js';
import { Fleet, type FleetNode, type Transfer, type TransferTrial, type Unit } from './fleet.js';
import { resolveSettings } from './settings.js';
import type { Benefit, IntervalBound, NodeOutlook, Plan, PlanAction, PlanInput, PlannerSettings, StepForecast, TableOutlook } from './types.js';
import { validatePlanInput } from './validate.js';

/**
 * The planner (DESIGN §5): from forecasts, placements and nodes, the actions that keep every node
 * under its target utilisation at every step of the horizon while moving as few bytes as possible.
 * Pure and deterministic: the same input gives the same plan.
 *
 * Order of work, in the spirit of P-Store (SIGMOD 2018) but greedy rather than a dynamic programme:
 * 1. the nodes the predicted peak needs; standby nodes activated when the active ones fall short;
 * 2. shards that alone would overload even the largest node are split;
 * 3. draining nodes are emptied (cold shards merged into a neighbouring range when that is possible);
 * 4. relief: while a node is over target at some step, move data off it — the coldest shard whose
 *    move alone removes the overload (cheapest to move), else the hottest, incrementally;
 * 5. scale-in: a node predicted low for a sustained period is drained, then retired.
 *
 * Hot-shard move cost. A move is itself load: while it runs, source and target each carry
 * `copyLoadFactor` (0.3) × the shard's predicted load — its changes are decoded, shipped and applied —
 * plus `bulkCopyShare` (3%) of their capacity for the snapshot copy, paced by the copy governor. So a
 * hot shard costs more to move than a cold one, the source needs headroom to be moved from, and the
 * target cost charges `copyLoadFactor` × the shard's peak share of its source: of two shards that give
 * the same relief, the colder one is moved.
 *
 * Peak. A node is in a predicted peak at a step when the shards placed on it, with the plan's
 * earlier actions, are predicted over the target at the bound. No action starts in a step that is a
 * peak of any node it involves. Copy load is bounded on its own: while an action runs its targets
 * stay under target with it, and its source (which is shedding load) may go over target by the copy
 * but never over `sourceCeiling` (90%). The one exception is a source over target already in the
 * first step (no forecast saw it coming, or a fallback series' observed load): when nothing else
 * relieves it, it is relieved at once and the action says `startsInPeak`; the copy may then take a
 * move's source up to its capacity, and a split's source (a shard over target on its own: nothing
 * else can relieve it) past it, for as long as the copy runs.
 *
 * Timing. An action that prevents an overload must finish before the start of the first overloaded
 * step: its start-by is that time minus its duration (duration.ts, margin included). Among the start
 * times (step boundaries, the start-by itself) that finish in time and do not start in a peak, the
 * one whose highest utilisation while it runs is lowest — the predicted trough — is chosen.
 */
export function planRebalance(input: PlanInput): Plan {
  const settings = resolveSettings(input.settings);
  validatePlanInput(input, settings);
  return new Planner(input, settings).run();
}

const GIB = 2 ** 30;
const EPS = 1e-6;

/** The value of a step at the planning bound, never below zero (a load is never negative). */
export function atBound(step: StepForecast, bound: IntervalBound): number {
  return Math.max(0, bound === 'point' ? step.point : bound === 'upper80' ? step.hi80 : step.hi95);
}

interface Option {
  transfer: Transfer;
  trial: TransferTrial;
  /** 0: finishes before the overload, outside peaks; 1: late but outside peaks; 2: starts in a peak. */
  cls: number;
  cost: number;
  full: boolean;
  /** Seconds after asOf by which it should finish: the start of the first overloaded step it prevents. */
  deadline: number;
}

class Planner {
  private readonly fleet: Fleet;
  private readonly asOfMs: number;
  private readonly actions: PlanAction[] = [];
  private readonly notes: string[] = [];
  private readonly fallbackSeries: string[] = [];
  private readonly without = new Map<number, number[]>();
  private readonly activation = new Map<number, string>();
  private readonly movedOff = new Map<number, string[]>();

  constructor(
    private readonly input: PlanInput,
    private readonly s: PlannerSettings,
  ) {
    this.asOfMs = Date.parse(input.asOf);
    this.fleet = new Fleet(input.nodes, s);
    for (const unit of this.buildUnits()) this.fleet.addUnit(unit);
    for (const id of this.fleet.nodes.keys()) this.without.set(id, this.fleet.util(id));
  }

  run(): Plan {
    const requiredNodes = this.scaleOut();
    this.splitOversized();
    for (const n of this.fleet.nodes.values()) {
      if (n.state === 'draining' && n.node.reachable) {
        if (!this.evacuate(n.node.id, [])) this.notes.push(`${n.node.name} is draining but not all of its shards fit elsewhere yet`);
      }
    }
    this.relieveAll();
    // Scale-in also beside a node relief could not bring under target (relieveAll leaves only such
    // nodes over target), as long as no node is being activated: a drain may not add to any node's
    // overload (scaleIn checks), so such a node does not keep an idle fleet around it.
    if (this.activation.size === 0) this.scaleIn(requiredNodes);
    this.retireEmptied();
    const t = this.s.targetUtilisation;
    const nodes: NodeOutlook[] = [...this.fleet.nodes.values()].map((n) => ({
      nodeId: n.node.id,
      name: n.node.name,
      capacity: n.node.capacity,
      state: n.state,
      without: this.without.get(n.node.id)!.map(round4),
      with: this.fleet.placedUtil(n.node.id).map(round4),
      copy: n.copy.map((c) => round4(c / n.node.capacity)),
    }));
    const feasible = [...this.fleet.nodes.values()].every((n) => !n.node.reachable || this.fleet.placedUtil(n.node.id).every((u) => u <= t + EPS));
    if (!feasible) this.notes.push('not every node stays under target at every step with this plan: see the notes above and the per-node outlook');
    return {
      asOf: new Date(this.asOfMs).toISOString(),
      stepSeconds: this.s.stepSeconds,
      horizonSteps: this.s.horizonSteps,
      bound: this.s.bound,
      targetUtilisation: t,
      requiredNodes,
      actions: this.actions,
      nodes,
      tables: this.tables(),
      feasible,
      fallbackSeries: this.fallbackSeries,
      notes: this.notes,
      moveDuration: this.input.moveDuration,
    };
  }

  // --- input → units ---------------------------------------------------------------------------

  private buildUnits(): Unit[] {
    const h = this.s.horizonSteps;
    const forecasts = new Map(this.input.shardForecasts.map((f) => [f.shardId, f]));
    const shares = new Map((this.input.regionShares ?? []).map((r) => [r.shardId, r.shares]));
    const profiles = new Map((this.input.dailyProfiles ?? []).map((p) => [p.shardId, p.values]));
    const windowStart = this.asOfMs - this.s.hysteresisSeconds * 1000;
    const recent = (this.input.recentMoves ?? []).filter((m) => Date.parse(m.finishedAt) > windowStart && Date.parse(m.finishedAt) <= this.asOfMs);
    const units = new Map<string, Unit>();
    for (const p of [...this.input.placements].sort((a, b) => a.shardId - b.shardId)) {
      const key = `${p.colocationGroup}#${p.rangeIndex}`;
      const unit =
        units.get(key) ??
        ({ key, shardIds: [], tables: [], group: p.colocationGroup, rangeIndex: p.rangeIndex, nodeId: p.nodeId, bytes: 0, load: new Array<number>(h).fill(0), fallback: false, peakExtra: 0, peakUnknown: false, shares: {}, profile: [], frozen: false, avoid: [] } as Unit);
      units.set(key, unit);
      unit.shardIds.push(p.shardId);
      if (!unit.tables.includes(p.table)) unit.tables.push(p.table);
      unit.bytes += p.bytes;
      const f = forecasts.get(p.shardId)!;
      if (f.trustworthy) {
        f.steps.forEach((st, i) => (unit.load[i]! += atBound(st, this.s.bound)));
      } else {
        // Planned on its observed load (reactively), with room kept on its node for the most it was seen
        // to carry over the last day, so that at whatever hour its load comes back the node can take it.
        unit.fallback = true;
        for (let i = 0; i < h; i++) unit.load[i]! += f.observedLoad;
        if (f.observedPeak === undefined) unit.peakUnknown = true;
        else unit.peakExtra += Math.max(0, f.observedPeak - f.observedLoad);
        this.fallbackSeries.push(f.series);
        const seen = f.observedPeak === undefined ? `its observed load ${fmt(f.observedLoad)}` : `its observed load ${fmt(f.observedLoad)}, with room kept for its peak of the last day, ${fmt(f.observedPeak)}`;
        this.notes.push(`${f.series}: no trustworthy model${f.untrustedBecause ? ` (${f.untrustedBecause})` : ''}; planned on ${seen}, reactively`);
      }
      for (const [region, share] of Object.entries(shares.get(p.shardId) ?? {})) unit.shares[region] = (unit.shares[region] ?? 0) + share;
      const profile = profiles.get(p.shardId);
      if (profile && unit.profile) unit.profile = unit.profile.length === 0 ? [...profile] : unit.profile.map((v, i) => v + profile[i]!);
      else unit.profile = undefined;
      for (const m of recent.filter((r) => r.shardId === p.shardId)) {
        unit.frozen = true;
        if (!unit.avoid.includes(m.fromNodeId)) unit.avoid.push(m.fromNodeId);
      }
    }
    for (const u of units.values()) if (u.profile?.length === 0) u.profile = undefined;
    for (const n of this.input.nodes) {
      if (!n.reachable && this.input.placements.some((p) => p.nodeId === n.id)) this.notes.push(`${n.name} is unreachable: its shards cannot be moved until it answers, and it takes none`);
    }
    if ((this.input.indexForecasts ?? []).length > 0) this.notes.push(`${this.input.indexForecasts!.length} index forecasts received; the plan moves whole shards, so it plans on the shard forecasts`);
    return [...units.values()];
  }

  // --- nodes the peak needs; scale-out ----------------------------------------------------------

  private totalLoad(): number[] {
    const total = new Array<number>(this.s.horizonSteps).fill(0);
    for (const u of this.fleet.units.values()) u.load.forEach((v, i) => (total[i]! += v));
    return total;
  }

  private scaleOut(): number {
    const t = this.s.targetUtilisation;
    const total = this.totalLoad();
    const peak = Math.max(...total);
    const peakStep = total.indexOf(peak);
    const usable = [...this.fleet.nodes.values()]
      .filter((n) => n.node.reachable && (n.state === 'active' || n.state === 'standby'))
      .sort((a, b) => b.node.capacity - a.node.capacity || a.node.id - b.node.id);
    let required = 0;
    for (let sum = 0; required < usable.length && sum < peak - EPS; required++) sum += t * usable[required]!.node.capacity;
    if (usable.reduce((sum, n) => sum + t * n.node.capacity, 0) < peak - EPS) {
      this.notes.push(`the predicted peak ${fmt(peak)} at ${this.hhmm(peakStep * this.s.stepSeconds)} exceeds what every usable node takes at ${pct(t)}: the fleet needs more nodes than it has`);
    }
    // Only the steps a node activated now could serve in count towards activating one.
    const reachable = Math.ceil(this.s.activationSeconds / this.s.stepSeconds);
    const actionablePeak = Math.max(0, ...total.slice(reachable));
    let active = this.fleet.targets().reduce((sum, n) => sum + t * n.node.capacity, 0);
    for (const n of usable) {
      if (active >= actionablePeak - EPS) break;
      if (n.state !== 'standby') continue;
      const short = total.findIndex((v, i) => i >= reachable && v > active + EPS);
      const reason = `fleet predicted at ${fmt(peak)} load units at ${this.hhmm(peakStep * this.s.stepSeconds)}, ${this.boundLabel()}, above the ${fmt(active)} its active nodes take at ${pct(t)}; activating ${n.node.name} (capacity ${fmt(n.node.capacity)})`;
      this.activate(n.node.id, reason, Math.max(0, short) * this.s.stepSeconds, true);
      active += t * n.node.capacity;
    }
    return Math.max(required, 1);
  }

  /**
   * Activates a standby node in the plan: at once, or (`deferred`) `activationLeadSeconds` before it
   * is needed plus its activation, whichever is later.
   */
  private activate(nodeId: number, reason: string, neededBy: number, deferred = false): void {
    const n = this.fleet.node(nodeId);
    const start = deferred ? this.deferredStart(neededBy) : 0;
    n.state = 'active';
    n.targetFrom = start + this.s.activationSeconds;
    const id = this.nextId();
    this.activation.set(nodeId, id);
    this.actions.push({
      kind: 'activate',
      nodeId,
      id,
      startAt: this.iso(start),
      startBy: this.iso(Math.max(start, neededBy - this.s.activationSeconds)),
      finishAt: this.iso(start + this.s.activationSeconds),
      etaSeconds: this.s.activationSeconds,
      after: [],
      reason,
      benefit: { overloadPointSteps: 0, adds: n.node.name, summary: `adds ${fmt(n.node.capacity * this.s.targetUtilisation)} load units of room at target` },
    });
  }

  /** When a node needed at `neededBy` is activated, deferred: `activationLeadSeconds` before it is needed plus its activation, or now. */
  private deferredStart(neededBy: number): number {
    return Math.max(0, neededBy - this.s.activationSeconds - this.s.activationLeadSeconds);
  }

  // --- splits ------------------------------------------------------------------------------------

  private splitOversized(): void {
    const t = this.s.targetUtilisation;
    const caps = [...this.fleet.nodes.values()].filter((n) => n.node.reachable && (n.state === 'active' || n.state === 'standby')).map((n) => n.node.capacity);
    if (caps.length === 0) return;
    const maxCap = Math.max(...caps);
    // The first step is past helping (nothing finishes inside it): only later peaks call for a split.
    const oversized = [...this.fleet.units.values()].filter((u) => Math.max(...u.load.slice(1)) > t * maxCap + EPS && this.fleet.node(u.nodeId).node.reachable);
    for (const unit of oversized.sort((a, b) => Math.max(...b.load) - Math.max(...a.load))) {
      const peak = Math.max(...unit.load);
      const pieces = 2 ** Math.max(1, Math.ceil(Math.log2(peak / (this.s.splitFill * t * maxCap))));
      let placed = this.placePieces(unit, pieces);
      while (!placed) {
        const standby = this.standbyNodes()[0];
        if (!standby) break;
        this.activate(standby.node.id, `${this.label(unit)} needs ${pieces} pieces of ${fmt(peak / pieces)} load units and the active nodes have no room for them; activating ${standby.node.name}`, 0);
        placed = this.placePieces(unit, pieces);
      }
      if (!placed) {
        this.notes.push(`${this.label(unit)} alone would overload any node (peak ${fmt(peak)}, largest node takes ${fmt(t * maxCap)} at target) but no placement of its ${pieces} pieces was found`);
        continue;
      }
      const [option, pieceNodes] = placed;
      this.fleet.apply(option.transfer, option.trial);
      this.fleet.units.delete(unit.key);
      pieceNodes.forEach((nodeId, j) => {
        const piece: Unit = { ...unit, key: `${unit.key}/${j + 1}of${pieces}`, nodeId, bytes: unit.bytes / pieces, load: unit.load.map((v) => v / pieces), peakExtra: unit.peakExtra / pieces, profile: unit.profile?.map((v) => v / pieces), frozen: true };
        this.fleet.units.set(piece.key, piece);
      });
      const src = this.fleet.node(unit.nodeId).node;
      const peakStep = unit.load.indexOf(peak);
      const tr = option.transfer;
      this.record({
        kind: 'split',
        shardIds: unit.shardIds,
        fromNodeId: unit.nodeId,
        pieceNodeIds: pieceNodes,
        bytes: unit.bytes,
        ...this.timing(option, unit.fallback),
        after: this.afterActivations(pieceNodes),
        reason:
          `${this.label(unit)} predicted at ${fmt(peak)} load units at ${this.hhmm(peakStep * this.s.stepSeconds)}, ${this.basis(unit.nodeId)}: ${pct(peak / src.capacity)} of ${src.name} alone, more than the ${fmt(t * maxCap)} the largest node takes at ${pct(t)}; ` +
          `splitting into ${pieces} on ${pieceNodes.map((id) => this.fleet.node(id).node.name).join(', ')}, ${size(unit.bytes)}, ETA ${eta(tr.seconds)}, start by ${this.hhmm(this.startBy(option))}`,
        benefit: this.benefit(option, unit.nodeId),
      });
    }
  }

  /** Pieces placed greedily, each on the node with most room at its peak; the window for the whole split. */
  private placePieces(unit: Unit, pieces: number): [Option, number[]] | undefined {
    const t = this.s.targetUtilisation;
    const scratch = new Map(this.fleet.targets().map((n) => [n.node.id, this.fleet.util(n.node.id)]));
    if (unit.nodeId !== undefined && scratch.has(unit.nodeId)) {
      const cap = this.fleet.node(unit.nodeId).node.capacity;
      scratch.set(unit.nodeId, scratch.get(unit.nodeId)!.map((u, i) => u - unit.load[i]! / cap));
    }
    const pieceNodes: number[] = [];
    for (let j = 0; j < pieces; j++) {
      let best: [number, number] | undefined;
      for (const [id, util] of scratch) {
        const cap = this.fleet.node(id).node.capacity;
        const peak = Math.max(...util.map((u, i) => u + unit.load[i]! / pieces / cap));
        if (peak <= t + EPS && (!best || peak < best[1] - EPS)) best = [id, peak];
      }
      if (!best) return undefined;
      const [id] = best;
      const cap = this.fleet.node(id).node.capacity;
      scratch.set(id, scratch.get(id)!.map((u, i) => u + unit.load[i]! / pieces / cap));
      pieceNodes.push(id);
    }
    const parts = [...new Set(pieceNodes)].map((to) => ({ to, fraction: pieceNodes.filter((x) => x === to).length / pieces }));
    const first = this.fleet.firstOverloadStep(unit.nodeId) ?? this.s.horizonSteps;
    // A shard over target on its own node now has no other relief: its split may take the source past
    // capacity while it copies (the source stays overloaded until the split is done either way).
    const option = this.bestWindow(unit, unit.nodeId, parts, first * this.s.stepSeconds, first === 0, Infinity);
    return option ? [option, pieceNodes] : undefined;
  }

  // --- relief ------------------------------------------------------------------------------------

  private overloadedNodes(): number[] {
    return [...this.fleet.nodes.values()]
      .filter((n) => n.node.reachable && this.fleet.overload(n.node.id) > EPS)
      .map((n) => n.node.id)
      .sort((a, b) => this.fleet.overload(b) - this.fleet.overload(a) || a - b);
  }

  private relieveAll(): void {
    const stuck = new Set<number>();
    for (let guard = 0; guard < 10_000; guard++) {
      const nodeId = this.overloadedNodes().find((id) => !stuck.has(id));
      if (nodeId === undefined) return;
      if (this.relieve(nodeId)) continue;
      const standby = this.standbyNodes()[0];
      const n = this.fleet.node(nodeId).node;
      if (standby && this.roomWouldHelp(nodeId)) {
        const [step, util] = this.peakOf(nodeId);
        // Activated only when a move to it then relieves the node: otherwise it adds cost, not room.
        const saved = this.save();
        const why = `${n.name} predicted at ${pct(util)} of capacity at ${this.hhmm(step * this.s.stepSeconds)}, ${this.basis(nodeId)}, and no active node can take enough of its load; activating ${standby.node.name}`;
        const neededBy = (this.fleet.firstOverloadStep(nodeId) ?? 0) * this.s.stepSeconds;
        // Activated as late as leaves the moves onto it time, else at once (tried once when the two are the same).
        let relieved = false;
        for (const deferred of this.deferredStart(neededBy) > 0 ? [true, false] : [false]) {
          this.activate(standby.node.id, why, neededBy, deferred);
          if (this.relieve(nodeId)) {
            relieved = true;
            break;
          }
          this.restore(saved);
          this.activation.delete(standby.node.id);
        }
        if (relieved) continue;
      }
      stuck.add(nodeId);
      const first = this.fleet.firstOverloadStep(nodeId)!;
      this.notes.push(`${n.name} stays over target from ${this.hhmm(first * this.s.stepSeconds)}: no move that helps enough fits the stability rules, the peaks and the room on other nodes`);
    }
  }

  /**
   * Whether a new node could help: the node has shards relief may move, and an overload late enough
   * for an activated node to take one of them first. Otherwise activating would add cost, not room.
   */
  private roomWouldHelp(nodeId: number): boolean {
    const movable = this.fleet.unitsOn(nodeId).filter((u) => !u.frozen);
    if (movable.length === 0) return false;
    const quickest = Math.min(...movable.map((u) => moveSeconds(this.input.moveDuration, u.bytes)));
    const step = Math.ceil((this.s.activationSeconds + quickest) / this.s.stepSeconds);
    return this.fleet.firstOverloadStep(nodeId, step) !== undefined;
  }

  /** One move off an overloaded node, if any helps; true when one was planned. */
  private relieve(nodeId: number): boolean {
    const step = this.s.stepSeconds;
    // No move can finish inside the first step (it counts on its source there), so the overload it
    // prevents is the first one after it; one in the first step makes the node urgent.
    const first = this.fleet.firstOverloadStep(nodeId)!;
    const urgent = first === 0;
    const deadlineStep = urgent ? (this.fleet.firstOverloadStep(nodeId, 1) ?? 1) : first;
    const options: Option[] = [];
    for (const unit of this.fleet.unitsOn(nodeId)) {
      if (unit.frozen) continue;
      for (const target of this.fleet.targets()) {
        if (target.node.id === nodeId || unit.avoid.includes(target.node.id)) continue;
        const option = this.bestWindow(unit, nodeId, [{ to: target.node.id, fraction: 1 }], deadlineStep * step, urgent);
        if (!option || option.trial.benefit <= EPS) continue;
        if (unit.bytes > 0 && option.trial.benefit / (unit.bytes / GIB) < this.s.minBenefitPerGiB) continue;
        options.push(option);
      }
    }
    if (options.length === 0) return false;
    const bestCls = Math.min(...options.map((o) => o.cls));
    const inClass = options.filter((o) => o.cls === bestCls);
    const full = inClass.filter((o) => o.full);
    let chosen: Option;
    if (full.length > 0) {
      chosen = cheapest(full);
    } else {
      const hotness = (u: Unit) => u.load[deadlineStep]!;
      const hottest = inClass.reduce((a, b) => (hotness(b.transfer.unit) > hotness(a.transfer.unit) + EPS ? b : a)).transfer.unit;
      chosen = cheapest(inClass.filter((o) => o.transfer.unit === hottest));
    }
    this.applyMove(chosen, 'relief');
    return true;
  }

  /**
   * The best start for a transfer, or undefined when none is allowed. `soonest`: a transfer with no
   * overload to prevent but a benefit from the moment it is done (a drain frees its node) starts at
   * the earliest allowed time rather than in the trough: its "deadline" is only the horizon's end,
   * which moves on with every round, so a start put off to a later trough would be put off again in
   * the next round's plan, and the node would never be emptied.
   */
  private bestWindow(unit: Unit, from: number, parts: Transfer['parts'], deadline: number, urgent: boolean, urgentCeiling = 1, soonest = false): Option | undefined {
    const { stepSeconds: step, horizonSteps: h, targetUtilisation: t } = this.s;
    const seconds = moveSeconds(this.input.moveDuration, unit.bytes);
    const starts = new Set<number>();
    for (let k = 0; k < h; k++) starts.add(k * step);
    if (deadline - seconds >= 0 && deadline - seconds < h * step) starts.add(deadline - seconds);
    for (const p of parts) {
      const from = this.fleet.node(p.to).targetFrom;
      if (from !== undefined && from < h * step) starts.add(from);
    }
    let best: (Option & { key: number[] }) | undefined;
    for (const start of [...starts].sort((a, b) => a - b)) {
      const transfer: Transfer = { unit, from, parts, start, seconds };
      const trial = this.fleet.tryTransfer(transfer, urgent ? urgentCeiling : this.s.sourceCeiling);
      if (!trial) continue;
      const end = start + seconds;
      const cls = !trial.inPeak ? (end <= deadline + EPS ? 0 : 1) : urgent ? 2 : -1;
      if (cls < 0) continue;
      // class 0: the trough (lowest peak while running), then the earliest; otherwise the earliest.
      const key = [cls, cls === 0 && !soonest ? Math.round(trial.windowPeak * 1e6) : 0, start];
      if (best && !lexLess(key, best.key)) continue;
      const src = trial.after.get(from)!;
      const cap = this.fleet.node(from).node.capacity;
      const afterStep = Math.ceil(end / step);
      let full = true;
      for (let i = afterStep; i < h; i++) if (src.load[i]! / cap > t + EPS) full = false;
      best = { transfer, trial, cls, full, cost: this.cost(unit, from, parts, trial), key, deadline };
    }
    return best;
  }

  private cost(unit: Unit, from: number, parts: Transfer['parts'], trial: TransferTrial): number {
    const t = this.s.targetUtilisation;
    let cost = 0;
    for (const p of parts) {
      if (p.to === from) continue;
      const n = this.fleet.node(p.to);
      const a = trial.after.get(p.to)!;
      const peak = Math.max(...a.load.map((v, i) => (v + a.copy[i]!) / n.node.capacity));
      cost +=
        p.fraction *
        targetCost(
          {
            load: peak / t + (this.s.copyLoadFactor * Math.max(...unit.load)) / this.fleet.node(from).node.capacity,
            bytes: unit.bytes / GIB,
            locality: localityCost(unit.shares, n.node.region),
            alignment: this.alignment(unit, p.to),
          },
          this.s.weights,
        );
    }
    return cost;
  }

  /** Peak stacking of the unit on a node: daily profiles when all have them, else the horizon's loads. */
  private alignment(unit: Unit, nodeId: number): number {
    const others = this.fleet.unitsOn(nodeId).filter((u) => u !== unit);
    if (others.length === 0) return 0;
    if (unit.profile && others.every((u) => u.profile)) {
      const sum = unit.profile.map((_, i) => others.reduce((acc, u) => acc + u.profile![i]!, 0));
      return peakStacking(unit.profile, sum);
    }
    return peakStacking(unit.load, this.fleet.node(nodeId).load);
  }

  private applyMove(option: Option, why: 'relief' | 'drain'): string {
    const { transfer: tr } = option;
    const unit = tr.unit;
    const to = tr.parts[0]!.to;
    const src = this.fleet.node(tr.from).node;
    const dst = this.fleet.node(to).node;
    const [peakStep, peakUtil] = this.peakOf(tr.from);
    const timing = this.timing(option, this.fleet.unitsOn(tr.from).some((u) => u.fallback));
    this.fleet.apply(tr, option.trial);
    unit.nodeId = to;
    unit.frozen = true;
    const lead =
      why === 'relief'
        ? `${src.name} predicted at ${pct(peakUtil)} of capacity at ${this.hhmm(peakStep * this.s.stepSeconds)}, ${this.basis(tr.from, unit)}`
        : `${src.name} is draining`;
    const when =
      option.cls === 2
        ? `; starts at once, inside the peak: ${src.name} is over target already`
        : option.cls === 1
          ? `; cannot finish before the overload at ${this.hhmm(option.deadline)}: starts as early as it can outside a peak`
          : timing.startAt !== timing.startBy
            ? `; planned at ${this.hhmm(tr.start)}, the trough (highest utilisation while it runs ${pct(option.trial.windowPeak)})`
            : '';
    return this.record({
      kind: 'move',
      shardIds: unit.shardIds,
      fromNodeId: tr.from,
      toNodeId: to,
      bytes: unit.bytes,
      ...timing,
      after: this.afterActivations([to]),
      reason: `${lead}; moving ${this.label(unit)} to ${dst.name}, ${size(unit.bytes)}, ETA ${eta(tr.seconds)}, start by ${this.hhmm(this.startBy(option))}${when}`,
      benefit: this.benefit(option, tr.from),
    });
  }

  // --- draining, merging, scale-in, retiring ----------------------------------------------------

  /**
   * Moves (or merges) every unit off a node; false, having planned what fitted, when some did not fit.
   * `wholeHorizon` (scale-in, which the planner chooses itself): a unit goes only to a node that takes
   * its load under target at every step of the horizon, as if it were there now, not merely after a
   * move timed to end where that node's load has fallen: such a move is planned as late again in every
   * round, and the node it was to free is kept draining, neither serving nor retired.
   */
  private evacuate(nodeId: number, after: string[], wholeHorizon = false, tightest = false): boolean {
    const horizonEnd = this.lastStepStart();
    const node = this.fleet.node(nodeId).node;
    const units = this.fleet.unitsOn(nodeId).sort((a, b) => Math.max(...b.load) - Math.max(...a.load) || a.key.localeCompare(b.key));
    let ok = true;
    for (const unit of units) {
      if (this.merge(unit, after)) continue;
      const options: Option[] = [];
      for (const target of this.fleet.targets()) {
        if (target.node.id === nodeId || unit.avoid.includes(target.node.id)) continue;
        if (wholeHorizon) {
          // With the room kept for observed peaks, the target's own and the unit's.
          const reserved = this.fleet.reserve(target.node.id) + unit.peakExtra;
          if (unit.load.some((v, i) => (target.load[i]! + v + reserved) / target.node.capacity > this.s.targetUtilisation + EPS)) continue;
          // Scale-in fills nodes on a prediction, or on an observed peak: a node holding a shard with neither is not filled.
          if (this.holdsUnforecast(target.node.id)) continue;
        }
        const option = this.bestWindow(unit, nodeId, [{ to: target.node.id, fraction: 1 }], horizonEnd, false, 1, true);
        if (option && option.cls <= 1) options.push(option);
      }
      if (options.length === 0) {
        ok = false;
        this.notes.push(`${this.label(unit)} on ${node.name} (draining) fits on no other node within the horizon`);
        continue;
      }
      const best = options.filter((o) => o.cls === Math.min(...options.map((x) => x.cls)));
      const id = this.applyMove(tightest ? this.tightestFit(unit, best) : cheapest(best), 'drain');
      const action = this.actions.find((a) => a.id === id)!;
      action.after.push(...after);
    }
    return ok;
  }

  /**
   * Best fit: the option whose target is left with the least room at its peak, so the room left on the
   * others takes the units after it (first-fit-decreasing packing, where the cost's choice spreads load).
   */
  private tightestFit(unit: Unit, options: Option[]): Option {
    const room = (o: Option) => {
      const target = this.fleet.node(o.transfer.parts[0]!.to);
      return target.node.capacity * this.s.targetUtilisation - Math.max(...unit.load.map((v, i) => target.load[i]! + v));
    };
    return options.reduce((a, b) => (room(b) < room(a) - EPS || (Math.abs(room(b) - room(a)) <= EPS && b.cost < a.cost - EPS) ? b : a));
  }

  /** A cold unit merged into a neighbouring key range of its group on another node, when it fits. */
  private merge(unit: Unit, after: string[]): boolean {
    const src = this.fleet.node(unit.nodeId).node;
    if (Math.max(...unit.load) + unit.peakExtra >= this.s.coldShare * this.s.targetUtilisation * src.capacity) return false;
    const horizonEnd = this.lastStepStart();
    const neighbours = [...this.fleet.units.values()]
      .filter((u) => u.group === unit.group && Math.abs(u.rangeIndex - unit.rangeIndex) === 1 && u.nodeId !== unit.nodeId && this.fleet.node(u.nodeId).state === 'active')
      .sort((a, b) => a.rangeIndex - b.rangeIndex);
    for (const into of neighbours) {
      if (unit.avoid.includes(into.nodeId)) continue;
      const option = this.bestWindow(unit, unit.nodeId, [{ to: into.nodeId, fraction: 1 }], horizonEnd, false, 1, true);
      if (!option || option.cls > 1) continue;
      this.fleet.apply(option.transfer, option.trial);
      this.fleet.units.delete(unit.key);
      into.shardIds.push(...unit.shardIds);
      into.bytes += unit.bytes;
      into.load = into.load.map((v, i) => v + unit.load[i]!);
      into.peakExtra += unit.peakExtra;
      into.fallback ||= unit.fallback;
      into.peakUnknown ||= unit.peakUnknown;
      into.frozen = true;
      const dst = this.fleet.node(into.nodeId).node;
      this.record({
        kind: 'merge',
        shardIds: unit.shardIds,
        intoShardIds: into.shardIds.filter((id) => !unit.shardIds.includes(id)),
        fromNodeId: src.id,
        toNodeId: dst.id,
        bytes: unit.bytes,
        ...this.timing(option, unit.fallback),
        after: [...after, ...this.afterActivations([dst.id])],
        reason: `${src.name} is draining and ${this.label(unit)} is cold (peak ${fmt(Math.max(...unit.load))} load units); merging it into its neighbouring range (shard ${into.shardIds[0]}) on ${dst.name}, ${size(unit.bytes)}, ETA ${eta(option.transfer.seconds)}, start by ${this.hhmm(this.startBy(option))}`,
        benefit: { ...this.benefit(option, src.id), frees: src.name },
      });
      return true;
    }
    return false;
  }

  private scaleIn(requiredNodes: number): void {
    const { lowUtilisation, sustainedRounds, minActiveNodes, lookaheadSteps, consolidateFill } = this.s.scaleIn;
    const history = new Map((this.input.utilisationHistory ?? []).map((h) => [h.nodeId, h.values]));
    const active = this.fleet.targets();
    if (active.length - 1 < Math.max(minActiveNodes, requiredNodes)) return;
    const bytesOn = (id: number) => this.fleet.unitsOn(id).reduce((sum, u) => sum + u.bytes, 0);
    // Consolidation: the fleet's load, added up, has stayed (and is predicted to stay) under what the others could carry without a node.
    // The fleet's highest load over the last rounds and the look-ahead, once: each node is then weighed against it.
    const capacity = active.reduce((sum, n) => sum + n.node.capacity, 0);
    const fleetLoad = (util: (nodeId: number) => number | undefined) => active.reduce((sum, n) => sum + (util(n.node.id) ?? Infinity) * n.node.capacity, 0);
    const fleetPeak = Math.max(
      ...Array.from({ length: sustainedRounds }, (_, k) => fleetLoad((id) => history.get(id)?.at(-1 - k))),
      ...Array.from({ length: Math.min(lookaheadSteps, this.s.horizonSteps) }, (_, i) => fleetLoad((id) => this.fleet.util(id)[i]! + this.fleet.reserve(id) / this.fleet.node(id).node.capacity)),
    );
    const spare = (n: FleetNode) => consolidateFill > 0 && fleetPeak < consolidateFill * this.s.targetUtilisation * (capacity - n.node.capacity);
    const isLow = (n: FleetNode) => {
      const values = history.get(n.node.id) ?? [];
      const ahead = this.fleet.util(n.node.id).slice(0, lookaheadSteps);
      const reserved = this.fleet.reserve(n.node.id) / n.node.capacity;
      return values.length >= sustainedRounds && values.slice(-sustainedRounds).every((v) => v < lowUtilisation) && Math.max(...ahead) + reserved < lowUtilisation;
    };
    // Scale-in is the one action taken on a prediction that load stays low. A shard with no trustworthy
    // forecast counts with the room kept for its observed peak of the last day; a node with such a shard
    // and no observed peak for it (only its recent load) is neither drained nor filled.
    const candidates = active
      .filter((n) => (isLow(n) || spare(n)) && !this.holdsUnforecast(n.node.id))
      .sort((a, b) => bytesOn(a.node.id) - bytesOn(b.node.id) || a.node.id - b.node.id);
    // What relief left over target (it could not help those nodes): a drain may leave it as it is, not add to it.
    const stuck = new Map(this.overloadedNodes().map((id) => [id, this.fleet.overload(id)]));
    const noWorse = () => this.overloadedNodes().every((id) => stuck.has(id) && this.fleet.overload(id) <= stuck.get(id)! + EPS);
    for (const n of candidates) {
      const saved = this.save();
      const id = this.nextId();
      const drain: PlanAction = {
        kind: 'drain',
        nodeId: n.node.id,
        id,
        startAt: this.iso(0),
        startBy: this.iso(0),
        finishAt: this.iso(0),
        etaSeconds: 0,
        after: [],
        reason: `${isLow(n) ? `${n.node.name} predicted under ${pct(lowUtilisation)} of capacity` : `the fleet's load predicted under ${pct(consolidateFill)} of what the nodes other than ${n.node.name} carry at ${pct(this.s.targetUtilisation)}`} for the last ${sustainedRounds} rounds and the next ${this.hhmm(0)}–${this.hhmm(Math.min(lookaheadSteps, this.s.horizonSteps) * this.s.stepSeconds)} (${n.node.name}'s peak ${pct(Math.max(...this.fleet.util(n.node.id).slice(0, lookaheadSteps)))}); the other nodes take its load under ${pct(this.s.targetUtilisation)} at every step of the horizon: draining it, then retiring it`,
        benefit: { overloadPointSteps: 0, frees: n.node.name, summary: `frees ${n.node.name} (capacity ${fmt(n.node.capacity)})` },
      };
      // Its units placed by cost (spread out), else packed tightly when spread out they do not all fit.
      for (const tightest of [false, true]) {
        // The fleet's own node: a restore below replaces the objects `active` was taken from.
        this.fleet.node(n.node.id).state = 'draining';
        this.actions.push(drain);
        if (this.evacuate(n.node.id, [id], true, tightest) && noWorse()) return;
        this.restore(saved);
      }
      this.notes.push(`${n.node.name} has been predicted low for ${sustainedRounds} rounds, but its shards do not fit elsewhere under target: not drained`);
    }
  }

  /** Whether a node holds a shard with no trustworthy forecast (planned on its observed load) and no observed peak. */
  private holdsUnforecast(nodeId: number): boolean {
    return this.fleet.unitsOn(nodeId).some((u) => u.peakUnknown);
  }

  private retireEmptied(): void {
    for (const n of this.fleet.nodes.values()) {
      if (n.state !== 'draining' || this.fleet.unitsOn(n.node.id).length > 0) continue;
      const off = this.movedOff.get(n.node.id) ?? [];
      const finishes = this.actions.filter((a) => off.includes(a.id)).map((a) => Date.parse(a.finishAt) - this.asOfMs);
      const at = Math.max(0, ...finishes) / 1000;
      n.state = 'retired';
      this.actions.push({
        kind: 'retire',
        nodeId: n.node.id,
        id: this.nextId(),
        startAt: this.iso(at),
        startBy: this.iso(at),
        finishAt: this.iso(at),
        etaSeconds: 0,
        after: off,
        reason: `${n.node.name} holds no shards once ${off.length === 0 ? 'drained' : `${off.length} planned movements finish`}: retiring it`,
        benefit: { overloadPointSteps: 0, frees: n.node.name, summary: `one node fewer (capacity ${fmt(n.node.capacity)})` },
      });
    }
  }

  private save(): string {
    return JSON.stringify({
      nodes: [...this.fleet.nodes.entries()],
      units: [...this.fleet.units.entries()],
      running: this.fleet.saveRunning(),
      actions: this.actions.length,
      notes: this.notes.length,
      movedOff: [...this.movedOff.entries()],
    });
  }

  private restore(saved: string): void {
    const s = JSON.parse(saved) as {
      nodes: [number, ReturnType<Fleet['node']>][];
      units: [string, Unit][];
      running: string;
      actions: number;
      notes: number;
      movedOff: [number, string[]][];
    };
    this.fleet.nodes.clear();
    for (const [k, v] of s.nodes) this.fleet.nodes.set(k, v);
    this.fleet.units.clear();
    for (const [k, v] of s.units) this.fleet.units.set(k, v);
    this.fleet.restoreRunning(s.running);
    this.actions.length = s.actions;
    this.notes.length = s.notes;
    this.movedOff.clear();
    for (const [k, v] of s.movedOff) this.movedOff.set(k, v);
  }

  // --- outlook and formatting -------------------------------------------------------------------

  private tables(): TableOutlook[] {
    const t = this.s.targetUtilisation;
    const maxCap = Math.max(...this.input.nodes.filter((n) => n.state !== 'retired').map((n) => n.capacity), 0);
    const forecasts = new Map((this.input.tableForecasts ?? []).map((f) => [f.table, f]));
    const shardLoad = new Map<number, number[]>();
    const byId = new Map(this.input.shardForecasts.map((f) => [f.shardId, f]));
    for (const p of this.input.placements) {
      const f = byId.get(p.shardId)!;
      shardLoad.set(p.shardId, f.trustworthy ? f.steps.map((st) => atBound(st, this.s.bound)) : new Array<number>(this.s.horizonSteps).fill(f.observedLoad));
    }
    const names = [...new Set(this.input.placements.map((p) => p.table))].sort();
    return names.map((table) => {
      const shards = this.input.placements.filter((p) => p.table === table);
      const f = forecasts.get(table);
      const perStep = f?.trustworthy
        ? f.steps.map((st) => atBound(st, this.s.bound))
        : shards.reduce((acc, p) => acc.map((v, i) => v + shardLoad.get(p.shardId)![i]!), new Array<number>(this.s.horizonSteps).fill(0));
      const peakLoad = Math.max(...perStep);
      return { table, peakLoad: round4(peakLoad), shards: shards.length, neededShards: maxCap > 0 ? Math.max(1, Math.ceil(peakLoad / (t * maxCap) - EPS)) : shards.length };
    });
  }

  /** Drains and merges finish by the last step, so that the horizon shows the shard on its target. */
  private lastStepStart(): number {
    return (this.s.horizonSteps - 1) * this.s.stepSeconds;
  }

  private standbyNodes() {
    return [...this.fleet.nodes.values()].filter((n) => n.state === 'standby' && n.node.reachable).sort((a, b) => b.node.capacity - a.node.capacity || a.node.id - b.node.id);
  }

  private record(action: WithoutId<PlanAction>): string {
    const id = this.nextId();
    const full = { ...action, id } as PlanAction;
    this.actions.push(full);
    if (full.kind === 'move' || full.kind === 'split' || full.kind === 'merge') {
      this.movedOff.set(full.fromNodeId, [...(this.movedOff.get(full.fromNodeId) ?? []), id]);
    }
    return id;
  }

  private nextId(): string {
    return `a${this.actions.length + 1}`;
  }

  private afterActivations(nodeIds: number[]): string[] {
    return [...new Set(nodeIds.map((id) => this.activation.get(id)).filter((x): x is string => x !== undefined))];
  }

  private startBy(option: Option): number {
    const { start, seconds } = option.transfer;
    return option.cls === 0 ? Math.max(start, option.deadline - seconds) : start;
  }

  /** `reactive`: the overload relieved was planned on observed load (see MoveAction.reactive); said only with startsInPeak. */
  private timing(option: Option, reactive: boolean): { startAt: string; startBy: string; finishAt: string; etaSeconds: number; startsInPeak: boolean; reactive?: boolean; late: boolean } {
    const { start, seconds } = option.transfer;
    return {
      startAt: this.iso(start),
      startBy: this.iso(this.startBy(option)),
      finishAt: this.iso(start + seconds),
      etaSeconds: Math.round(seconds),
      startsInPeak: option.cls === 2,
      ...(option.cls === 2 ? { reactive } : {}),
      late: option.cls === 1,
    };
  }

  private benefit(option: Option, nodeId: number): Benefit {
    const before = Math.max(...this.without.get(nodeId)!);
    const after = Math.max(...this.fleet.placedUtil(nodeId));
    const points = option.trial.benefit;
    return {
      overloadPointSteps: round4(points),
      peakBefore: round4(before),
      peakAfter: round4(after),
      summary: `removes ${fmt(points)} utilisation-point·steps over target; ${this.fleet.node(nodeId).node.name} peak ${pct(before)} → ${pct(after)}`,
    };
  }

  private peakOf(nodeId: number): [number, number] {
    const util = this.fleet.placedUtil(nodeId);
    const peak = Math.max(...util);
    return [util.indexOf(peak), peak];
  }

  private basis(nodeId: number, moving?: Unit): string {
    const fallback = this.fleet.unitsOn(nodeId).filter((u) => u.fallback);
    const bound = this.boundLabel();
    if (fallback.length === 0 && !moving?.fallback) return bound;
    const which = [...fallback, ...(moving?.fallback && !fallback.includes(moving) ? [moving] : [])].map((u) => this.label(u)).join(', ');
    return `${bound}, observed load for ${which} (no trustworthy forecast: reactive)`;
  }

  private boundLabel(): string {
    return this.s.bound === 'upper95' ? '95% bound' : this.s.bound === 'upper80' ? '80% bound' : 'point forecast';
  }

  private label(unit: Unit): string {
    return unit.shardIds.length === 1 ? `shard ${unit.shardIds[0]}` : `shards ${unit.shardIds.join(', ')} (colocated)`;
  }

  private iso(seconds: number): string {
    return new Date(this.asOfMs + Math.round(seconds * 1000)).toISOString();
  }

  private hhmm(seconds: number): string {
    return this.iso(seconds).slice(11, 16);
  }
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

function cheapest(options: Option[]): Option {
  return options.reduce((a, b) => (b.cost < a.cost - EPS ? b : a));
}

function lexLess(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return false;
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

function pct(x: number): string {
  return `${Math.round(x * 100)}%`;
}

function fmt(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toPrecision(4).replace(/\.?0+$/, '');
}

function size(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${Math.round(bytes / 1e6)} MB`;
}

function eta(seconds: number): string {
  return seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}
