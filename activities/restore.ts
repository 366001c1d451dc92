import { activityInfo, cancellationSignal, heartbeat } from '@temporalio/activity';
import type pg from 'pg';
import type { RecordBatch } from 'apache-arrow';
import { RECORD_DIGEST_ALGORITHM, type RowDigest } from '../src/backup/checksum.js';
import type { ManifestTable } from '../src/backup/manifest.js';
import { PgDumpBackup } from '../src/backup/pg-dump.js';
import { openBackup } from '../src/backup/reader.js';
import { grantShardSchemas } from '../src/catalog/app-role.js';
import type { SessionLimits } from '../src/catalog/node-pools.js';
import { getNode, type NodeRecord } from '../src/catalog/nodes.js';
import { AlreadyExistsError, NotFoundError } from '../src/errors.js';
import {
  RowRouter,
  buildRestoreIndexes,
  checkRestoredShards,
  clearLedger,
  compareWithManifest,
  createRestoreShards,
  resumeAutovacuum,
  importUnit,
  planImportUnits,
  readsBatchesInPlace,
  type ImportUnit,
  type RestoreShard,
  type UnitResult,
} from '../src/restore/import.js';
import { finishRestoreRecord, recordRestore, type RestoreRecordInput } from '../src/restore/record.js';
import type { KeyType } from '../src/catalog/keys.js';
import { run } from './failures.js';

const HEARTBEAT_MS = 2000;

/** What the restore workflow learns of its backup before it creates anything. */
export interface RestoreCheck {
  sourceKind: 'shardcast' | 'pg_dump';
  rows: number;
  expected: RowDigest;
  units: ImportUnit[];
  /** The table as the backup describes it (columns, primary key, indexes). */
  table: Pick<ManifestTable, 'name' | 'columns' | 'primaryKey' | 'indexes'>;
}

interface RestoreTableShards {
  tableId: number;
  name: string;
  keyColumn: string;
  keyType: KeyType;
  method: 'hash' | 'range';
  shards: RestoreShard[];
  nodes: NodeRecord[];
}

async function tableShards(catalog: pg.Pool, tableId: number): Promise<RestoreTableShards> {
  const t = await catalog.query<{ name: string; key_column: string; key_type: KeyType; method: 'hash' | 'range'; group_id: number }>(
    `select t.name, t.key_column, t.key_type, g.method, t.group_id::int as group_id
       from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id where t.id = $1`,
    [tableId],
  );
  const row = t.rows[0];
  if (!row) throw new NotFoundError(`table #${tableId} does not exist`);
  const s = await catalog.query<{ id: number; schema: string; node_id: number; hash_min: string | null; hash_max: string | null; range_min: string | null; range_max: string | null }>(
    `select s.id::int as id, s.schema_name as schema, p.node_id::int as node_id, s.hash_min::text, s.hash_max::text, s.range_min, s.range_max
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id where s.group_id = $1 order by s.id`,
    [row.group_id],
  );
  const shards: RestoreShard[] = s.rows.map((r) => ({
    shardId: r.id,
    schema: r.schema,
    nodeId: r.node_id,
    ...(r.hash_min !== null ? { hashMin: r.hash_min, hashMax: r.hash_max! } : { rangeMin: r.range_min!, rangeMax: r.range_max! }),
  }));
  const nodes = await Promise.all([...new Set(shards.map((x) => x.nodeId))].map((id) => getNode(catalog, id)));
  return { tableId, name: row.name, keyColumn: row.key_column, keyType: row.key_type, method: row.method, shards, nodes };
}

