import type { MoveShardInput } from './messages.js';

/** A shard's movement workflow id: one movement per shard at a time (a second start is refused while one runs). */
export function moveWorkflowId(shardId: number, prefix = ''): string {
  return `${prefix}move-shard-${shardId}`;
}

/** A key isolation's workflow id: one per table and key at a time (the key as hex, so that any value makes a valid id). */
export function isolateWorkflowId(table: string, key: string, prefix = ''): string {
  const hex = Array.from(new TextEncoder().encode(key), (b) => b.toString(16).padStart(2, '0')).join('').slice(0, 200);
  return `${prefix}isolate-${table}-${hex}`;
}

/** The rebalancer's workflow id: one run at a time. */
export function rebalanceWorkflowId(prefix = ''): string {
  return `${prefix}shardcast-rebalance`;
}

/** What a movement does, in words, from its input: the static summary in the Temporal UI. */
export function describeMovement(input: Pick<MoveShardInput, 'operation' | 'shardId' | 'targetNode' | 'splitTargets' | 'mergeWith'>): string {
  switch (input.operation ?? 'move') {
    case 'split':
      return `split shard ${input.shardId} → ${(input.splitTargets ?? []).join(' + ')}`;
    case 'merge':
      return `merge shards ${input.shardId} + ${input.mergeWith}${input.targetNode ? ` → ${input.targetNode}` : ''}`;
    default:
      return `move shard ${input.shardId} → ${input.targetNode}`;
  }
}

/** The movement settings a request may give (the CLI's flags, the configuration's `movement` section, the rebalancer's defaults). */
export interface MovementSettings {
  approvalRequired?: boolean;
  approvalOverBytes?: number;
  approvalHoursUtc?: [number, number];
  approvalTimeoutSeconds?: number;
  approvalTimeoutAction?: 'approve' | 'reject';
  graceSeconds?: number;
  catchUpLagBytes?: number;
  maxMovesPerNode?: number;
  pollSeconds?: number;
  retry?: MoveShardInput['retry'];
  historyLimit?: number;
  verifyChunkRows?: number;
  verifySliceSeconds?: number;
  /** The copy governor for this movement (default: the worker's, movement.governor in its configuration). */
  governor?: MoveShardInput['governor'];
}

export type MovementOperationInput = Pick<MoveShardInput, 'operation' | 'shardId' | 'targetNode' | 'splitTargets' | 'splitAt' | 'mergeWith' | 'reverseOf' | 'reverseFallback'>;

/** A movement workflow's input from what it does and its settings, with the defaults filled in (pure: workflows build it too). */
export function moveShardInput(op: MovementOperationInput, ids: { movementId: string; workflowId: string }, s: MovementSettings): MoveShardInput {
  return {
    ...ids,
    ...op,
    maxMovesPerNode: s.maxMovesPerNode ?? 2,
    catchUpLagBytes: s.catchUpLagBytes ?? 1024 * 1024,
    pollSeconds: s.pollSeconds ?? 2,
    approvalRequired: s.approvalRequired ?? false,
    approvalOverBytes: s.approvalOverBytes,
    approvalHoursUtc: s.approvalHoursUtc,
    approvalTimeoutSeconds: s.approvalTimeoutSeconds,
    approvalTimeoutAction: s.approvalTimeoutAction,
    graceSeconds: s.graceSeconds ?? 300,
    ...(s.retry ? { retry: s.retry } : {}),
    ...(s.historyLimit ? { historyLimit: s.historyLimit } : {}),
    ...(s.verifyChunkRows ? { verifyChunkRows: s.verifyChunkRows } : {}),
    ...(s.verifySliceSeconds ? { verifySliceSeconds: s.verifySliceSeconds } : {}),
    ...(s.governor ? { governor: s.governor } : {}),
  };
}
