/**
 * Plans in the catalog (migrations/0013_planning.sql): each plan as the planner returned it, its
 * actions' progress (planned → waiting → started → done | failed | skipped | cancelled; dry-run),
 * and the rebalancer's pause switch.
 */
import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import type { Plan, PlanAction } from './types.js';

export type PlanTrigger = 'schedule' | 'operator' | 'drain' | 'replan';
export const ACTION_STATES = ['planned', 'dry-run', 'waiting', 'started', 'done', 'failed', 'skipped', 'cancelled'] as const;
export type ActionState = (typeof ACTION_STATES)[number];

export interface StoredPlan {
  id: number;
  createdAt: Date;
  dryRun: boolean;
  trigger: PlanTrigger;
  workflowId: string | null;
  plan: Plan;
  actions: ActionProgress[];
}

export interface ActionProgress {
  actionId: string;
  kind: PlanAction['kind'];
  startAt: Date;
  startBy: Date;
  state: ActionState;
  workflowId: string | null;
  outcome: string | null;
  updatedAt: Date;
}

/** Stores a plan and one progress row per action (dry-run ones as such); returns its id. */
export async function storePlan(db: Queryable, plan: Plan, meta: { dryRun: boolean; trigger: PlanTrigger; workflowId: string | null }): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    'insert into shardcast.plans (as_of, dry_run, workflow_id, trigger, plan) values ($1, $2, $3, $4, $5::jsonb) returning id::text',
    [plan.asOf, meta.dryRun, meta.workflowId, meta.trigger, JSON.stringify(plan)],
  );
  const id = Number(rows[0]!.id);
  if (plan.actions.length > 0) {
    await db.query(
      `insert into shardcast.plan_actions (plan_id, action_id, kind, start_at, start_by, state)
       select $1, a, k, s::timestamptz, b::timestamptz, $6 from unnest($2::text[], $3::text[], $4::text[], $5::text[]) as t(a, k, s, b)`,
      [id, plan.actions.map((a) => a.id), plan.actions.map((a) => a.kind), plan.actions.map((a) => a.startAt), plan.actions.map((a) => a.startBy), meta.dryRun ? 'dry-run' : 'planned'],
    );
  }
  return id;
}

/** Records an action's progress; a retried call writes the same. */
export async function markAction(db: Queryable, planId: number, actionId: string, state: ActionState, detail: { workflowId?: string; outcome?: string } = {}): Promise<void> {
  if (!ACTION_STATES.includes(state)) throw new InvalidInputError(`action state must be one of ${ACTION_STATES.join(', ')}, got ${JSON.stringify(state)}`);
  await db.query(
    `update shardcast.plan_actions set state = $3, workflow_id = coalesce($4, workflow_id), outcome = coalesce($5, outcome), updated_at = now()
      where plan_id = $1 and action_id = $2`,
    [planId, actionId, state, detail.workflowId ?? null, detail.outcome ?? null],
  );
}

interface PlanRow {
  id: string;
  created_at: Date;
  dry_run: boolean;
  trigger: PlanTrigger;
  workflow_id: string | null;
  plan: Plan;
}

/** The newest stored plans (newest first), or the one with `id`. */
export async function storedPlans(db: Queryable, options: { id?: number; limit?: number } = {}): Promise<StoredPlan[]> {
  const { rows } = await db.query<PlanRow>(
    `select id::text, created_at, dry_run, trigger, workflow_id, plan from shardcast.plans where ($1::bigint is null or id = $1) order by created_at desc, id desc limit $2`,
    [options.id ?? null, options.limit ?? 1],
  );
  if (options.id !== undefined && rows.length === 0) throw new NotFoundError(`there is no plan ${options.id}`);
  const ids = rows.map((r) => r.id);
  const actions = await db.query<{ plan_id: string; action_id: string; kind: PlanAction['kind']; start_at: Date; start_by: Date; state: ActionState; workflow_id: string | null; outcome: string | null; updated_at: Date }>(
    'select plan_id::text, action_id, kind, start_at, start_by, state, workflow_id, outcome, updated_at from shardcast.plan_actions where plan_id = any($1::bigint[]) order by start_at, action_id',
    [ids],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    createdAt: r.created_at,
    dryRun: r.dry_run,
    trigger: r.trigger,
    workflowId: r.workflow_id,
    plan: r.plan,
    actions: actions.rows
      .filter((a) => a.plan_id === r.id)
      .map((a) => ({ actionId: a.action_id, kind: a.kind, startAt: a.start_at, startBy: a.start_by, state: a.state, workflowId: a.workflow_id, outcome: a.outcome, updatedAt: a.updated_at })),
  }));
}

/**
 * Actions a replanning round left started (a movement still running when the round ended) whose
 * movement has finished since: recorded as done, failed or cancelled with the movement's state.
 * The movement is the first one of the action's workflow id started after the plan was stored (a
 * shard's movement workflow id is reused, one run at a time). Returns how many were settled.
 */
export async function settleStartedActions(db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `update shardcast.plan_actions a
        set state = m.state, updated_at = now(),
            outcome = coalesce(a.outcome || '; ', '') || 'then ' || m.state || ' at ' || to_char(m.finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
       from (select s.plan_id, s.action_id, m.state, m.finished_at
               from shardcast.plan_actions s
               join shardcast.plans p on p.id = s.plan_id
               cross join lateral (select m.state, m.finished_at from shardcast.movements m
                                    where m.workflow_id = s.workflow_id and m.started_at >= p.created_at order by m.started_at limit 1) m
              where s.state = 'started' and s.workflow_id is not null and m.state <> 'running') m
      where a.plan_id = m.plan_id and a.action_id = m.action_id`,
  );
  return rowCount ?? 0;
}

/** Whether a plan was stored within the last `seconds`. */
export async function planStoredWithin(db: Queryable, seconds: number): Promise<boolean> {
  const { rows } = await db.query("select 1 from shardcast.plans where created_at > now() - make_interval(secs => $1) limit 1", [seconds]);
  return rows.length > 0;
}

export async function rebalancePaused(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ paused: boolean }>('select paused from shardcast.rebalance_control');
  return rows[0]?.paused ?? false;
}

export async function setRebalancePaused(db: Queryable, paused: boolean): Promise<void> {
  await db.query('update shardcast.rebalance_control set paused = $1, changed_at = now()', [paused]);
}
