import { z } from 'zod';
import { KEY_TYPES } from './catalog/keys.js';
import { InvalidInputError } from './errors.js';

/**
 * The inputs of every workflow, as zod schemas shared by the workflows (which parse their input at
 * start and fail at once, non-retryable, naming the field) and the client (which checks the same
 * before starting anything, so that bad input is one line and no failed run). Pure: the workflow
 * sandbox bundles it.
 */

const POSITIVE_INT = 'expected a positive integer';
const positiveInt = () => z.number({ error: POSITIVE_INT }).int({ error: POSITIVE_INT }).min(1, { error: POSITIVE_INT }).max(Number.MAX_SAFE_INTEGER, { error: POSITIVE_INT });
const intBetween = (min: number, max: number) => {
  const e = `expected an integer from ${min} to ${max}`;
  return z.number({ error: e }).int({ error: e }).min(min, { error: e }).max(max, { error: e });
};
const numberBetween = (min: number, max: number, exclusiveMin = false) => {
  const e = `expected a number ${exclusiveMin ? 'above' : 'from'} ${min} ${exclusiveMin ? 'and at most' : 'to'} ${max}`;
  const n = z.number({ error: e });
  return (exclusiveMin ? n.gt(min, { error: e }) : n.min(min, { error: e })).max(max, { error: e });
};
const bool = () => z.boolean({ error: 'expected true or false' });
const text = (max: number) => z.string({ error: 'expected a string' }).max(max, { error: `expected at most ${max} characters` });

export const nodeNameSchema = z.string({ error: 'expected a node name' }).regex(/^[a-z][a-z0-9_-]{0,62}$/, { error: 'expected a node name (lower-case letters, digits, "-" or "_", starting with a letter)' });
export const movementIdSchema = z.string({ error: 'expected a movement id' }).regex(/^[a-z0-9_]{1,40}$/, { error: 'expected a movement id (1–40 lower-case letters, digits or underscores)' });
/** A table, column or group name: what `validateIdentifier` accepts (ASCII, so characters are bytes). */
export const identifierSchema = z
  .string({ error: 'expected an identifier' })
  .regex(/^(?!pg_|sc_)[a-z_][a-z0-9_]{0,62}$/, { error: 'expected a lower-case identifier (letters, digits, underscores; not starting with pg_ or sc_)' });
const shardSchemaNameSchema = z.string({ error: 'expected a shard schema name' }).regex(/^sc_s[1-9][0-9]{0,18}$/, { error: 'expected a shard schema name (sc_s<shard id>)' });
const int64Text = z.string({ error: 'expected an integer' }).regex(/^-?(0|[1-9][0-9]{0,18})$/, { error: 'expected a 64-bit integer in decimal' });
const workflowIdSchema = z.string({ error: 'expected a workflow id' }).min(1, { error: 'expected a workflow id' }).max(400, { error: 'expected at most 400 characters' });
const intervalMs = () => intBetween(1, 86_400_000);

export const retrySettingsSchema = z.object({ maximumAttempts: intBetween(1, 1000), initialIntervalMs: intervalMs() });

export const tableSpecSchema = z.object({
  name: identifierSchema,
  columns: text(100_000).refine((c) => c.trim() !== '', { error: 'column definitions are required' }),
  shardKey: identifierSchema,
  method: z.enum(['hash', 'range'], { error: 'expected hash or range' }).optional(),
  shardCount: intBetween(1, 4096).optional(),
  rangeBounds: z.array(text(1000)).min(2, { error: 'expected at least two bounds' }).max(4097, { error: 'expected at most 4097 bounds' }).optional(),
  colocateWith: identifierSchema.optional(),
  nodes: z.array(nodeNameSchema).max(1000).optional(),
});

export const createTableInputSchema = z.object({ spec: tableSpecSchema, nodeRetry: retrySettingsSchema });

