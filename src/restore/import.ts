/**
 * The data plane of a restore (workflow restoreTable): the empty shards created before any data
 * moves, the parallel import with its exactly-once ledger, the indexes built after the load, and the
 * verify against the backup's manifest.
 *
 * The import is cut into units (a range of record batches of one Arrow file; a pg_dump table is one
 * unit). A unit streams its rows to the shards they belong to, one `COPY … FROM STDIN` per shard,
 * each on its own connection and in its own transaction. That transaction first inserts the ledger
 * row (restore, unit, shard) on the shard's node and commits it with the rows: a retried unit skips
 * the shards whose ledger row is there, so a batch lands exactly once whatever failed where — a
 * killed worker's transactions roll back with its connections; an attempt running beside its retry
 * waits on the other's ledger row (unique key) and skips when that one commits.
 */
import { once } from 'node:events';
import type { Data, RecordBatch } from 'apache-arrow';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { digestsSql, rowDigestSql, type RowDigest } from '../backup/checksum.js';
import type { ManifestColumn, ManifestTable } from '../backup/manifest.js';
import { canonicalSettingsSql, canonicalText, formatUuid, type ValueKind } from '../backup/values.js';
import { CopyBuffer, columnWriter, int64Words, writeRow } from './copy-encoder.js';
import { BINARY_COPY_HEADER, BINARY_COPY_TRAILER, binaryColumnWriter, binaryKinds, writeBinaryRow } from './copy-binary.js';
import { resolveDsn } from '../catalog/dsn-password.js';
import { compareKeys, hashTimeValue, isTimeKey, normalizeKey, sqlHashFunction, timeKeyValue, type KeyType } from '../catalog/keys.js';
import { sessionSettings, type SessionLimits } from '../catalog/node-pools.js';
import { newPgClient } from '../catalog/pg-tls.js';
import { isConnectionError } from '../catalog/shard-ddl.js';
import { InvalidInputError, KeyOutOfRangeError, NodeUnavailableError, ShardcastError, errorMessage } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { hashInt4Into, hashInt8HalvesInto, hashTextExtended, hashUuidExtended, type HashParts } from '../hashing.js';
import { quoteIdent, quoteLiteral, singleStatement } from '../sql/ident.js';

/** Where the ledger lives on every node that gets shards of a restore. */
export const LEDGER_SCHEMA = 'sc_restore';
const LEDGER = `${LEDGER_SCHEMA}.ledger`;

/** A restore whose data does not match its backup: never published. */
export class RestoreVerificationError extends ShardcastError {
  constructor(message: string) {
    super('RESTORE_VERIFICATION_FAILED', message);
  }
}

export interface RestoreShard {
  shardId: number;
  schema: string;
  nodeId: number;
  /** hash method: the shard's inclusive hash range (decimal text). */
  hashMin?: string;
  hashMax?: string;
  /** range method: [rangeMin, rangeMax). */
  rangeMin?: string;
  rangeMax?: string;
}

/** One piece of the fan-out: batches [from, to) of file `file` (-1: the whole table, for a pg_dump). */
export interface ImportUnit {
  index: number;
  file: number;
  from: number;
  to: number;
}

/**
 * The units of a table: each file's batches cut into ranges of about `batchesPerUnit`, so that the
 * work spreads over `parallel` streams and a retried unit repeats little.
 */
export function planImportUnits(table: Pick<ManifestTable, 'files'>, sourceKind: 'shardcast' | 'pg_dump', batchesPerUnit: number): ImportUnit[] {
  if (sourceKind === 'pg_dump') return [{ index: 0, file: -1, from: 0, to: 0 }];
  const per = Math.max(1, Math.floor(batchesPerUnit));
  const units: ImportUnit[] = [];
  table.files.forEach((f, file) => {
    for (let from = 0; from < f.batches; from += per) units.push({ index: units.length, file, from, to: Math.min(f.batches, from + per) });
  });
  return units;
}

// ------------------------------------------------------------------------------- connections

export interface NodeTarget {
  name: string;
  dsn: string;
}

