import { defineQuery } from '@temporalio/workflow';
import type { TableSpec } from '../src/catalog/tables.js';

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