// A plan as it travels through Temporal: nodes by id and name (no DSN), names derived from the ids.
const nodeRecordSchema = z.object({
  id: positiveInt(),
  name: nodeNameSchema,
  dsn: z.string(),
  region: z.string().nullable(),
  zone: z.string().nullable(),
  capacity: z.number().nullable(),
  state: z.enum(['active', 'standby', 'draining', 'retired']),
});
const shardRangeSchema = z.union([z.object({ hashMin: int64Text, hashMax: int64Text }), z.object({ rangeMin: text(1000), rangeMax: text(1000) })], {
  error: 'expected a hash range (hashMin, hashMax) or a key range (rangeMin, rangeMax)',
});
const replicationName = z.string().regex(/^sc_mv_[a-z0-9_]{1,40}$/, { error: 'expected a movement object name (sc_mv_<movement id>…)' });

const movePlanSchema = z.object({
  operation: z.literal('move'),
  movementId: movementIdSchema,
  shard: z.object({
    shardId: positiveInt(),
    schema: shardSchemaNameSchema,
    group: identifierSchema.optional(),
    tables: z.array(z.object({ name: identifierSchema, columns: text(100_000) })).max(1000),
  }),
  source: nodeRecordSchema,
  target: nodeRecordSchema,
  names: z.object({ publication: replicationName, subscription: replicationName, slot: replicationName, gid: replicationName }),
  bytes: intBetween(0, Number.MAX_SAFE_INTEGER),
  reverse: z.object({ of: movementIdSchema, fencedSchema: z.string().regex(/^sc_s[0-9]+_moved_[a-z0-9_]{1,40}$/, { error: 'expected a fenced schema name' }) }).optional(),
  reverseFallback: text(2000).optional(),
});

const reshardPlanSchema = z.object({
  operation: z.enum(['split', 'merge']),
  movementId: movementIdSchema,
  groupId: positiveInt(),
  groupName: identifierSchema,
  method: z.enum(['hash', 'range']),
  keyType: z.enum(KEY_TYPES),
  tables: z.array(z.object({ name: identifierSchema, columns: text(100_000), keyColumn: identifierSchema })).max(1000),
  sources: z
    .array(z.object({ shardId: positiveInt(), schema: shardSchemaNameSchema, node: nodeRecordSchema, range: shardRangeSchema, slot: replicationName, publication: replicationName, gid: replicationName }))
    .min(1)
    .max(2),
  targets: z.array(z.object({ shardId: positiveInt(), schema: shardSchemaNameSchema, node: nodeRecordSchema, range: shardRangeSchema })).min(1).max(2),
  catalogGid: replicationName,
  bytes: intBetween(0, Number.MAX_SAFE_INTEGER),
});

/** The names every value of a plan must have, given its ids: a plan whose names do not follow is refused. */
export const movementPlanSchema = z.union([movePlanSchema, reshardPlanSchema], { error: 'expected a movement plan' }).superRefine((plan, ctx) => {
  const base = `sc_mv_${plan.movementId}`;
  const expect = (ok: boolean, path: Array<string | number>, message: string) => {
    if (!ok) ctx.addIssue({ code: 'custom', path, message });
  };
  if (plan.operation === 'move') {
    expect(plan.shard.schema === `sc_s${plan.shard.shardId}`, ['shard', 'schema'], `expected sc_s${plan.shard.shardId}, the schema of shard ${plan.shard.shardId}`);
    for (const k of ['publication', 'subscription', 'slot', 'gid'] as const) expect(plan.names[k] === base, ['names', k], `expected ${base}, from the movement id`);
    if (plan.reverse) {
      const fenced = `${plan.shard.schema}_moved_${plan.reverse.of}`.slice(0, 63);
      expect(plan.reverse.fencedSchema === fenced, ['reverse', 'fencedSchema'], `expected ${fenced}`);
    }
    expect(plan.source.id !== plan.target.id, ['target', 'id'], 'expected a node other than the source');
    return;
  }
  expect(plan.catalogGid === base, ['catalogGid'], `expected ${base}, from the movement id`);
  expect(plan.operation === 'split' ? plan.sources.length === 1 && plan.targets.length === 2 : plan.sources.length === 2 && plan.targets.length === 1, ['sources'], `expected ${plan.operation === 'split' ? 'one source and two targets' : 'two sources and one target'}`);
  plan.sources.forEach((s, i) => {
    expect(s.schema === `sc_s${s.shardId}`, ['sources', i, 'schema'], `expected sc_s${s.shardId}, the schema of shard ${s.shardId}`);
    for (const k of ['slot', 'publication', 'gid'] as const) expect(s[k] === `${base}_${i}`, ['sources', i, k], `expected ${base}_${i}, from the movement id`);
    expect(('hashMin' in s.range) === (plan.method === 'hash'), ['sources', i, 'range'], `expected a ${plan.method} range`);
  });
  plan.targets.forEach((t, i) => {
    expect(t.schema === `sc_s${t.shardId}`, ['targets', i, 'schema'], `expected sc_s${t.shardId}, the schema of shard ${t.shardId}`);
    expect(('hashMin' in t.range) === (plan.method === 'hash'), ['targets', i, 'range'], `expected a ${plan.method} range`);
  });
});

