import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { PlanInput } from '../src/planning/types.js';
import type { MovementSettings } from './describe.js';
import type { z } from 'zod';
import type { TableSpec } from '../src/catalog/tables.js';
import type { restoreInputSchema } from '../src/inputs.js';
import type { GovernorSettings } from '../src/movement/governor.js';
import type { MovementOperation, MovementPlan, MovementRequest } from '../src/movement/plan.js';

export interface RetrySettings {
  maximumAttempts: number;
  initialIntervalMs: number;
}

export interface CreateTableInput {
  spec: TableSpec;
  /** Retries of the per-node DDL before a node counts as failed for good. */
  nodeRetry: RetrySettings;
}

export interface CreateTableResult {
  table: string;
  tableId: number;
  group: string;
  newGroup: boolean;
  shards: number;
  nodes: string[];
  mapVersion: number;
}

export type CreateTablePhase = 'register' | 'create-on-nodes' | 'activate' | 'compensate' | 'done' | 'failed';

export interface CreateTableProgress {
  phase: CreateTablePhase;
  nodesDone: string[];
  nodesFailed: string[];
}

export const createTableProgressQuery = defineQuery<CreateTableProgress>('progress');

export type { MovementOperation };

export interface MoveShardInput extends MovementRequest {
  /** The cutover waits until the replication lag is at most this many bytes. */
  catchUpLagBytes: number;
  pollSeconds: number;
  approvalRequired: boolean;
  /** Approval is also required for a shard larger than this … */
  approvalOverBytes?: number;
  /** … or when the cutover would fall in these UTC hours, [from, to) (wrapping past midnight). */
  approvalHoursUtc?: [number, number];
  approvalTimeoutSeconds?: number;
  approvalTimeoutAction?: 'approve' | 'reject';
  /** How long the fenced source copy is kept after the cutover. */
  graceSeconds: number;
  /** History length after which the copy loop continues as a new run (default 10,000 events). */
  historyLimit?: number;
  /**
   * Set by continue-as-new: the plan (none yet while queued) and progress of the run before; `forward`
   * when it was finishing a committed switch (the new run only goes on finishing it); the governor's baselines.
   */
  resume?: {
    plan?: MovementPlan;
    progress: MovementProgress;
    forward?: { failures: number; lastError: string; reversible?: boolean };
    baselinesMs?: number[];
  };
  /** Verify phase: rows per compared chunk (default 20,000) and seconds per verify activity between progress reports (default 10). */
  verifyChunkRows?: number;
  verifySliceSeconds?: number;
  /** Retries of each step before the movement fails and is undone (default: 10 attempts, up to 30 s apart). */
  retry?: { maximumAttempts: number; initialIntervalMs: number; maximumIntervalMs?: number };
  /** The copy governor for this movement, over its defaults (src/movement/governor.ts; config movement.governor.*). */
  governor?: Partial<GovernorSettings>;
}

export interface MoveShardResult {
  movementId: string;
  operation: MovementOperation;
  shardId: number;
  /** Source and target nodes (comma-separated for a split's targets or a merge's sources). */
  source: string;
  target: string;
  /** The shards that exist afterwards in place of the old ones (the same shard for a move). */
  shards: number[];
  cutoverBlockedMs: number;
  /**
   * The fenced copy left on the source node(s) after the switch, and when it goes (ISO time): the
   * movement completes at the switch and a child workflow drops the copy after the grace period.
   */
  fencedCopy: { nodes: string; dropAt: string; workflowId: string | null };
  /** The movement that undoes this one (`shardcast move --reverse`). */
  reverse: ReverseMovement;
  /** A move back: a cutover only (within the grace period of the move it reversed), or a full move (and why). */
  movedBack?: { of: string; cutoverOnly: boolean; why?: string };
}

/** Undo after a cutover is a movement the other way: a move back, a merge of a split's halves, a split of a merge. */
export type ReverseMovement =
  | { operation: 'move'; shardId: number; targetNode: string; /** The move being reversed: within its grace period, the move back is a cutover only. */ of?: string }
  | { operation: 'merge'; shardIds: [number, number]; targetNode: string }
  | { operation: 'split'; shardId: number; splitTargets: [string, string]; splitAt: string };