/** The restore's steps (workflow restoreTable; src/restore/import.ts); each safe to repeat. */
export function createRestoreActivities(deps: { catalog: pg.Pool; sessionLimits?: SessionLimits }) {
  const limits = { ...deps.sessionLimits, statementTimeoutMs: undefined };
  /** Heartbeats `details()` every 2 s while `work` runs. */
  const beating = async <T>(details: () => unknown, work: () => Promise<T>): Promise<T> => {
    const timer = setInterval(() => heartbeat(details()), HEARTBEAT_MS);
    try {
      return await work();
    } finally {
      clearInterval(timer);
    }
  };
  return {
    /**
     * Reads the whole backup once before anything is created (sizes, sha256, Arrow structure, row
     * counts; a pg_dump's rows are read for their digest), checks the target name is free, and
     * stores the proposal in the catalog.
     */
    async checkRestore(input: RestoreRecordInput & { batchesPerUnit: number }): Promise<RestoreCheck> {
      return run(async () => {
        const taken = await deps.catalog.query<{ created_by: string | null }>('select created_by from shardcast.distributed_tables where name = $1', [input.targetTable]);
        const runId = activityInfo().workflowExecution?.runId;
        if (taken.rows[0] && taken.rows[0].created_by !== runId) {
          throw new AlreadyExistsError(`table "${input.targetTable}" already exists in the cluster: restore under another name (--as) or drop it first`);
        }
        let check: RestoreCheck;
        const progress = { step: 'validating the backup' };
        await beating(
          () => progress,
          async () => {
            if (input.sourceKind === 'pg_dump') {
              const dump = await PgDumpBackup.open(input.backup);
              const t = dump.tables.find((x) => x.name === input.sourceTable || `${x.schema}.${x.name}` === input.sourceTable);
              if (!t) throw new NotFoundError(`${input.backup}: no table "${input.sourceTable}" in the archive`);
              const expected = await dump.digest(`${t.schema}.${t.name}`);
              check = { sourceKind: 'pg_dump', rows: expected.rows, expected, units: planImportUnits({ files: [] }, 'pg_dump', 1), table: { name: t.name, columns: t.columns, primaryKey: t.primaryKey, indexes: t.indexes } };
            } else {
              const backup = await openBackup(input.backup);
              const t = backup.table(input.sourceTable);
              // sha256 of every byte; the rows are counted again by the import and the verify.
              await backup.validate({ decode: false });
              check = {
                sourceKind: 'shardcast',
                rows: t.rows,
                // The record digest when the backup has one of this algorithm: the verify then scans with it.
                expected: { rows: t.checksum.rows, sum: t.checksum.sum, ...(t.checksum.record?.algorithm === RECORD_DIGEST_ALGORITHM ? { record: t.checksum.record.sum } : {}) },
                units: planImportUnits(t, 'shardcast', input.batchesPerUnit),
                table: { name: t.name, columns: t.columns, primaryKey: t.primaryKey, indexes: t.indexes },
              };
            }
          },
        );
        await recordRestore(deps.catalog, input, check!.rows);
        return check!;
      });
    },

    /** Pre-restore shard creation on one node: the ledger and each shard's bare table. */
    async createRestoreShardsOnNode(input: { tableId: number; nodeId: number; columns: string }): Promise<{ schemas: number }> {
      return run(async () => {
        const t = await tableShards(deps.catalog, input.tableId);
        const node = t.nodes.find((n) => n.id === input.nodeId) ?? (await getNode(deps.catalog, input.nodeId));
        const schemas = t.shards.filter((s) => s.nodeId === input.nodeId).map((s) => s.schema);
        await createRestoreShards(node, { table: t.name, schemas, columns: input.columns, grant: grantShardSchemas }, limits);
        return { schemas: schemas.length };
      });
    },

    /** One unit of the parallel import; heartbeats its offset (batches and rows read). */
    async importRestoreUnit(input: {
      restoreId: string;
      backup: string;
      sourceKind: 'shardcast' | 'pg_dump';
      sourceTable: string;
      tableId: number;
      unit: ImportUnit;
      columns: ManifestTable['columns'];
      oneStream?: boolean;
    }): Promise<UnitResult> {
      return run(async () => {
        const t = await tableShards(deps.catalog, input.tableId);
        const router = new RowRouter(t.name, t.method, t.keyType, t.shards);
        let batches: () => AsyncIterable<RecordBatch>;
        let unitBytes: number | undefined;
        if (input.sourceKind === 'pg_dump') {
          const dump = await PgDumpBackup.open(input.backup);
          batches = () => dump.batches(input.sourceTable);
        } else {
          const backup = await openBackup(input.backup);
          const { unit } = input;
          const file = backup.table(input.sourceTable).files[unit.file];
          if (file) unitBytes = Math.ceil(file.bytes / Math.max(1, file.batches)) * (unit.to - unit.from);
          // In place (each batch in the last one's memory) unless one stream keeps the unit's batches for its next shards' passes.
          const inPlace = readsBatchesInPlace(input.oneStream === true, unitBytes);
          batches = () => backup.batches(input.sourceTable, { file: unit.file, from: unit.from, to: unit.to }, { inPlace });
        }
        const offset = { unit: input.unit.index, batches: 0, rows: 0 };
        return beating(
          () => offset,
          () =>
            importUnit({
              restoreId: input.restoreId,
              table: t.name,
              columns: input.columns,
              keyColumn: t.keyColumn,
              router,
              nodes: new Map(t.nodes.map((n) => [n.id, n])),
              unit: input.unit,
              batches,
              limits,
              signal: cancellationSignal(),
              oneStream: input.oneStream === true,
              ...(unitBytes !== undefined ? { unitBytes } : {}),
              onProgress: (p) => {
                offset.batches = p.batches;
                offset.rows = p.rows;
              },
            }),
        );
      });
    },

    /** After the load, on one node: primary keys, indexes, ANALYZE. */
    async buildRestoreIndexesOnNode(input: {
      tableId: number;
      nodeId: number;
      primaryKey: string[];
      indexes: ManifestTable['indexes'];
      /** The node's shards on up to this many sessions at once (default 1). */
      sessions?: number;
    }): Promise<void> {
      return run(async () => {
        const t = await tableShards(deps.catalog, input.tableId);
        const node = t.nodes.find((n) => n.id === input.nodeId) ?? (await getNode(deps.catalog, input.nodeId));
        const schemas = t.shards.filter((s) => s.nodeId === input.nodeId).map((s) => s.schema);
        const done: string[] = [];
        await beating(
          () => ({ shardsDone: done.length, of: schemas.length }),
          () => buildRestoreIndexes(node, { table: t.name, schemas, primaryKey: input.primaryKey, indexes: input.indexes }, limits, (s) => done.push(s), input.sessions),
        );
      });
    },

    /** Row counts and checksums of every shard against the backup's; throws RestoreVerificationError on a difference. */
    async verifyRestore(input: {
      tableId: number;
      expected: RowDigest;
      oneStream?: boolean;
      /** The backup's columns (name and type): the record digest's row, when `expected.record` is there. */
      columns?: ReadonlyArray<{ name: string; pgType: string }>;
      /** Each node's shards on up to this many sessions at once (default 1). */
      sessions?: number;
    }): Promise<RowDigest & { perShard: Record<string, number> }> {
      return run(async () => {
        const t = await tableShards(deps.catalog, input.tableId);
        const record = input.expected.record !== undefined && input.columns ? input.columns : undefined;
        const shardsOn = new Map(t.nodes.map((node) => [node.id, t.shards.filter((s) => s.nodeId === node.id)]));
        const checkNode = (node: (typeof t.nodes)[number]) =>
          checkRestoredShards(node, { table: t.name, keyColumn: t.keyColumn, keyType: t.keyType, shards: shardsOn.get(node.id)!, ...(record ? { record } : {}) }, limits, input.sessions);
        const checks = await beating(
          () => 'verifying',
          async () => {
            if (!input.oneStream) return (await Promise.all(t.nodes.map(checkNode))).flat();
            const out: Awaited<ReturnType<typeof checkNode>> = [];
            for (const node of t.nodes) out.push(...(await checkNode(node)));
            return out;
          },
        );
        const digest = compareWithManifest(t.name, input.expected, checks);
        // Verified: autovacuum may have the shards now (they were loaded with it off).
        await Promise.all(t.nodes.map((node) => resumeAutovacuum(node, { table: t.name, schemas: shardsOn.get(node.id)!.map((s) => s.schema) }, limits)));
        return { ...digest, perShard: Object.fromEntries(checks.map((c) => [String(c.shardId), c.rows])) };
      });
    },

    /** Removes the restore's ledger rows from every node of the table (best effort after publish; done before a compensation's drop). */
    async clearRestoreLedger(input: { restoreId: string; tableId: number }): Promise<void> {
      return run(async () => {
        let nodes: NodeRecord[];
        try {
          nodes = (await tableShards(deps.catalog, input.tableId)).nodes;
        } catch (err) {
          if (err instanceof NotFoundError) return;
          throw err;
        }
        await Promise.all(nodes.map((n) => clearLedger(n, input.restoreId, limits)));
      });
    },

    /** The restore's outcome in the catalog (state, rows, error). */
    async finishRestore(input: { restoreId: string; state: 'importing' | 'verifying' | 'done' | 'failed' | 'rejected'; rows?: number; error?: string }): Promise<void> {
      return run(() => finishRestoreRecord(deps.catalog, input));
    },
  };
}