const movementProgressSchema = z.looseObject({
  phase: z.enum(['queued', 'prepare', 'copy', 'catch-up', 'verify', 'approval', 'cutover', 'cleanup', 'done', 'compensate', 'cancelled', 'rejected', 'failed']),
  paused: bool(),
  approved: bool(),
});

export const moveShardInputSchema = z
  .object({
    movementId: movementIdSchema,
    workflowId: workflowIdSchema,
    operation: z.enum(['move', 'split', 'merge'], { error: 'expected move, split or merge' }).optional(),
    shardId: positiveInt(),
    targetNode: nodeNameSchema.optional(),
    splitTargets: z.tuple([nodeNameSchema, nodeNameSchema], { error: 'expected two node names' }).optional(),
    splitAt: text(1000).refine((s) => s.trim() !== '', { error: 'expected a split point' }).optional(),
    mergeWith: positiveInt().optional(),
    maxMovesPerNode: intBetween(1, 64),
    reverseOf: movementIdSchema.optional(),
    reverseFallback: bool().optional(),
    // -1: never close enough (tests hold a movement in catch-up).
    catchUpLagBytes: intBetween(-1, Number.MAX_SAFE_INTEGER),
    pollSeconds: numberBetween(0, 3600, true),
    approvalRequired: bool(),
    approvalOverBytes: intBetween(0, Number.MAX_SAFE_INTEGER).optional(),
    approvalHoursUtc: z.tuple([intBetween(0, 23), intBetween(0, 24)], { error: 'expected [from, to] UTC hours' }).optional(),
    approvalTimeoutSeconds: numberBetween(0, 30 * 86_400, true).optional(),
    approvalTimeoutAction: z.enum(['approve', 'reject'], { error: 'expected approve or reject' }).optional(),
    graceSeconds: intBetween(0, 30 * 86_400),
    historyLimit: intBetween(10, 1_000_000).optional(),
    resume: z
      .object({
        plan: movementPlanSchema.optional(),
        progress: movementProgressSchema,
        forward: z.object({ failures: intBetween(0, Number.MAX_SAFE_INTEGER), lastError: text(100_000), reversible: bool().optional() }).optional(),
      })
      .optional(),
    verifyChunkRows: intBetween(1, 10_000_000).optional(),
    verifySliceSeconds: numberBetween(0, 3600, true).optional(),
    retry: z.object({ maximumAttempts: intBetween(1, 1000), initialIntervalMs: intervalMs(), maximumIntervalMs: intervalMs().optional() }).optional(),
  })
  .superRefine((input, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    const op = input.operation ?? 'move';
    if (op === 'move' && input.targetNode === undefined && input.reverseOf === undefined) issue('targetNode', 'a move needs a target node');
    if (op === 'split' && input.splitTargets === undefined) issue('splitTargets', 'a split needs two target nodes');
    if (op === 'merge' && input.mergeWith === undefined) issue('mergeWith', 'a merge needs the shard it merges with');
    if (op === 'merge' && input.mergeWith === input.shardId) issue('mergeWith', `cannot merge shard ${input.shardId} with itself`);
    if (op !== 'split' && (input.splitTargets !== undefined || input.splitAt !== undefined)) issue(input.splitTargets !== undefined ? 'splitTargets' : 'splitAt', `only for a split, not a ${op}`);
    if (op !== 'merge' && input.mergeWith !== undefined) issue('mergeWith', `only for a merge, not a ${op}`);
    if (op !== 'move' && input.reverseOf !== undefined) issue('reverseOf', `only for a move, not a ${op}`);
    const plan = input.resume?.plan;
    if (plan) {
      const path = (p: string) => ['resume', 'plan', p];
      if (plan.movementId !== input.movementId) ctx.addIssue({ code: 'custom', path: path('movementId'), message: `expected ${input.movementId}, the movement's id` });
      if (plan.operation !== op) ctx.addIssue({ code: 'custom', path: path('operation'), message: `expected ${op}, the movement's operation` });
      const first = plan.operation === 'move' ? plan.shard.shardId : plan.sources[0]!.shardId;
      if (first !== input.shardId) ctx.addIssue({ code: 'custom', path: path(plan.operation === 'move' ? 'shard' : 'sources'), message: `expected shard ${input.shardId}, the movement's shard` });
    }
  });

