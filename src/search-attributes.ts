import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Shardcast's search attributes: defined once, registered with the server, set on every run. */
export const SA_TABLE = defineSearchAttributeKey('ShardcastTable', SearchAttributeType.KEYWORD);
export const SA_GROUP = defineSearchAttributeKey('ShardcastGroup', SearchAttributeType.KEYWORD);
export const SA_OPERATION = defineSearchAttributeKey('ShardcastOperation', SearchAttributeType.KEYWORD);
export const SA_PHASE = defineSearchAttributeKey('ShardcastPhase', SearchAttributeType.KEYWORD);
export const SA_SOURCE_NODE = defineSearchAttributeKey('ShardcastSourceNode', SearchAttributeType.KEYWORD);
export const SA_TARGET_NODE = defineSearchAttributeKey('ShardcastTargetNode', SearchAttributeType.KEYWORD);
export const SA_SHARD = defineSearchAttributeKey('ShardcastShard', SearchAttributeType.INT);

/** The same keys as the Temporal CLI names their types (`--search-attribute Name=Type`). */
export const SEARCH_ATTRIBUTE_TYPES: Record<string, 'Keyword' | 'Int'> = {
  ShardcastTable: 'Keyword',
  ShardcastGroup: 'Keyword',
  ShardcastOperation: 'Keyword',
  ShardcastPhase: 'Keyword',
  ShardcastSourceNode: 'Keyword',
  ShardcastTargetNode: 'Keyword',
  ShardcastShard: 'Int',
};