export type MovementPhase =
  | 'queued'
  | 'prepare'
  | 'copy'
  | 'catch-up'
  | 'verify'
  | 'approval'
  | 'cutover'
  | 'cleanup'
  | 'done'
  | 'compensate'
  | 'cancelled'
  | 'rejected'
  | 'failed';

export interface MovementProgress {
  phase: MovementPhase;
  paused: boolean;
  approved: boolean;
  /** Why the movement waits for approval, when it does. */
  approvalReason: string | null;
  rowsCopied: number;
  bytesCopied: number;
  lagBytes: number | null;
  tablesReady: number;
  tables: number;
  etaSeconds: number | null;
  /** While queued: the node at its movement limit, how many movements it runs, the limit, and since when (ISO). */
  queued?: QueuedFor | null;
  /** How long the verify phase held writes to the shard, once it ran (the longest of its snapshot moments). */
  verifyBlockedMs?: number;
  /** Verify phase: rows compared so far, and an estimate of the rows to compare (the ETA is `etaSeconds`). */
  rowsVerified?: number;
  rowsToVerify?: number;
  /** A move back: a cutover only, or a full move and why. */
  movedBack?: MoveShardResult['movedBack'];
  /** Time the copy governor held the copy or apply back to spare the foreground, in ms. */
  throttledMs?: number;
  /** A move's own copy has finished (its subscription streams). */
  copyDone?: boolean;
}

/** Why a movement waits for a slot: a node it involves already runs `running` movements of `limit`. */
export interface QueuedFor {
  node: string;
  running: number;
  limit: number;
  since: string;
}

/** Input of the child workflow that drops a movement's fenced source copies once the grace period is over. */
export interface DropFencedCopyInput {
  movementId: string;
  /** What the movement was, for the summary ("move shard 17 → node-3"). */
  what: string;
  copies: FencedCopy[];
  /** When to drop them (ISO time). */
  dropAt: string;
  /** A move's copy is kept in sync from the new placement until then (reverse replication). */
  reverse?: Omit<ReverseFollow, 'copy'>;
}

/** A reverse stream: the move's, from its new placement (by node id) into its fenced copy. */
export interface ReverseFollow {
  movementId: string;
  placementNodeId: number;
  placementNode: string;
  copy: FencedCopy;
}

export interface ReverseFollowResult {
  /** following: in sync as of now; gone: the fenced copy is gone (moved back, dropped); lost: the stream broke (dropped). */
  state: 'following' | 'gone' | 'lost';
  applied: number;
  lagBytes: number | null;
}

/** The drop-fenced-copy workflow's `progress`: whether the copy follows the new placement, and how far behind. */
export interface FencedCopyProgress {
  dropAt: string;
  reverse: 'following' | 'gone' | 'lost' | 'off';
  /** WAL of the new placement not yet applied to the fenced copy, in bytes (null before the first measure). */
  reverseLagBytes: number | null;
  changesApplied: number;
  dropped: boolean;
}

/** A fenced source copy: by node id and name (no DSN: the activity reads it from the catalog). */
export interface FencedCopy {
  nodeId: number;
  node: string;
  schema: string;
  /** The shard it was a copy of (the drop is refused where the catalog places that shard on the same database). */
  shardId: number;
}

export const movementProgressQuery = defineQuery<MovementProgress>('progress');
export const fencedCopyProgressQuery = defineQuery<FencedCopyProgress>('progress');
export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const approveSignal = defineSignal('approve');
export const rejectSignal = defineSignal('reject');

export interface CollectStatsInput {
  intervalSeconds: number;
  retentionDays: number;
  /** Rounds before the run continues as new (default 500). */
  roundsPerRun?: number;
}