/** A connection of its own (not a pool's: a unit holds one per shard for its whole run). */
async function connect(node: NodeTarget, limits: SessionLimits): Promise<pg.Client> {
  const client = newPgClient(resolveDsn(node.dsn), { application_name: 'shardcast-restore', ...sessionSettings(limits) });
  client.on('error', () => undefined); // a lost server surfaces as the next statement's error
  try {
    await client.connect();
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot connect: ${errorMessage(err)}`, { cause: err });
  }
  return client;
}

async function onNode<T>(node: NodeTarget, limits: SessionLimits, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(node, limits);
  try {
    return await work(client);
  } catch (err) {
    throw asNodeError(node, err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function asNodeError(node: NodeTarget, err: unknown): unknown {
  if (err instanceof ShardcastError) return err;
  return isConnectionError(err) ? new NodeUnavailableError(node.name, errorMessage(err), { cause: err }) : err;
}

/** `schema.table` of a shard's table. */
function shardTable(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

// ------------------------------------------------------------------------------ shard creation

/**
 * A shard is created with autovacuum off, and handed back to it once verified (resumeAutovacuum):
 * autovacuum would otherwise visit every freshly loaded shard (its insert threshold) while the import,
 * the index builds and the verify still run, on the same cores, and at a random time (once a naptime).
 * Nothing reads the shard before it is published, so nothing needs it vacuumed sooner.
 */
const AUTOVACUUM_OFF = 'autovacuum_enabled = false, toast.autovacuum_enabled = false';

/**
 * Pre-restore shard creation on one node, in one transaction: the ledger, and each shard's schema with
 * the bare table (no index, no constraint but NOT NULL; autovacuum off until resumeAutovacuum). Safe to
 * repeat: what exists is left as it is.
 */
export async function createRestoreShards(
  node: NodeTarget,
  input: { table: string; schemas: string[]; columns: string; grant: (client: pg.ClientBase, schemas: string[]) => Promise<void> },
  limits: SessionLimits = {},
): Promise<void> {
  await onNode(node, limits, async (client) => {
    await client.query('begin');
    try {
      await client.query(`create schema if not exists ${LEDGER_SCHEMA}`);
      await client.query(
        `create table if not exists ${LEDGER} (restore_id text not null, unit int not null, shard_id bigint not null, rows bigint not null default 0,
           committed_at timestamptz not null default now(), primary key (restore_id, unit, shard_id))`,
      );
      for (const schema of input.schemas) {
        await client.query(`create schema if not exists ${quoteIdent(schema)}`);
        await client.query(singleStatement(`create table if not exists ${shardTable(schema, input.table)} (${input.columns}) with (${AUTOVACUUM_OFF})`));
      }
      await input.grant(client, input.schemas);
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    }
  });
}

// ------------------------------------------------------------------------------------ routing

const NUMERIC_KEYS: readonly ValueKind[] = ['int16', 'int32', 'int64'];

/** Which shard each row of a batch goes to, exactly as the router decides it (src/catalog/keys.ts). */
export class RowRouter {
  private readonly hashMins: bigint[] = [];
  /** hashMins as their halves (high signed, low unsigned): integer keys are routed without BigInt. */
  private readonly minHi: number[] = [];
  private readonly minLo: number[] = [];
  private readonly hash: HashParts = { hi: 0, lo: 0 };
  /** The int64 key column's values seen as 32-bit words (little-endian: low, high), per batch. */
  private wordsOf: BigInt64Array | undefined;
  private words: Int32Array = new Int32Array(0);
  private readonly order: number[];
  /** range method: the ranges' lower and upper bounds, in the order of `order`. */
  private readonly rangeMins: Array<bigint | string> = [];
  private readonly rangeMaxes: Array<bigint | string> = [];
  private compare = (a: bigint | string, b: bigint | string): number => compareKeys(this.keyType, a, b);

  constructor(
    readonly table: string,
    readonly method: 'hash' | 'range',
    readonly keyType: KeyType,
    readonly shards: readonly RestoreShard[],
  ) {
    const idx = shards.map((_, i) => i);
    if (method === 'hash') {
      idx.sort((a, b) => (BigInt(shards[a]!.hashMin!) < BigInt(shards[b]!.hashMin!) ? -1 : 1));
      for (const i of idx) this.hashMins.push(BigInt(shards[i]!.hashMin!));
      for (const m of this.hashMins) {
        this.minHi.push(Number(BigInt.asIntN(32, m >> 32n)));
        this.minLo.push(Number(BigInt.asUintN(32, m)));
      }
    } else if (isTimeKey(keyType)) {
      // Time keys compared as Arrow holds them: days or microseconds since 1970.
      const value = (v: string) => timeKeyValue(keyType, v);
      idx.sort((a, b) => (value(shards[a]!.rangeMin!) < value(shards[b]!.rangeMin!) ? -1 : 1));
      for (const i of idx) {
        this.rangeMins.push(value(shards[i]!.rangeMin!));
        this.rangeMaxes.push(value(shards[i]!.rangeMax!));
      }
      this.compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    } else {
      const norm = (v: string) => normalizeKey(keyType, v);
      idx.sort((a, b) => compareKeys(keyType, norm(shards[a]!.rangeMin!), norm(shards[b]!.rangeMin!)));
      for (const i of idx) {
        this.rangeMins.push(norm(shards[i]!.rangeMin!));
        this.rangeMaxes.push(norm(shards[i]!.rangeMax!));
      }
    }
    this.order = idx;
  }

  /** The index (into `shards`) of the shard of the key in row `i` of the key column's data. */
  route(kind: ValueKind, data: RecordBatch['data']['children'][number], i: number): number {
    // The validity bitmap at offset + i, the values at i (Arrow JS slices value buffers, not bitmaps).
    const bit = data.offset + i;
    const at = i;
    if (data.nullCount > 0 && data.nullBitmap && data.nullBitmap.length > 0 && !(data.nullBitmap[bit >> 3]! & (1 << (bit & 7)))) {
      throw new InvalidInputError('a row has a NULL shard key: it cannot be placed in any shard');
    }
    if (this.method === 'hash') {
      // Integer keys, the common case, row by row without a BigInt (each one an allocation: the
      // garbage collector takes about a third of a restore's worker CPU as it is).
      if (kind === 'int16' || kind === 'int32') return this.order[this.lastHashMinAtMost(hashInt4Into((data.values as Int16Array | Int32Array)[at]!, this.hash))]!;
      if (kind === 'int64') {
        const words = this.wordsOf64(data.values as BigInt64Array);
        return this.order[this.lastHashMinAtMost(hashInt8HalvesInto(words[2 * at + 1]!, words[2 * at]!, this.hash))]!;
      }
      const values = data.values as ArrayLike<number | bigint> & Uint8Array;
      let h: bigint;
      if (kind === 'uuid') h = hashUuidExtended(formatUuid(values, at * 16));
      else if (kind === 'date' && this.keyType === 'date') h = hashTimeValue('date', values[at] as number);
      else if ((kind === 'timestamp' || kind === 'timestamptz') && (this.keyType === 'timestamp' || this.keyType === 'timestamptz')) h = hashTimeValue(this.keyType, (data.values as BigInt64Array)[at]!);
      else h = hashTextExtended(canonicalText(kind, data, i)!);
      return this.order[lastAtMost(this.hashMins, h, (a, b) => (a < b ? -1 : a > b ? 1 : 0))]!;
    }
    let key: bigint | string;
    if (kind === 'date' && isTimeKey(this.keyType)) key = BigInt((data.values as Int32Array)[at]!);
    else if ((kind === 'timestamp' || kind === 'timestamptz') && isTimeKey(this.keyType)) key = (data.values as BigInt64Array)[at]!;
    else {
      const text = canonicalText(kind, data, i)!;
      key = NUMERIC_KEYS.includes(kind) ? BigInt(text) : isTimeKey(this.keyType) ? timeKeyValue(this.keyType, text) : normalizeKey(this.keyType, text);
    }
    const j = lastAtMost(this.rangeMins, key, this.compare);
    if (j < 0 || this.compare(key, this.rangeMaxes[j]!) >= 0) throw new KeyOutOfRangeError(this.table, canonicalText(kind, data, i)!);
    return this.order[j]!;
  }

  /** The last index whose hashMin is ≤ the hash (high signed, low unsigned), or -1. */
  private lastHashMinAtMost(h: HashParts): number {
    let lo = 0;
    let hi = this.minHi.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const mHi = this.minHi[mid]!;
      if (mHi < h.hi || (mHi === h.hi && this.minLo[mid]! <= h.lo)) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  private wordsOf64(values: BigInt64Array): Int32Array {
    if (this.wordsOf !== values) {
      this.words = int64Words(values);
      this.wordsOf = values;
    }
    return this.words;
  }
}

/** The last index whose value is ≤ x (values ascending), or -1. */
function lastAtMost<T>(values: readonly T[], x: T, cmp: (a: T, b: T) => number): number {
  let lo = 0;
  let hi = values.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cmp(values[mid]!, x) <= 0) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

// -------------------------------------------------------------------------------------- import

export interface UnitProgress {
  batches: number;
  rows: number;
}

export interface UnitResult {
  /** Rows per shard id that this unit holds there (committed now or by an earlier attempt). */
  rows: Record<string, number>;
  /** Shards an earlier attempt had already committed. */
  skipped: number[];
}

interface ShardStream {
  shard: RestoreShard;
  /** Its index in the router's shards (and in the unit's buffers). */
  index: number;
  client: pg.Client;
  stream: import('node:stream').Writable;
  failed: Promise<never>;
  rows: number;
}

/** The key column's index and Arrow kind, and every column's kind; a clear error when the key is not a column. */
function unitColumns(input: { table: string; columns: readonly ManifestColumn[]; keyColumn: string }): { keyIndex: number; keyKind: ValueKind; kinds: ValueKind[] } {
  const keyIndex = input.columns.findIndex((c) => c.name === input.keyColumn);
  if (keyIndex < 0) throw new InvalidInputError(`table ${input.table}: the shard key ${input.keyColumn} is not a column of the backup`);
  return { keyIndex, keyKind: input.columns[keyIndex]!.arrow, kinds: input.columns.map((c) => c.arrow) };
}

/**
 * Opens a shard's transaction under the canonical settings and takes the unit's ledger row there
 * (waiting for a concurrent attempt's). Null when it is ours (the transaction stays open for the
 * COPY); otherwise an earlier attempt committed the unit on this shard: the transaction is rolled
 * back and the rows it committed are returned.
 */
async function claimLedgerRow(client: pg.Client, restoreId: string, unit: number, shardId: number): Promise<number | null> {
  await client.query('begin');
  for (const s of canonicalSettingsSql()) await client.query(s);
  const mine = await client.query(`insert into ${LEDGER} (restore_id, unit, shard_id) values ($1, $2, $3) on conflict do nothing returning 1`, [restoreId, unit, shardId]);
  if (mine.rowCount !== 0) return null;
  const done = await client.query<{ rows: string }>(`select rows::text as rows from ${LEDGER} where restore_id = $1 and unit = $2 and shard_id = $3`, [restoreId, unit, shardId]);
  await client.query('rollback');
  return Number(done.rows[0]?.rows ?? 0);
}

/** A COPY into a shard's table in the client's open transaction, and a promise that rejects with the node's error when it fails. */
function openCopy(client: pg.Client, node: NodeTarget, table: string, binary: boolean): { stream: import('node:stream').Writable; failed: Promise<never> } {
  const stream = client.query(copyFrom(`copy ${table} from stdin${binary ? ' (format binary)' : ''}`));
  const failed = new Promise<never>((_, reject) => stream.on('error', (err) => reject(asNodeError(node, err))));
  failed.catch(() => undefined);
  if (binary) stream.write(BINARY_COPY_HEADER);
  return { stream, failed };
}

/**
 * Whether a COPY stream and the socket under it hold none of the bytes written to them: both have
 * handed everything on (the socket to the kernel), so a lent CopyBuffer may be written again.
 */
function letGo(copy: { stream: import('node:stream').Writable; client: pg.Client }): boolean {
  const socket = (copy.client as unknown as { connection?: { stream?: { writableLength?: number } } }).connection?.stream;
  return copy.stream.writableLength === 0 && socket?.writableLength === 0;
}

/**
 * How a unit's rows are written: COPY's binary format when every column has one (copy-binary.ts),
 * else text. `writers` makes a batch's column writers, `write` appends one row.
 */
function rowEncoding(columns: readonly ManifestColumn[]): {
  binary: boolean;
  writers: (batchColumns: readonly Data[]) => Array<(out: CopyBuffer, i: number) => void>;
  write: (out: CopyBuffer, writers: ReadonlyArray<(out: CopyBuffer, i: number) => void>, i: number) => void;
} {
  const binary = binaryKinds(columns);
  if (binary) return { binary: true, writers: (data) => binary.map((k, c) => binaryColumnWriter(k, data[c]!, `column ${columns[c]!.name}`)), write: writeBinaryRow };
  return { binary: false, writers: (data) => columns.map((col, c) => columnWriter(col.arrow, data[c]!)), write: writeRow };
}

/** Ends a shard's COPY and records its rows in the unit's ledger row; the transaction stays open for the commit. */
async function endCopy(copy: { client: pg.Client; stream: import('node:stream').Writable; failed: Promise<never> }, ledger: { restoreId: string; unit: number; shardId: number; rows: number }, binary: boolean): Promise<void> {
  copy.stream.end(binary ? BINARY_COPY_TRAILER : undefined);
  await Promise.race([once(copy.stream, 'finish'), copy.failed]);
  await copy.client.query(`update ${LEDGER} set rows = $4 where restore_id = $1 and unit = $2 and shard_id = $3`, [ledger.restoreId, ledger.unit, ledger.shardId, ledger.rows]);
}

/** Throws the abort's reason (the activity's cancellation) once `signal` is aborted. */
function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('import cancelled');
}

/** How a unit turns a batch's rows into its shards' COPY data. */
interface UnitEncoder {
  kinds: ValueKind[];
  keyIndex: number;
  keyKind: ValueKind;
  router: RowRouter;
  encoding: ReturnType<typeof rowEncoding>;
}

function unitEncoder(input: { table: string; columns: readonly ManifestColumn[]; keyColumn: string; router: RowRouter }): UnitEncoder {
  return { ...unitColumns(input), router: input.router, encoding: rowEncoding(input.columns) };
}

/**
 * Routes each row of `batch` and appends it to its shard's buffer in `out`, counting the rows per
 * shard in `counts`; a shard whose `skip` is true gets nothing (an earlier attempt committed it).
 */
function encodeBatch(enc: UnitEncoder, batch: RecordBatch, out: readonly CopyBuffer[], counts: number[], skip?: readonly boolean[]): void {
  const columns = enc.kinds.map((_, c) => batch.data.children[c]!);
  const writers = enc.encoding.writers(columns);
  const keyData = columns[enc.keyIndex]!;
  for (let r = 0; r < batch.numRows; r++) {
    const s = enc.router.route(enc.keyKind, keyData, r);
    if (skip?.[s]) continue;
    enc.encoding.write(out[s]!, writers, r);
    counts[s]!++;
  }
}

/**
 * Imports one unit: its batches, routed row by row, streamed to every shard that has not committed
 * this unit yet, each shard's COPY in a transaction with its ledger row. Returns the rows per shard.
 */
export async function importUnit(input: {
  restoreId: string;
  table: string;
  columns: readonly ManifestColumn[];
  keyColumn: string;
  router: RowRouter;
  nodes: ReadonlyMap<number, NodeTarget>;
  unit: ImportUnit;
  /** The unit's batches; a batch may be read into the memory of the one before (done with before the next is asked for). */
  batches: () => AsyncIterable<RecordBatch>;
  limits?: SessionLimits;
  onProgress?: (p: UnitProgress) => void;
  signal?: AbortSignal;
  /** One COPY at a time: the unit's shards one after the other (see importUnitOneStream). */
  oneStream?: boolean;
  /** The unit's size in the backup (bytes of its batches), when known: one stream encodes a unit up to ONE_STREAM_CACHE_BYTES once. */
  unitBytes?: number;
}): Promise<UnitResult> {
  if (input.oneStream) return importUnitOneStream(input);
  const { router, unit } = input;
  const limits = input.limits ?? {};
  const enc = unitEncoder(input);
  const { encoding } = enc;
  const result: UnitResult = { rows: {}, skipped: [] };
  const open: Array<ShardStream | null> = [];
  try {
    // One connection and transaction per shard; the ledger row first (it waits for a concurrent attempt's).
    // Taken one shard after the other in shard id order: two attempts never each hold a row the other waits for.
    const byId = router.shards.map((shard, i) => ({ shard, i })).sort((a, b) => a.shard.shardId - b.shard.shardId);
    for (const { shard, i } of byId) {
      await (async () => {
        const node = input.nodes.get(shard.nodeId)!;
        const client = await connect(node, limits);
        try {
          const done = await claimLedgerRow(client, input.restoreId, unit.index, shard.shardId);
          if (done !== null) {
            await client.end().catch(() => undefined);
            result.skipped.push(shard.shardId);
            result.rows[shard.shardId] = done;
            open[i] = null;
            return;
          }
          open[i] = { shard, index: i, client, ...openCopy(client, node, shardTable(shard.schema, input.table), encoding.binary), rows: 0 };
        } catch (err) {
          await client.end().catch(() => undefined);
          throw asNodeError(node, err);
        }
      })();
    }
    const active = open.filter((s): s is ShardStream => s !== null);
    const progress: UnitProgress = { batches: 0, rows: 0 };
    const out: CopyBuffer[] = active.length > 0 ? router.shards.map(() => new CopyBuffer()) : [];
    if (active.length > 0) {
      const counts = new Array<number>(router.shards.length).fill(0);
      const skip = open.map((st) => st === null);
      for await (const batch of input.batches()) {
        throwIfCancelled(input.signal);
        for (const st of active) out[st.index]!.reclaim(letGo(st));
        encodeBatch(enc, batch, out, counts, skip);
        await Promise.all(
          active.map(async (st) => {
            const i = st.index;
            if (counts[i] === 0) return;
            st.rows += counts[i]!;
            counts[i] = 0;
            if (!st.stream.write(out[i]!.lend())) await Promise.race([once(st.stream, 'drain'), st.failed]);
          }),
        );
        progress.batches++;
        progress.rows += batch.numRows;
        input.onProgress?.(progress);
        await failpoint('restore.import.after-batch', { signal: input.signal });
      }
    }
    await failpoint('restore.import.before-commit', { signal: input.signal });
    // End every COPY, then commit each shard with its row count in the ledger.
    await Promise.all(
      active.map(async (st) => {
        const node = input.nodes.get(st.shard.nodeId)!;
        try {
          await endCopy(st, { restoreId: input.restoreId, unit: unit.index, shardId: st.shard.shardId, rows: st.rows }, encoding.binary);
          await st.client.query('commit');
        } catch (err) {
          throw asNodeError(node, err);
        }
        result.rows[st.shard.shardId] = st.rows;
      }),
    );
    // Every COPY finished: the server has read all the bytes, the buffers are free for the next unit.
    for (const o of out) o.release();
    // Committed everywhere; a failure here is a lost reply: the retry finds every ledger row.
    await failpoint('restore.import.after-commit', { signal: input.signal });
    return result;
  } finally {
    await Promise.all(open.map((st) => st?.client.end().catch(() => undefined)));
  }
}

/** What one stream keeps of a unit between its shards' COPYs, at most: its batches, or its rows encoded. */
const ONE_STREAM_CACHE_BYTES = 64 * 1024 * 1024;

/** Whether one stream encodes a unit of `unitBytes` once (importUnitOneStreamEncoded) rather than in a pass per shard. */
function encodesOnce(unitBytes: number | undefined): boolean {
  return unitBytes !== undefined && unitBytes <= ONE_STREAM_CACHE_BYTES;
}

/**
 * Whether a unit's batches may be read in place (each into the memory of the one before): yes for
 * every import that is done with a batch before it reads the next, that is all but one stream's
 * passes over a unit of unknown size, which keep the unit's batches for the next shards when they fit.
 */
export function readsBatchesInPlace(oneStream: boolean, unitBytes: number | undefined): boolean {
  return !oneStream || unitBytes !== undefined;
}

/**
 * One stream's shards, one after the other in shard id order: for each, its own connection and
 * transaction, the ledger row first (as importUnit's: a shard an earlier attempt committed is
 * skipped), one COPY whose rows `send` writes, the rows in the ledger row, and the commit before the
 * next shard's starts. A crash between two shards' commits leaves the first committed with its
 * ledger row: the retry skips it and imports the rest.
 */
async function shardsInTurn(
  input: Parameters<typeof importUnit>[0],
  binary: boolean,
  result: UnitResult,
  send: (index: number, copy: { client: pg.Client; stream: import('node:stream').Writable; failed: Promise<never> }) => Promise<{ rows: number; committed: () => void }>,
): Promise<void> {
  const byId = input.router.shards.map((shard, i) => ({ shard, i })).sort((a, b) => a.shard.shardId - b.shard.shardId);
  for (const { shard, i } of byId) {
    const node = input.nodes.get(shard.nodeId)!;
    const client = await connect(node, input.limits ?? {});
    try {
      const done = await claimLedgerRow(client, input.restoreId, input.unit.index, shard.shardId);
      if (done !== null) {
        result.skipped.push(shard.shardId);
        result.rows[shard.shardId] = done;
        continue;
      }
      const copy = { client, ...openCopy(client, node, shardTable(shard.schema, input.table), binary) };
      const { rows, committed } = await send(i, copy);
      await endCopy(copy, { restoreId: input.restoreId, unit: input.unit.index, shardId: shard.shardId, rows }, binary);
      await failpoint('restore.import.before-commit', { signal: input.signal });
      await client.query('commit');
      committed();
      result.rows[shard.shardId] = rows;
      // Committed; a failure here is a lost reply: the retry finds this shard's ledger row.
      await failpoint('restore.import.shard-committed', { signal: input.signal });
    } catch (err) {
      throw asNodeError(node, err);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/**
 * One stream, the unit encoded once: its batches read once (in place), each row encoded into its
 * shard's buffer; then the shards in turn (shardsInTurn), each with one COPY of its buffer. The
 * unit's rows are held as COPY data until their shard's turn: only for a unit of at most
 * ONE_STREAM_CACHE_BYTES (a few batches); a bigger one goes through importUnitOneStream's passes.
 * Encoded in a pass per shard instead, with the batches kept between passes, a unit took twice the
 * worker CPU of the parallel import's (12-14 s against 6-7 s for the bench's 5M rows): the one-stream
 * baseline of the restore bench would have been slower than it need be.
 */
async function importUnitOneStreamEncoded(input: Parameters<typeof importUnit>[0]): Promise<UnitResult> {
  const { router } = input;
  const enc = unitEncoder(input);
  const { encoding } = enc;
  const result: UnitResult = { rows: {}, skipped: [] };
  const progress: UnitProgress = { batches: 0, rows: 0 };
  const out = router.shards.map(() => new CopyBuffer());
  const counts = new Array<number>(router.shards.length).fill(0);
  for await (const batch of input.batches()) {
    throwIfCancelled(input.signal);
    encodeBatch(enc, batch, out, counts);
    progress.batches++;
    progress.rows += batch.numRows;
    input.onProgress?.(progress);
    await failpoint('restore.import.after-batch', { signal: input.signal });
  }
  await shardsInTurn(input, encoding.binary, result, async (i, copy) => {
    if (counts[i]! > 0 && !copy.stream.write(out[i]!.lend())) await Promise.race([once(copy.stream, 'drain'), copy.failed]);
    return { rows: counts[i]!, committed: () => out[i]!.release() };
  });
  await failpoint('restore.import.after-commit', { signal: input.signal });
  return result;
}

/**
 * The import of one unit through one connection at a time, as `pg_restore` without `-j` loads: the
 * shards in turn (shardsInTurn), each with one COPY of the unit's rows that belong there. A unit of
 * known size up to ONE_STREAM_CACHE_BYTES is encoded once (importUnitOneStreamEncoded); otherwise
 * in a pass per shard: the unit's batches are read on the first pass and kept for the next shards'
 * passes when they fit in ONE_STREAM_CACHE_BYTES (else, as for a pg_dump's whole table, read again
 * for each shard), and the route of every row is computed on the first pass and kept (two bytes or
 * four a row), so a pass after the first only encodes.
 */
async function importUnitOneStream(input: Parameters<typeof importUnit>[0]): Promise<UnitResult> {
  if (encodesOnce(input.unitBytes)) return importUnitOneStreamEncoded(input);
  const { router } = input;
  const { keyIndex, keyKind, kinds } = unitColumns(input);
  const encoding = rowEncoding(input.columns);
  const result: UnitResult = { rows: {}, skipped: [] };
  const progress: UnitProgress = { batches: 0, rows: 0 };
  const routes: Array<Uint16Array | Int32Array> = [];
  // The unit's batches as read on the first pass, kept for the next shards' when they fit (else read again).
  // Here a unit of known size is bigger than that (else it is encoded once): it is not kept at all.
  let cache: RecordBatch[] | null = input.unitBytes === undefined ? [] : null;
  let cacheBytes = 0;
  let cached: RecordBatch[] | null = null;
  await shardsInTurn(input, encoding.binary, result, async (i, copy) => {
    const out = new CopyBuffer();
    let rows = 0;
    let b = 0;
    for await (const batch of cached ?? input.batches()) {
      throwIfCancelled(input.signal);
      const columns = kinds.map((_, c) => batch.data.children[c]!);
      let route = routes[b];
      if (route === undefined) {
        route = router.shards.length <= 65_536 ? new Uint16Array(batch.numRows) : new Int32Array(batch.numRows);
        const keyData = columns[keyIndex]!;
        for (let r = 0; r < batch.numRows; r++) route[r] = router.route(keyKind, keyData, r);
        routes[b] = route;
        if (cache !== null) {
          cacheBytes += batch.data.byteLength;
          if (cacheBytes <= ONE_STREAM_CACHE_BYTES) cache.push(batch);
          else cache = null;
        }
      }
      b++;
      const writers = encoding.writers(columns);
      out.reclaim(letGo(copy));
      let n = 0;
      for (let r = 0; r < batch.numRows; r++) {
        if (route[r] !== i) continue;
        encoding.write(out, writers, r);
        n++;
      }
      if (n > 0) {
        rows += n;
        if (!copy.stream.write(out.lend())) await Promise.race([once(copy.stream, 'drain'), copy.failed]);
      }
      progress.batches++;
      progress.rows += n;
      input.onProgress?.(progress);
      await failpoint('restore.import.after-batch', { signal: input.signal });
    }
    if (cache !== null && cached === null) cached = cache;
    return { rows, committed: () => out.release() };
  });
  await failpoint('restore.import.after-commit', { signal: input.signal });
  return result;
}

// ---------------------------------------------------------------------------- indexes, verify

/**
 * Runs `work` for each item on at most `sessions` connections to the node at once (each its own).
 * With more than one, PostgreSQL's parallel workers inside a statement are turned off on them: the
 * restore's own sessions are the parallelism then, and both at once would compete for the node's
 * cores (measured on 2 cores: a primary key built with 2 parallel maintenance workers took 40% more
 * CPU than built by one process, and came out no sooner when the cores were busy).
 */
async function perShardSessions<T, R>(
  node: NodeTarget,
  items: readonly T[],
  sessions: number,
  limits: SessionLimits,
  work: (client: pg.Client, item: T) => Promise<R>,
  /** Settings each session starts with, given how many sessions there are. */
  settings: (sessions: number) => string[] = () => [],
): Promise<R[]> {
  const n = Math.max(1, Math.min(Math.floor(sessions), items.length));
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  // Every session ends before the first failure is thrown: nothing of this call still runs on the node then.
  const ended = await Promise.allSettled(
    Array.from({ length: n }, () =>
      onNode(node, limits, async (client) => {
        for (const setting of settings(n)) await client.query(setting);
        if (n > 1) await client.query('set max_parallel_workers_per_gather = 0; set max_parallel_maintenance_workers = 0');
        while (!failed && next < items.length) {
          const i = next++;
          try {
            out[i] = await work(client, items[i]!);
          } catch (err) {
            failed = true;
            throw err;
          }
        }
      }),
    ),
  );
  const failure = ended.find((e) => e.status === 'rejected');
  if (failure) throw failure.reason;
  return out;
}

/**
 * After the load, on one node: each shard's primary key and indexes, then ANALYZE, the shards on up
 * to `sessions` connections at once (perShardSessions). Safe to repeat (what exists is left as it is).
 * maintenance_work_mem: 256 MB a node, shared by its sessions (64 MB each at least).
 */
export async function buildRestoreIndexes(
  node: NodeTarget,
  input: { table: string; schemas: string[]; primaryKey: string[]; indexes: ReadonlyArray<{ name: string; unique: boolean; definition: string }> },
  limits: SessionLimits = {},
  onShardDone?: (schema: string) => void,
  sessions = 1,
): Promise<void> {
  await perShardSessions(
    node,
    input.schemas,
    sessions,
    limits,
    async (client, schema) => {
      const target = shardTable(schema, input.table);
      if (input.primaryKey.length > 0) {
        const { rowCount } = await client.query(`select 1 from pg_constraint where conrelid = $1::regclass and contype = 'p'`, [target]);
        if (!rowCount) await client.query(`alter table ${target} add primary key (${input.primaryKey.map(quoteIdent).join(', ')})`);
      }
      for (const ix of input.indexes) {
        await client.query(singleStatement(`create ${ix.unique ? 'unique ' : ''}index if not exists ${quoteIdent(ix.name)} on ${target} ${ix.definition}`));
      }
      await client.query(`analyze ${target}`);
      onShardDone?.(schema);
    },
    (n) => [`set maintenance_work_mem = '${Math.max(64, Math.floor(256 / n))}MB'`],
  );
}

export interface ShardCheck {
  shardId: number;
  rows: number;
  sum: string;
  /** Rows whose key is not in the shard's own range (never expected: the routing would be wrong). */
  misplaced: number;
  /** `sum` is the record digest (RECORD_DIGEST_ALGORITHM), not the text digest. */
  record?: boolean;
}

/**
 * Row count, row digest (as the manifest's) and misplaced rows of each of the node's shards, on up
 * to `sessions` connections at once (perShardSessions).
 */
export async function checkRestoredShards(
  node: NodeTarget,
  input: { table: string; keyColumn: string; keyType: KeyType; shards: readonly RestoreShard[]; record?: ReadonlyArray<{ name: string; pgType: string }> },
  limits: SessionLimits = {},
  sessions = 1,
): Promise<ShardCheck[]> {
  return perShardSessions(
    node,
    input.shards,
    sessions,
    limits,
    async (client, shard): Promise<ShardCheck> => {
      await client.query('begin isolation level repeatable read read only');
      try {
        for (const s of canonicalSettingsSql()) await client.query(s);
        const key = `sc_row.${quoteIdent(input.keyColumn)}`;
        const inRange =
          shard.hashMin !== undefined
            ? `${sqlHashFunction(input.keyType)}(${key}, 0) between ${quoteLiteral(shard.hashMin)}::bigint and ${quoteLiteral(shard.hashMax!)}::bigint`
            : `${key} >= ${quoteLiteral(shard.rangeMin!)} and ${key} < ${quoteLiteral(shard.rangeMax!)}`;
        // One scan: the count, the digest and the rows outside the shard's range.
        // With `record`, the record digest alone (the backup's cheaper one), else the text digest.
        const misplaced = `count(*) filter (where not (${inRange}))`;
        const sql = input.record ? digestsSql(shard.schema, input.table, { text: false, record: input.record, extra: misplaced }) : rowDigestSql(shard.schema, input.table, misplaced);
        const digest = await client.query<{ n: string; s?: string; r?: string; x: string }>(sql);
        const row = digest.rows[0]!;
        return { shardId: shard.shardId, rows: Number(row.n), sum: (input.record ? row.r : row.s)!, misplaced: Number(row.x), ...(input.record ? { record: true } : {}) };
      } finally {
        await client.query('rollback').catch(() => undefined);
      }
    },
  );
}

/** Gives the node's verified shards back to autovacuum (the table's own settings). Safe to repeat. */
export async function resumeAutovacuum(node: NodeTarget, input: { table: string; schemas: readonly string[] }, limits: SessionLimits = {}): Promise<void> {
  await onNode(node, limits, async (client) => {
    for (const schema of input.schemas) await client.query(`alter table ${shardTable(schema, input.table)} reset (autovacuum_enabled, toast.autovacuum_enabled)`);
  });
}

/** The shards' checks against the backup's digest: throws RestoreVerificationError naming what differs. */
export function compareWithManifest(table: string, expected: RowDigest, checks: readonly ShardCheck[]): RowDigest {
  const misplaced = checks.filter((c) => c.misplaced > 0);
  if (misplaced.length > 0) {
    throw new RestoreVerificationError(`table ${table}: ${misplaced.map((c) => `shard ${c.shardId} holds ${c.misplaced} row(s) outside its range`).join('; ')}`);
  }
  const rows = checks.reduce((a, c) => a + c.rows, 0);
  const sum = checks.reduce((a, c) => a + BigInt(c.sum), 0n);
  const record = checks.length > 0 && checks.every((c) => c.record);
  if (checks.some((c) => !c.record !== !record)) throw new RestoreVerificationError(`table ${table}: the shards were checked with different digests`);
  const want = record ? expected.record : expected.sum;
  if (want === undefined) throw new RestoreVerificationError(`table ${table}: the shards were checked with the record digest, and the backup has none`);
  // The manifest's sums are of signed 64-bit hashes, exact: compared as integers.
  if (rows !== expected.rows) throw new RestoreVerificationError(`table ${table}: ${rows} rows restored, the backup holds ${expected.rows}`);
  if (sum.toString() !== want) {
    throw new RestoreVerificationError(`table ${table}: the restored rows' ${record ? 'record ' : ''}checksum is ${sum}, the backup's is ${want} (same count, different content)`);
  }
  return record ? { rows, sum: expected.sum, record: sum.toString() } : { rows, sum: sum.toString() };
}

/** Removes a restore's ledger rows from a node (after it is published, or undone). */
export async function clearLedger(node: NodeTarget, restoreId: string, limits: SessionLimits = {}): Promise<void> {
  await onNode(node, limits, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_namespace where nspname = $1', [LEDGER_SCHEMA]);
    if (rowCount) await client.query(`delete from ${LEDGER} where restore_id = $1`, [restoreId]);
  });
}

/** Rows a restore's ledger holds per shard on a node (what was committed so far). */
export async function ledgerRows(node: NodeTarget, restoreId: string, limits: SessionLimits = {}): Promise<Map<number, number>> {
  return onNode(node, limits, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_namespace where nspname = $1', [LEDGER_SCHEMA]);
    if (!rowCount) return new Map();
    const { rows } = await client.query<{ shard_id: string; rows: string }>(`select shard_id::text, sum(rows)::text as rows from ${LEDGER} where restore_id = $1 group by shard_id`, [restoreId]);
    return new Map(rows.map((r) => [Number(r.shard_id), Number(r.rows)]));
  });
}
