import { activityInfo } from '@temporalio/activity';
import { clockSeconds } from '../src/clock.js';
import { addNode, checkNodeReachable, getNodeByName, removeUnusedNode, setNodeState, shardsOnNode, type NodeRecord, type NodeState } from '../src/catalog/nodes.js';
import { AlreadyExistsError, InvalidInputError, NotFoundError } from '../src/errors.js';
import { isExternal, PROVISIONED_NODE_ID, provisionNode, releaseNode, type NodeRequest, type ProvisionerConfig } from '../src/planning/provisioner.js';
import { CapacityUnknownError, gatherPlanInput } from '../src/planning/inputs.js';
import { planRebalance } from '../src/planning/planner.js';
import { markAction, planStoredWithin, rebalancePaused, settleStartedActions, storePlan, type ActionState } from '../src/planning/store.js';
import type { PlanAction } from '../src/planning/types.js';
import { loadSplitsFor, planIsolation, REBALANCE_TENANT_WINDOW_MS, tenantsToIsolate, type IsolationPlan, type LoadSplits } from '../src/profiling/tenants.js';
import type { RebalanceAction, RebalanceInput, RebalancePlanned } from '../workflows/messages.js';
import type { ActivityDeps } from './index.js';
import { failpoint } from '../src/failpoints.js';
import { rangeSplitsFor } from '../src/movement/range-splits.js';
import { run } from './failures.js';
import { whileHeartbeating } from './heartbeat.js';

/**
 * A planned action with node names for ids (the movement workflows take names), nothing else of the
 * catalog; the activation of the node a provisioner would make says what to ask it for.
 */
function toWorkflowAction(a: PlanAction, nodes: Map<number, Pick<NodeRecord, 'name' | 'region' | 'zone' | 'capacity'>>, provisioner: ProvisionerConfig | undefined): RebalanceAction {
  const name = (id: number) => nodes.get(id)?.name ?? `#${id}`;
  const base = { id: a.id, kind: a.kind, startAt: a.startAt, startBy: a.startBy, after: a.after, reason: a.reason };
  if (a.kind === 'activate' && a.nodeId === PROVISIONED_NODE_ID && isExternal(provisioner)) {
    const slot = nodes.get(a.nodeId);
    const request = { ...(slot?.region ? { region: slot.region } : {}), ...(slot?.zone ? { zone: slot.zone } : {}), ...(slot?.capacity ? { capacity: slot.capacity } : {}) };
    return { ...base, shardIds: [], node: name(a.nodeId), provision: { ...request, timeoutSeconds: provisioner.timeoutSeconds ?? 600 } };
  }
  switch (a.kind) {
    case 'move':
      return { ...base, shardIds: a.shardIds, node: name(a.toNodeId) };
    case 'split':
      return { ...base, shardIds: a.shardIds, pieceNodes: a.pieceNodeIds.map(name) };
    case 'merge':
      return { ...base, shardIds: a.shardIds, intoShardIds: a.intoShardIds, node: name(a.toNodeId) };
    default:
      return { ...base, shardIds: [], node: name(a.nodeId) };
  }
}

