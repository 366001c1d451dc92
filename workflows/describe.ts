import type { MoveShardInput } from './messages.js';

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