export interface RetrainInput {
  /** Days of history each series is trained on. */
  trainingDays: number;
  /** Fitting seconds per model and series (half back-test, half final fit). */
  budgetSeconds: number;
  /** Hyperparameter search seconds per series for the models that have one (absent: none, as before this field). */
  searchSeconds?: number;
  /** Series per activity, and activities running at once (spread over the workers of the queue). */
  batchSize: number;
  parallelBatches: number;
}

export interface ForecastRunInput {
  batchSize: number;
  parallelBatches: number;
  /** The hand-over to the rebalancer once the forecasts are stored (the configuration's planning.mode): absent or 'off', none. */
  rebalance?: Omit<RebalanceInput, 'dryRun' | 'trigger' | 'drainNode'> & { mode: 'off' | 'dry-run' | 'on' };
}

export type { ForecastingSummary } from '../src/forecasting/runs.js';

/** Input of the isolateKey workflow: a hot tenant's key split off into a shard of its own (src/profiling/tenants.ts). */
export interface IsolateKeyInput {
  table: string;
  key: string;
  /** Node of the key's piece; default: the least-loaded other active node. */
  targetNode?: string;
  /** Movement settings of its splits (the configuration's `movement` section: its approval policy applies). */
  movement: MovementSettings;
  workflowIdPrefix?: string;
}

export interface IsolateKeyResult {
  table: string;
  key: string;
  /** The shard that now holds the key alone, and its node. */
  shardId: number;
  node: string;
  /** What it covers: "hash [h, h]" or "range [k, k + 1)". */
  piece: string;
  /** Each split's outcome, in order. */
  splits: string[];
}

/** Input of the rebalance workflow (DESIGN §5): plan now, then carry the plan out at its actions' start times. */
export interface RebalanceInput {
  /** Plan and store, start nothing. */
  dryRun: boolean;
  /** What started it: after the hourly forecast ('schedule', which obeys planning.mode), the replanning schedule ('replan'), an operator, or `nodes drain`. */
  trigger: 'schedule' | 'operator' | 'drain' | 'replan';
  /**
   * Carry out only the actions due to start within this many seconds of planning (a receding
   * horizon: the replanning schedule plans again by then, on what has happened since); the others
   * are recorded skipped. Without it every action is carried out at its time.
   */
  startWithinSeconds?: number;
  /**
   * Tenant isolation (planning.isolateTenantShare): a key taking at least this share of its shard's
   * accesses, on a node predicted over target, is split off by an isolateKey workflow before its
   * shard is planned again. Absent or 0: none.
   */
  isolateTenantShare?: number;
  /** `nodes drain`: the node to empty (set draining first; its shards are moved off). */
  drainNode?: string;
  /** Movement settings of the movements it starts (the configuration's `movement` section: its approval policy applies). */
  movement: MovementSettings;
  /** Prepended to the ids of the movement workflows it starts. */
  workflowIdPrefix?: string;
  /** Planner settings over the defaults (the configuration's `planning.settings`). */
  settings?: PlanInput['settings'];
}

/** One planned action as the workflow carries it out: nodes by name (a movement request names nodes), no connection details. */
export interface RebalanceAction {
  id: string;
  kind: 'move' | 'split' | 'merge' | 'activate' | 'drain' | 'retire';
  startAt: string;
  startBy: string;
  after: string[];
  reason: string;
  shardIds: number[];
  /** move, merge: the target; split: the nodes of the two halves; node actions: the node. */
  node?: string;
  pieceNodes?: string[];
  intoShardIds?: number[];
  /** activate: the node does not exist yet; scale-out asks the provisioner for it (its name comes back). */
  provision?: { region?: string; zone?: string; capacity?: number; timeoutSeconds: number };
}

export interface RebalancePlanned {
  /** Why nothing was planned (planning off, no capacity known), if so. */
  skipped?: string;
  planId?: number;
  paused: boolean;
  feasible: boolean;
  actions: RebalanceAction[];
  notes: string[];
  /** Hot tenants to isolate this round (their shards are left out of the plan's actions). */
  isolations?: Array<{ table: string; key: string; shardId: number; node: string; share: number }>;
}

