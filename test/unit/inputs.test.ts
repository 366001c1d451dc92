import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../src/errors.js';
import {
  assertValidInput,
  collectStatsInputSchema,
  createTableInputSchema,
  dropFencedCopyInputSchema,
  forecastRunInputSchema,
  inputProblem,
  janitorInputSchema,
  moveShardInputSchema,
  rebalanceInputSchema,
  retentionInputSchema,
  retrainInputSchema,
  scaleOutInputSchema,
} from '../../src/inputs.js';
import { moveShardInput } from '../../workflows/describe.js';
import { rangePredicate } from '../../src/movement/reshard-plan.js';

const ids = { movementId: 's7_0a1b2c3d4e', workflowId: 'move-shard-7' };
const move = moveShardInput({ operation: 'move', shardId: 7, targetNode: 'node-2' }, ids, {});
const node = (id: number, name: string) => ({ id, name, dsn: '', region: null, zone: null, capacity: null, state: 'active' as const });
const movePlan = {
  operation: 'move' as const,
  movementId: ids.movementId,
  shard: { shardId: 7, schema: 'sc_s7', group: 'orders', tables: [{ name: 'orders', columns: 'id bigint primary key' }] },
  source: node(1, 'node-1'),
  target: node(2, 'node-2'),
  names: { publication: 'sc_mv_s7_0a1b2c3d4e', subscription: 'sc_mv_s7_0a1b2c3d4e', slot: 'sc_mv_s7_0a1b2c3d4e', gid: 'sc_mv_s7_0a1b2c3d4e' },
  bytes: 8192,
};
const progress = { phase: 'copy', paused: false, approved: false, approvalReason: null, rowsCopied: 0, bytesCopied: 0, lagBytes: null, tablesReady: 0, tables: 1, etaSeconds: null };
const resumed = (plan: unknown) => ({ ...move, resume: { plan, progress } });