const fencedCopySchema = z.object({ nodeId: positiveInt(), node: nodeNameSchema, schema: z.string().regex(/^sc_s[0-9]+_moved_[a-z0-9_]*$/, { error: 'expected a fenced shard schema name' }).max(63), shardId: positiveInt() });
const isoTime = z.string({ error: 'expected an ISO time' }).refine((s) => !Number.isNaN(Date.parse(s)), { error: 'expected an ISO time' });

export const dropFencedCopyInputSchema = z.object({
  movementId: movementIdSchema,
  what: text(1000),
  copies: z.array(fencedCopySchema).min(1, { error: 'expected at least one fenced copy' }).max(4),
  dropAt: isoTime,
  reverse: z.object({ movementId: movementIdSchema, placementNodeId: positiveInt(), placementNode: nodeNameSchema }).optional(),
}).superRefine((input, ctx) => {
  input.copies.forEach((c, i) => {
    const fenced = `sc_s${c.shardId}_moved_${input.movementId}`.slice(0, 63);
    if (c.schema !== fenced) ctx.addIssue({ code: 'custom', path: ['copies', i, 'schema'], message: `expected ${fenced}, the fenced copy of shard ${c.shardId} by movement ${input.movementId}` });
  });
});

export const collectStatsInputSchema = z.object({
  intervalSeconds: intBetween(1, 3600),
  retentionDays: intBetween(1, 3650),
  roundsPerRun: intBetween(1, 100_000).optional(),
});

const batchesSchema = { batchSize: intBetween(1, 1000), parallelBatches: intBetween(1, 64) };

export const retrainInputSchema = z.object({
  trainingDays: intBetween(1, 365),
  budgetSeconds: numberBetween(0, 600, true),
  searchSeconds: numberBetween(0, 600).optional(),
  ...batchesSchema,
});

export const janitorInputSchema = z.object({ fix: bool() });

const movementSettingsSchema = z.object({
  approvalRequired: bool().optional(),
  approvalOverBytes: intBetween(0, Number.MAX_SAFE_INTEGER).optional(),
  approvalHoursUtc: z.tuple([intBetween(0, 23), intBetween(0, 24)]).optional(),
  approvalTimeoutSeconds: numberBetween(0, 30 * 86_400, true).optional(),
  approvalTimeoutAction: z.enum(['approve', 'reject']).optional(),
  graceSeconds: intBetween(0, 30 * 86_400).optional(),
  catchUpLagBytes: intBetween(-1, Number.MAX_SAFE_INTEGER).optional(),
  maxMovesPerNode: intBetween(1, 64).optional(),
  pollSeconds: numberBetween(0, 3600, true).optional(),
  retry: z.object({ maximumAttempts: intBetween(1, 1000), initialIntervalMs: intervalMs(), maximumIntervalMs: intervalMs().optional() }).optional(),
  historyLimit: intBetween(10, 1_000_000).optional(),
  verifyChunkRows: intBetween(1, 10_000_000).optional(),
  verifySliceSeconds: numberBetween(0, 3600, true).optional(),
});