export interface RebalanceActionOutcome {
  id: string;
  /** 'started': a movement still running when its replanning round ended (it goes on; a later round records its outcome). */
  state: 'done' | 'failed' | 'skipped' | 'cancelled' | 'dry-run' | 'started';
  outcome: string;
  workflowId?: string;
}

export interface RebalanceResult {
  planId: number | null;
  dryRun: boolean;
  skipped?: string;
  actions: RebalanceActionOutcome[];
  notes: string[];
}

export interface RebalanceProgress {
  planId: number | null;
  paused: boolean;
  actions: Array<{ id: string; kind: RebalanceAction['kind']; state: 'planned' | 'waiting' | 'started' | RebalanceActionOutcome['state']; startAt: string; outcome?: string }>;
}

export const rebalanceProgressQuery = defineQuery<RebalanceProgress>('progress');

export interface ScaleOutInput {
  /** What is asked of the provisioner (no credential: the node's DSN never enters the workflow). */
  request: { requestId: string; region?: string; zone?: string; capacity?: number; reason: string };
  /** The provisioner's own time limit (planning.provisioner.timeoutSeconds): its activity gets a minute more. */
  provisionTimeoutSeconds: number;
  /** Attempts at reaching the new node before the scale-out gives up and compensates (default 5, ~15 s). */
  activationAttempts?: number;
}

export interface ScaleOutResult {
  node: string;
  outcome: string;
}

/** Input of dropDistributedTable (`shardcast tables drop`): the table, and the movements' approval policy. */
export interface DropTableInput {
  table: string;
  approvalRequired: boolean;
  /** Approval also for a table larger than this (bytes over all its shards) … */
  approvalOverBytes?: number;
  /** … or when the drop would happen in these UTC hours, [from, to). */
  approvalHoursUtc?: [number, number];
  approvalTimeoutSeconds?: number;
  approvalTimeoutAction?: 'approve' | 'reject';
}

export interface DropTableResult {
  table: string;
  group: string;
  /** The group's last table: its shards, schemas and the group went too. */
  groupDropped: boolean;
  shards: number;
  nodes: string[];
  bytes: number;
  /** Shard schemas left on a node because they still held something else (not Shardcast's to drop). */
  schemasLeft: string[];
  mapVersion: number;
}

export type DropTablePhase = 'check' | 'approval' | 'drop-on-nodes' | 'unregister' | 'done' | 'rejected' | 'failed';

export interface DropTableProgress {
  phase: DropTablePhase;
  approved: boolean;
  approvalReason: string | null;
  nodesDone: string[];
}

export const dropTableProgressQuery = defineQuery<DropTableProgress>('progress');

// ------------------------------------------------------------------------------------ restore

export type RestoreInput = z.infer<typeof restoreInputSchema>;

export type RestorePhase = 'check' | 'approval' | 'create-shards' | 'import' | 'index' | 'verify' | 'publish' | 'done' | 'undo' | 'failed' | 'rejected';

export interface RestoreProgress {
  phase: RestorePhase;
  approved: boolean;
  /** The layout the restore creates (key, method, shards, nodes, reasons). */
  layout: RestoreInput['layout'];
  rowsExpected: number;
  rowsImported: number;
  units: number;
  unitsDone: number;
  /** Rows committed per shard id. */
  perShard: Record<string, number>;
  /** Shard id → node name, once the shards exist. */
  shardNodes: Record<string, string>;
  error: string | null;
  /** When each phase began (workflow clock, epoch ms), in order. */
  phaseStarts?: Array<{ phase: RestorePhase; at: number }>;
}

export interface RestoreResult {
  table: string;
  tableId: number;
  rows: number;
  shards: number;
  nodes: string[];
  perShard: Record<string, number>;
  checksum: string;
  mapVersion: number;
  /** How long each phase took, in order (workflow clock; `approval` is the wait for an approve). */
  phases?: Array<{ phase: RestorePhase; seconds: number }>;
}

export const restoreProgressQuery = defineQuery<RestoreProgress>('progress');