describe('workflow input schemas', () => {
  it('accept what the client builds, defaults filled in', () => {
    expect(inputProblem(moveShardInputSchema, move)).toBeUndefined();
    expect(inputProblem(moveShardInputSchema, moveShardInput({ operation: 'split', shardId: 7, splitTargets: ['node-1', 'node-2'], splitAt: '0' }, ids, { retry: { maximumAttempts: 2, initialIntervalMs: 200 } }))).toBeUndefined();
    expect(inputProblem(moveShardInputSchema, moveShardInput({ operation: 'merge', shardId: 7, mergeWith: 8 }, ids, { approvalHoursUtc: [22, 6] }))).toBeUndefined();
    expect(inputProblem(moveShardInputSchema, resumed(movePlan))).toBeUndefined();
    expect(inputProblem(createTableInputSchema, { spec: { name: 'orders', columns: 'id bigint', shardKey: 'id', shardCount: 4 }, nodeRetry: { maximumAttempts: 3, initialIntervalMs: 200 } })).toBeUndefined();
    expect(inputProblem(collectStatsInputSchema, { intervalSeconds: 15, retentionDays: 35 })).toBeUndefined();
    expect(inputProblem(retrainInputSchema, { trainingDays: 30, budgetSeconds: 1.2, searchSeconds: 0, batchSize: 10, parallelBatches: 4 })).toBeUndefined();
    expect(inputProblem(janitorInputSchema, { fix: true })).toBeUndefined();
    const movement = { approvalRequired: false, graceSeconds: 300, maxMovesPerNode: 2, catchUpLagBytes: 1048576 };
    const settings = { targetUtilisation: 0.7, bound: 'upper95', hysteresisSeconds: 7200, weights: { load: 1, bytes: 0.05 } };
    expect(inputProblem(rebalanceInputSchema, { dryRun: true, trigger: 'operator', movement, settings })).toBeUndefined();
    expect(inputProblem(forecastRunInputSchema, { batchSize: 10, parallelBatches: 4, rebalance: { mode: 'on', movement, settings } })).toBeUndefined();
  });

  it('name the field and what was expected', () => {
    expect(inputProblem(moveShardInputSchema, { ...move, shardId: 0 })).toBe('input.shardId: expected a positive integer');
    expect(inputProblem(moveShardInputSchema, { ...move, shardId: '7' })).toBe('input.shardId: expected a positive integer');
    expect(inputProblem(moveShardInputSchema, { ...move, shardId: 1.5 })).toBe('input.shardId: expected a positive integer');
    expect(inputProblem(moveShardInputSchema, { ...move, targetNode: 'node 2; drop' })).toMatch(/^input\.targetNode: expected a node name/);
    expect(inputProblem(moveShardInputSchema, { ...move, movementId: "x'y" })).toMatch(/^input\.movementId: expected a movement id/);
    expect(inputProblem(moveShardInputSchema, { ...move, graceSeconds: -1 })).toBe('input.graceSeconds: expected an integer from 0 to 2592000');
    expect(inputProblem(moveShardInputSchema, { ...move, pollSeconds: 0 })).toBe('input.pollSeconds: expected a number above 0 and at most 3600');
    expect(inputProblem(moveShardInputSchema, { ...move, approvalHoursUtc: [25, 3] })).toBe('input.approvalHoursUtc[0]: expected an integer from 0 to 23');
    expect(inputProblem(moveShardInputSchema, { ...move, operation: 'split', targetNode: undefined })).toBe('input.splitTargets: a split needs two target nodes');
    expect(inputProblem(moveShardInputSchema, { ...move, operation: 'merge', mergeWith: 7 })).toBe('input.mergeWith: cannot merge shard 7 with itself');
    expect(inputProblem(createTableInputSchema, { spec: { name: 'a"b', columns: 'id int', shardKey: 'id' }, nodeRetry: { maximumAttempts: 3, initialIntervalMs: 1 } })).toMatch(/^input\.spec\.name: expected a lower-case identifier/);
    expect(inputProblem(createTableInputSchema, { spec: { name: 'ab', columns: 'id int', shardKey: 'id' }, nodeRetry: { maximumAttempts: 0, initialIntervalMs: 1 } })).toBe('input.nodeRetry.maximumAttempts: expected an integer from 1 to 1000');
    expect(inputProblem(collectStatsInputSchema, { intervalSeconds: 0, retentionDays: 35 })).toBe('input.intervalSeconds: expected an integer from 1 to 3600');
    expect(inputProblem(janitorInputSchema, { fix: 'yes' })).toBe('input.fix: expected true or false');
    expect(inputProblem(rebalanceInputSchema, { dryRun: false, trigger: 'cron', movement: {} })).toBe('input.trigger: expected schedule, operator, drain or replan');
    expect(inputProblem(rebalanceInputSchema, { dryRun: false, trigger: 'replan', startWithinSeconds: 0, movement: {} })).toBe('input.startWithinSeconds: expected at least 1 second');
    expect(inputProblem(rebalanceInputSchema, { dryRun: false, trigger: 'replan', isolateTenantShare: 1.5, movement: {} })).toBe('input.isolateTenantShare: expected a number from 0 to 1');
    expect(inputProblem(retrainInputSchema, { trainingDays: 30, budgetSeconds: Infinity, batchSize: 10, parallelBatches: 4 })).toBe('input.budgetSeconds: expected a number above 0 and at most 600');
    expect(inputProblem(moveShardInputSchema, undefined)).toMatch(/^input: /);
  });

  it('scaleOut: accept what the rebalance asks, refuse a bad field by name', () => {
    const scaleOut = { request: { requestId: 'scale-out-plan-3-a2', region: 'eu', capacity: 100, reason: 'fleet predicted above its capacity' }, provisionTimeoutSeconds: 600 };
    expect(inputProblem(scaleOutInputSchema, scaleOut)).toBeUndefined();
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, activationAttempts: 3 })).toBeUndefined();
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, provisionTimeoutSeconds: 0 })).toBe('input.provisionTimeoutSeconds: expected an integer from 1 to 86400');
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, provisionTimeoutSeconds: '600' })).toBe('input.provisionTimeoutSeconds: expected an integer from 1 to 86400');
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, activationAttempts: 0 })).toBe('input.activationAttempts: expected an integer from 1 to 100');
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, request: { ...scaleOut.request, requestId: 'r; rm -rf /' } })).toMatch(/^input\.request\.requestId: expected a request id/);
    expect(inputProblem(scaleOutInputSchema, { ...scaleOut, request: { ...scaleOut.request, capacity: -1 } })).toMatch(/^input\.request\.capacity: expected a number above 0/);
    expect(inputProblem(scaleOutInputSchema, { provisionTimeoutSeconds: 600 })).toMatch(/^input\.request: /);
  });

  it('refuse a resumed plan whose values are not what its ids make them', () => {
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, shard: { ...movePlan.shard, schema: 'sc_s7"; drop schema public; --' } }))).toMatch(/^input\.resume\.plan\.shard\.schema: /);
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, shard: { ...movePlan.shard, schema: 'sc_s8' } }))).toBe('input.resume.plan.shard.schema: expected sc_s7, the schema of shard 7');
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, names: { ...movePlan.names, slot: 'sc_mv_other' } }))).toBe('input.resume.plan.names.slot: expected sc_mv_s7_0a1b2c3d4e, from the movement id');
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, movementId: 's7_other' }))).toMatch(/input\.resume\.plan\.movementId: expected s7_0a1b2c3d4e/);
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, shard: { ...movePlan.shard, tables: [{ name: 'Orders"', columns: 'x' }] } }))).toMatch(/^input\.resume\.plan\.shard\.tables\[0\]\.name: /);
    expect(inputProblem(moveShardInputSchema, resumed({ ...movePlan, target: node(1, 'node-1') }))).toBe('input.resume.plan.target.id: expected a node other than the source');
    const split = {
      operation: 'split',
      movementId: ids.movementId,
      groupId: 1,
      groupName: 'orders',
      method: 'hash',
      keyType: 'bigint',
      tables: [{ name: 'orders', columns: 'id bigint primary key', keyColumn: 'id' }],
      sources: [{ shardId: 7, schema: 'sc_s7', node: node(1, 'node-1'), range: { hashMin: '0', hashMax: '99' }, slot: 'sc_mv_s7_0a1b2c3d4e_0', publication: 'sc_mv_s7_0a1b2c3d4e_0', gid: 'sc_mv_s7_0a1b2c3d4e_0' }],
      targets: [
        { shardId: 20, schema: 'sc_s20', node: node(1, 'node-1'), range: { hashMin: '0', hashMax: '49' } },
        { shardId: 21, schema: 'sc_s21', node: node(2, 'node-2'), range: { hashMin: '50', hashMax: '99' } },
      ],
      catalogGid: 'sc_mv_s7_0a1b2c3d4e',
      bytes: 0,
    };
    const splitInput = { ...moveShardInput({ operation: 'split', shardId: 7, splitTargets: ['node-1', 'node-2'] }, ids, {}), resume: { plan: split, progress } };
    expect(inputProblem(moveShardInputSchema, splitInput)).toBeUndefined();
    const injected = { ...split, targets: [{ ...split.targets[0]!, range: { hashMin: '0', hashMax: '49 or true' } }, split.targets[1]!] };
    expect(inputProblem(moveShardInputSchema, { ...splitInput, resume: { plan: injected, progress } })).toMatch(/input\.resume\.plan/);
    expect(inputProblem(moveShardInputSchema, { ...splitInput, resume: { plan: { ...split, keyType: 'int); drop' }, progress } })).toMatch(/input\.resume\.plan/);
  });

  it('refuse a fenced copy that is not the movement\'s', () => {
    const copy = { nodeId: 1, node: 'node-1', schema: 'sc_s7_moved_s7_0a1b2c3d4e', shardId: 7 };
    expect(inputProblem(dropFencedCopyInputSchema, { movementId: ids.movementId, what: 'move', copies: [copy], dropAt: '2026-01-01T00:00:00Z' })).toBeUndefined();
    expect(inputProblem(dropFencedCopyInputSchema, { movementId: ids.movementId, what: 'move', copies: [{ ...copy, schema: 'sc_s8_moved_s7_0a1b2c3d4e' }], dropAt: '2026-01-01T00:00:00Z' })).toBe(
      'input.copies[0].schema: expected sc_s7_moved_s7_0a1b2c3d4e, the fenced copy of shard 7 by movement s7_0a1b2c3d4e',
    );
    expect(inputProblem(dropFencedCopyInputSchema, { movementId: ids.movementId, what: 'move', copies: [copy], dropAt: 'soon' })).toBe('input.dropAt: expected an ISO time');
  });

  it('the retention workflow: a table name, an archive directory, a size in bytes', () => {
    const ok = { archiveDir: '/var/lib/shardcast/archive', dryRun: false, rebalanceCheck: true, minShardBytes: 0, movement: {} };
    expect(inputProblem(retentionInputSchema, ok)).toBeUndefined();
    expect(inputProblem(retentionInputSchema, { ...ok, table: 'events' })).toBeUndefined();
    expect(inputProblem(retentionInputSchema, { ...ok, table: 'Events; drop' })).toMatch(/^input\.table: expected a lower-case identifier/);
    expect(inputProblem(retentionInputSchema, { ...ok, archiveDir: '' })).toBe('input.archiveDir: expected a directory');
    expect(inputProblem(retentionInputSchema, { ...ok, minShardBytes: -1 })).toMatch(/^input\.minShardBytes: /);
  });

  it('assertValidInput throws the same line as an InvalidInputError', () => {
    expect(() => assertValidInput(janitorInputSchema, { fix: 1 })).toThrow(InvalidInputError);
    expect(() => assertValidInput(janitorInputSchema, { fix: 1 })).toThrow('input.fix: expected true or false');
  });

  it('a hash bound reaches SQL only as an integer', () => {
    expect(rangePredicate('bigint', 'id', { hashMin: '-5', hashMax: '10' })).toBe('hashint8extended("id", 0) between -5 and 10');
    expect(() => rangePredicate('bigint', 'id', { hashMin: '0', hashMax: '1 or true' })).toThrow(InvalidInputError);
    expect(() => rangePredicate('int); drop table x; --' as never, 'id', { hashMin: '0', hashMax: '1' })).toThrow(InvalidInputError);
  });
});