// The planner checks each setting's value (resolveSettings); here only that they are numbers.
const finite = z.number({ error: 'expected a number' }).refine(Number.isFinite, { error: 'expected a finite number' });
const plannerSettingsSchema = z.object({
  weights: z.record(z.string(), finite).optional(),
  scaleIn: z.record(z.string(), finite).optional(),
  bound: z.enum(['point', 'upper80', 'upper95']).optional(),
}).catchall(finite);

const rebalanceShared = {
  drainNode: nodeNameSchema.optional(),
  movement: movementSettingsSchema,
  workflowIdPrefix: z.string().regex(/^[A-Za-z0-9._-]{0,100}$/, { error: 'expected letters, digits, ".", "_" or "-"' }).optional(),
  settings: plannerSettingsSchema.optional(),
};

export const rebalanceInputSchema = z.object({
  dryRun: bool(),
  trigger: z.enum(['schedule', 'operator', 'drain', 'replan'], { error: 'expected schedule, operator, drain or replan' }),
  /** Carry out only the actions due to start within this many seconds of planning; the next round plans the rest again. */
  startWithinSeconds: z.number({ error: 'expected a number of seconds' }).int({ error: 'expected whole seconds' }).min(1, { error: 'expected at least 1 second' }).max(86_400, { error: 'expected at most 86400 seconds' }).optional(),
  /** Tenant isolation from this share of a shard's accesses (planning.isolateTenantShare); absent or 0: none. */
  isolateTenantShare: numberBetween(0, 1).optional(),
  ...rebalanceShared,
});

export const isolateKeyInputSchema = z.object({
  table: identifierSchema,
  key: text(1000).refine((k) => k.trim() !== '', { error: 'expected a shard-key value' }),
  targetNode: nodeNameSchema.optional(),
  movement: movementSettingsSchema,
  workflowIdPrefix: rebalanceShared.workflowIdPrefix,
});

export const retentionInputSchema = z.object({
  /** The archive root (retention.archiveDir): one backup directory per run and table under it. */
  archiveDir: z.string({ error: 'expected a directory' }).min(1, { error: 'expected a directory' }),
  table: identifierSchema.optional(),
  dryRun: bool(),
  /** Run the rebalance-threshold check (and start its split, unless dryRun). */
  rebalanceCheck: bool(),
  minShardBytes: intBetween(0, Number.MAX_SAFE_INTEGER),
  movement: movementSettingsSchema,
  workflowIdPrefix: rebalanceShared.workflowIdPrefix,
});

export const forecastRunInputSchema = z.object({
  ...batchesSchema,
  rebalance: z.object({ mode: z.enum(['off', 'dry-run', 'on'], { error: 'expected off, dry-run or on' }), movement: movementSettingsSchema, workflowIdPrefix: rebalanceShared.workflowIdPrefix, settings: rebalanceShared.settings }).optional(),
});

export const dropTableInputSchema = z.object({
  table: identifierSchema,
  // The movements' approval policy (the configuration's `movement` section).
  approvalRequired: bool(),
  approvalOverBytes: intBetween(0, Number.MAX_SAFE_INTEGER).optional(),
  approvalHoursUtc: z.tuple([intBetween(0, 23), intBetween(0, 24)], { error: 'expected [from, to] UTC hours' }).optional(),
  approvalTimeoutSeconds: numberBetween(0, 30 * 86_400, true).optional(),
  approvalTimeoutAction: z.enum(['approve', 'reject'], { error: 'expected approve or reject' }).optional(),
});