export function createPlanningActivities(deps: ActivityDeps) {
  return {
    /**
     * Plans now and stores the plan: the forecasts, placements, capacities and history from the
     * catalog, the planner's actions with their reasons. A drain first sets its node draining (so the
     * planner empties it). Nothing is planned when no node's capacity is known (said in `skipped`).
     */
    async makeRebalancePlan(input: RebalanceInput): Promise<RebalancePlanned> {
      return run(async () => {
        const dryRun = input.dryRun;
        if (input.drainNode) {
          const node = await getNodeByName(deps.catalog, input.drainNode);
          if (!dryRun) await setNodeState(deps.catalog, node.id, 'draining', ['active', 'standby']);
          else if (node.state !== 'draining' && node.state !== 'active' && node.state !== 'standby') {
            throw new InvalidInputError(`node "${node.name}" is ${node.state}: there is nothing to drain`);
          }
        }
        // Movements an earlier round left running: their actions' outcomes, now that they are known.
        if (!dryRun) await settleStartedActions(deps.catalog);
        let gathered;
        try {
          gathered = await gatherPlanInput(deps.catalog, deps.nodePools, { settings: input.settings, provisioner: deps.provisioner });
        } catch (err) {
          if (err instanceof CapacityUnknownError) return { skipped: err.message, paused: false, feasible: true, actions: [], notes: [] };
          throw err;
        }
        if (input.drainNode && dryRun) {
          // A dry run changes nothing: the node is planned as if it were draining.
          for (const n of gathered.input.nodes) if (n.name === input.drainNode) n.state = 'draining';
        }
        const plan = planRebalance(gathered.input);
        plan.notes.push(...gathered.notes);
        const isolations = !dryRun && !input.drainNode && (input.isolateTenantShare ?? 0) > 0 ? await tenantsToIsolate(deps.catalog, plan, input.isolateTenantShare!) : [];
        // A replanning round with nothing to do leaves no plan behind (one every few minutes would bury the ones that act),
        // unless the last one stored is an hour old: the metrics and ShardcastNotPlanning read the latest plan.
        if (input.trigger === 'replan' && plan.actions.length === 0 && isolations.length === 0 && (await planStoredWithin(deps.catalog, clockSeconds(3600)))) {
          return { skipped: 'nothing to do this round', paused: false, feasible: plan.feasible, actions: [], notes: plan.notes };
        }
        const info = activityInfo();
        const planId = await storePlan(deps.catalog, plan, { dryRun, trigger: input.trigger, workflowId: info.workflowExecution?.workflowId ?? null });
        const nodes = new Map(gathered.input.nodes.map((n) => [n.id, n]));
        return {
          planId,
          paused: await rebalancePaused(deps.catalog),
          feasible: plan.feasible,
          actions: plan.actions.map((a) => toWorkflowAction(a, nodes, deps.provisioner)),
          notes: plan.notes,
          ...(isolations.length > 0 ? { isolations } : {}),
          ...(dryRun ? { skipped: 'dry run: planned and stored, nothing started' } : {}),
        };
      });
    },

    /** The splits that isolate a key (src/profiling/tenants.ts), checked against the catalog; bad input is non-retryable. */
    async planKeyIsolation(input: { table: string; key: string; targetNode?: string }): Promise<IsolationPlan> {
      return run(() => planIsolation(deps.catalog, input, deps.planner));
    },

    /**
     * Where a shard's split into `pieces` (2, or successive halvings) is made: a hash shard where each
     * piece carries even load (the routers' profile over the last 15 minutes; null: the middles); a
     * range shard at its rows' quantiles moved to logical boundaries (movement/range-splits.ts; null
     * when it has too few distinct keys to cut).
     */
    async splitPointsByLoad(input: { shardId: number; pieces: number }): Promise<LoadSplits | null> {
      return run(async () => {
        const range = await rangeSplitsFor(deps.catalog, deps.nodePools, input.shardId, input.pieces);
        if (range !== null) return range ? { points: range.points, shares: range.shares, heavyShare: 0, basis: 'rows' as const, boundaries: range.boundaries } : null;
        return (await loadSplitsFor(deps.catalog, input.shardId, input.pieces, REBALANCE_TENANT_WINDOW_MS)) ?? null;
      });
    },

    async markPlanAction(input: { planId: number; actionId: string; state: ActionState; workflowId?: string; outcome?: string }): Promise<void> {
      return run(() => markAction(deps.catalog, input.planId, input.actionId, input.state, input));
    },

    /** Whether the operator paused the rebalancer (`shardcast rebalance pause`), kept in the catalog across runs. */
    async isRebalancePaused(): Promise<boolean> {
      return run(() => rebalancePaused(deps.catalog));
    },

    /**
     * A node's life-cycle step. Activation checks the node answers and can host shards first: a node
     * that does not stays standby (nothing half done). Retiring needs the node empty.
     */
    async setNodeLifecycle(input: { node: string; to: NodeState }): Promise<string> {
      return run(() => whileHeartbeating(`making ${input.node} ${input.to}`, async () => {
        const node = await getNodeByName(deps.catalog, input.node);
        if (input.to === 'active') {
          await checkNodeReachable(node);
          await setNodeState(deps.catalog, node.id, 'active', ['standby', 'draining']);
          return `${node.name} is active`;
        }
        if (input.to === 'draining') {
          await setNodeState(deps.catalog, node.id, 'draining', ['active', 'standby']);
          return `${node.name} is draining`;
        }
        if (input.to === 'retired') {
          const held = await shardsOnNode(deps.catalog, node.id);
          if (held > 0) throw new InvalidInputError(`node "${node.name}" still holds ${held} shard(s): it cannot be retired`);
          await setNodeState(deps.catalog, node.id, 'retired', ['draining', 'standby']);
          return `${node.name} is retired`;
        }
        throw new InvalidInputError(`a node cannot be made ${input.to} by the rebalancer`);
      }));
    },

    /**
     * Scale-out's first step: asks the provisioner (planning.provisioner) for a node and registers it,
     * standby. Returns its name only: its DSN goes to the catalog, never into the workflow's history.
     * A retry that finds the node it registered (same name, same DSN) goes on with it. Heartbeats
     * while it waits for the provisioner: a dead worker's attempt is retried within seconds.
     */
    async provisionNode(request: NodeRequest): Promise<{ node: string }> {
      return run(() => whileHeartbeating('waiting for the provisioner', async () => {
        const made = await provisionNode(deps.provisioner ?? 'standby', request);
        const spec = { name: made.name, dsn: made.dsn, region: made.region ?? request.region, zone: made.zone ?? request.zone, capacity: made.capacity, state: 'standby' as const };
        try {
          // Registered even when it does not answer yet: activation checks that, and compensation removes it.
          await addNode(deps.catalog, spec, { unreachableOk: true });
        } catch (err) {
          if (!(err instanceof AlreadyExistsError)) throw err;
          const existing = await getNodeByName(deps.catalog, made.name).catch(() => undefined);
          if (!existing) throw err; // its database is registered under another name
          if (existing.dsn !== made.dsn || existing.state !== 'standby') {
            throw new InvalidInputError(`provisioner: it answered with node "${made.name}", which is already registered (${existing.state}) and is not the node of this request`);
          }
        }
        await failpoint('provisionNode.registered'); // tests: the reply lost after the registration committed
        return { node: made.name };
      }));
    },

    /**
     * Scale-out's compensation: the node a failed scale-out registered is removed from the catalog (only
     * if it is not active, holds nothing and took part in no movement; otherwise it is left as it is,
     * and said so), then the provisioner is told to release what it made for the request.
     */
    async releaseProvisionedNode(input: { request: NodeRequest; node?: string }): Promise<string> {
      return run(() => whileHeartbeating('releasing the node', async () => {
        const said: string[] = [];
        if (input.node) {
          const node = await getNodeByName(deps.catalog, input.node).catch((err: unknown) => {
            if (err instanceof NotFoundError) return undefined;
            throw err;
          });
          if (node && (await removeUnusedNode(deps.catalog, node.id))) said.push(`${node.name} removed from the catalog`);
          else if (node) said.push(`${node.name} left ${node.state}: it is active, holds shards or took part in a movement`);
        }
        if (isExternal(deps.provisioner)) {
          await releaseNode(deps.provisioner, { ...input.request, ...(input.node ? { name: input.node } : {}) });
          said.push(`the provisioner was told to release request ${input.request.requestId}`);
        }
        return said.join('; ');
      }));
    },

    /** How many shards a node holds now (a drain is done at 0). */
    async shardsOnNode(node: string): Promise<number> {
      return run(async () => shardsOnNode(deps.catalog, (await getNodeByName(deps.catalog, node)).id));
    },
  };
}