// The request goes to the provisioner's command (environment, stdin) or webhook: no credential, plain values.
export const scaleOutInputSchema = z.object({
  request: z.object({
    requestId: z.string({ error: 'expected a request id' }).regex(/^[A-Za-z0-9._-]{1,400}$/, { error: 'expected a request id (1–400 letters, digits, ".", "_" or "-")' }),
    region: text(200).min(1, { error: 'expected a region name' }).optional(),
    zone: text(200).min(1, { error: 'expected a zone name' }).optional(),
    capacity: numberBetween(0, Number.MAX_SAFE_INTEGER, true).optional(),
    reason: text(10_000),
  }),
  // planning.provisioner.timeoutSeconds (src/config.ts): 1 to 86400.
  provisionTimeoutSeconds: intBetween(1, 86_400),
  activationAttempts: intBetween(1, 100).optional(),
});

/** "input.shardId: expected a positive integer"; several problems joined with "; ". */
export function describeInputIssues(error: z.ZodError, root = 'input'): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.reduce<string>((p, k) => (typeof k === 'number' ? `${p}[${k}]` : `${p}.${String(k)}`), root);
      return `${path}: ${issue.message}`;
    })
    .join('; ');
}

/** The input checked against its schema: the problems in one line, or undefined when there is none. */
export function inputProblem(schema: z.ZodType, input: unknown, root = 'input'): string | undefined {
  const parsed = schema.safeParse(input);
  return parsed.success ? undefined : describeInputIssues(parsed.error, root);
}

/** The client's check, before starting a workflow: the same schema and words as the workflow's. */
export function assertValidInput<T>(schema: z.ZodType, input: T, root = 'input'): T {
  const problem = inputProblem(schema, input, root);
  if (problem) throw new InvalidInputError(problem);
  return input;
}

/**
 * A restore (workflow restoreTable): the backup, the layout (`shardcast restore` proposes it), the
 * policies of its workload file. The backup is a path or an http(s) URL without credentials: the
 * input is kept in the workflow's history.
 */
export const restoreInputSchema = z.object({
  restoreId: z.string({ error: 'expected a restore id' }).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/, { error: 'expected a restore id (letters, digits, ".", "-", "_")' }),
  backup: text(4000)
    .min(1, { error: 'expected a backup directory or URL' })
    .refine((b) => !/^[a-z][a-z0-9+.-]*:\/\/[^/@]*@/i.test(b), { error: 'a backup URL must not carry credentials (user:password@): they would be stored in the workflow history' }),
  sourceKind: z.enum(['shardcast', 'pg_dump'], { error: 'expected shardcast or pg_dump' }),
  sourceTable: text(200).min(1, { error: 'expected the table name in the backup' }),
  targetTable: identifierSchema,
  layout: z
    .object({
      keyColumn: identifierSchema,
      method: z.enum(['hash', 'range'], { error: 'expected hash or range' }),
      shardCount: intBetween(1, 4096).optional(),
      rangeBounds: z.array(text(1000)).min(2, { error: 'expected at least two bounds' }).max(4097).optional(),
      /** The node of each shard, in shard order. */
      nodes: z.array(nodeNameSchema).min(1, { error: 'expected the node of each shard' }).max(4096),
      reasons: z.array(text(2000)).max(100),
    })
    .refine((l) => (l.method === 'hash' ? l.shardCount !== undefined && l.rangeBounds === undefined : l.rangeBounds !== undefined && l.shardCount === undefined), {
      error: 'a hash layout takes shardCount, a range layout rangeBounds',
    })
    .refine((l) => l.nodes.length === (l.method === 'hash' ? l.shardCount : (l.rangeBounds?.length ?? 1) - 1), { error: 'expected one node per shard' }),
  requireApproval: bool(),
  approvalTimeoutSeconds: numberBetween(0, 30 * 86_400, true).optional(),
  parallelism: intBetween(1, 64),
  batchesPerUnit: intBetween(1, 10_000),
  /** Retries of a step on one node (creating shards, an import unit, indexes) while the node cannot be reached. */
  nodeRetry: retrySettingsSchema.optional(),
  retentionDays: intBetween(1, 100_000).nullable().optional(),
  retentionColumn: identifierSchema.nullable().optional(),
  rebalanceThreshold: numberBetween(0, 1, true).nullable().optional(),
});
