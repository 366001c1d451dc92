/**
 * The workload profile a router keeps when created with `profile` (migrations/0019_workload_profile.sql).
 * Every statement it routes is reduced to its template with PostgreSQL's parser (templates.ts), once
 * per distinct SQL text: a bounded map from text to template makes a repeated statement cost a map
 * lookup. Per template: calls, rows returned, total and max latency, single-shard and scatter calls;
 * per distributed table: accesses per shard and the shard-key values given to forKey, in a count-min
 * sketch with a top-k list (sketch.ts). Memory is bounded whatever the number of distinct statements
 * and keys: the text cache and the template map have a size limit, the sketches a fixed size, the
 * shard counts one entry per shard of the map.
 *
 * Every `flushIntervalMs` the interval's counts are written to the catalog in one transaction named
 * by a flush id: a flush that fails keeps its batch and the next flush writes it first, under the same
 * id, so a commit whose reply was lost is not counted twice. Parameter values are never stored: a
 * template's text has its constants replaced by $n and its features leave constants out; the only
 * values written are the shard keys of the hot-key lists.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Queryable } from '../catalog/nodes.js';
import { failpoint } from '../failpoints.js';
import { KeyCounter, type SketchOptions } from './sketch.js';
import { featureVector, loadQueryParser, templateOf, type QueryFeatures } from './templates.js';

export interface ProfileOptions {
  /** How often the counts are written to the catalog (default 60000 ms). */
  flushIntervalMs?: number;
  /** Distinct SQL texts whose template is cached (default 2000). */
  maxStatements?: number;
  /** Templates counted per interval (default 1000); calls of others are counted as `dropped`. */
  maxTemplates?: number;
  /** Heavy hitters written per table and interval (default 20). */
  topKeys?: number;
  /** The per-table key sketch (default 4096 × 4 counters, 256 listed keys). */
  sketch?: SketchOptions;
}

const DEFAULTS = { flushIntervalMs: 60_000, maxStatements: 2000, maxTemplates: 1000, topKeys: 20 };
const SKETCH: SketchOptions = { width: 4096, depth: 4, capacity: 256, maxKeyLength: 128 };
const BUCKET_MS = 60_000;

/** What a SQL text reduces to, computed once per text. */
export interface TemplateInfo {
  id: string;
  fingerprint: string;
  query: string;
  features: QueryFeatures;
  vector: number[];
}

interface TemplateCounts {
  info: TemplateInfo;
  calls: number;
  rows: number;
  totalMs: number;
  maxMs: number;
  singleShard: number;
  scatter: number;
  firstSeen: number;
  lastSeen: number;
}

interface TableCounts {
  keys: KeyCounter;
  shards: Map<number, number>;
}

/** One interval's counts. */
export class ProfileBatch {
  readonly id = randomUUID();
  readonly startedAt = Date.now();
  readonly templates = new Map<string, TemplateCounts>();
  readonly tables = new Map<string, TableCounts>();
  dropped = 0;
  unparsed = 0;

  constructor(private readonly limits: { maxTemplates: number; sketch: SketchOptions }) {}

  get empty(): boolean {
    return this.templates.size === 0 && this.tables.size === 0;
  }

  table(name: string): TableCounts {
    let t = this.tables.get(name);
    if (!t) this.tables.set(name, (t = { keys: new KeyCounter(this.limits.sketch), shards: new Map() }));
    return t;
  }

  call(info: TemplateInfo, rows: number, ms: number, scatter: boolean): void {
    let t = this.templates.get(info.id);
    const now = Date.now();
    if (!t) {
      if (this.templates.size >= this.limits.maxTemplates) {
        this.dropped++;
        return;
      }
      this.templates.set(info.id, (t = { info, calls: 0, rows: 0, totalMs: 0, maxMs: 0, singleShard: 0, scatter: 0, firstSeen: now, lastSeen: now }));
    }
    t.calls++;
    t.rows += rows;
    t.totalMs += ms;
    if (ms > t.maxMs) t.maxMs = ms;
    if (scatter) t.scatter++;
    else t.singleShard++;
    t.lastSeen = now;
  }
}

/** Features without the constants they were read with: what may be stored. */
export function featuresWithoutValues(f: QueryFeatures): QueryFeatures {
  return {
    ...f,
    predicates: f.predicates.map((p) => ({ ...p, values: [] })),
    inserted: f.inserted.map((c) => ({ ...c, values: [] })),
  };
}

export class WorkloadProfile {
  readonly options: Required<Omit<ProfileOptions, 'sketch'>> & { sketch: SketchOptions };
  /** SQL text → its template (null: it does not parse). Oldest text evicted first when full. */
  private readonly texts = new Map<string, TemplateInfo | null>();
  private batch: ProfileBatch;
  /** A batch whose flush failed: written first, under its id, by the next flush. */
  private pending?: ProfileBatch;
  private flushing?: Promise<void>;

  /** The router's client region ('' without one): hot keys are counted per region. */
  readonly region: string;

  constructor(options: ProfileOptions = {}, region?: string) {
    this.region = region ?? '';
    const o = { ...DEFAULTS, ...options, sketch: { ...SKETCH, ...options.sketch } };
    for (const k of ['flushIntervalMs', 'maxStatements', 'maxTemplates', 'topKeys'] as const) {
      if (!Number.isSafeInteger(o[k]) || o[k] < 1) throw new RangeError(`profile.${k}: expected a whole number ≥ 1, got ${String(o[k])}`);
    }
    this.options = o;
    new KeyCounter(o.sketch); // the sketch's options checked now
    this.batch = this.newBatch();
  }

  static async load(): Promise<void> {
    await loadQueryParser();
  }

  /** The counts of the interval under way (for tests and inspection). */
  get current(): ProfileBatch {
    return this.batch;
  }

  get cachedStatements(): number {
    return this.texts.size;
  }

  /** Upper bound of the bytes held by the sketches of one batch (fixed: one sketch per table). */
  sketchBytes(): number {
    let n = 0;
    for (const t of this.batch.tables.values()) n += t.keys.bytes();
    return n;
  }

  private newBatch(): ProfileBatch {
    return new ProfileBatch({ maxTemplates: this.options.maxTemplates, sketch: this.options.sketch });
  }

  /** The statement's template, parsed once per text. */
  templateFor(sql: string): TemplateInfo | null {
    const cached = this.texts.get(sql);
    if (cached !== undefined) return cached;
    let info: TemplateInfo | null;
    try {
      const t = templateOf(sql);
      info = { id: t.shape, fingerprint: t.fingerprint, query: t.text, features: featuresWithoutValues(t.features), vector: Array.from(featureVector(t.features)) };
    } catch {
      info = null;
    }
    if (this.texts.size >= this.options.maxStatements) this.texts.delete(this.texts.keys().next().value!);
    this.texts.set(sql, info);
    return info;
  }

  /** A statement run: its template's counts. */
  statement(sql: string, rows: number, ms: number, scatter: boolean): void {
    const info = this.templateFor(sql);
    if (info) this.batch.call(info, rows, ms, scatter);
    else this.batch.unparsed++;
  }

  /** One access by shard key (a forKey statement or transaction): the key's count and the shard's. */
  keyAccess(table: string, key: unknown, shardId: number): void {
    const t = this.batch.table(table);
    t.keys.add(keyText(key));
    t.shards.set(shardId, (t.shards.get(shardId) ?? 0) + 1);
  }

  /** A scatter statement: one access to each shard. */
  shardAccesses(table: string, shardIds: readonly number[]): void {
    const t = this.batch.table(table);
    for (const id of shardIds) t.shards.set(id, (t.shards.get(id) ?? 0) + 1);
  }

  /**
   * Writes the counts gathered since the last flush (a failed flush's first, under its id). When
   * the catalog cannot take them they are kept for the next flush, and the error is thrown.
   */
  async flush(catalog: pg.Pool): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    const run = async () => {
      if (this.pending) {
        await writeBatch(catalog, this.pending, this.options.topKeys, this.region);
        this.pending = undefined;
      }
      if (this.batch.empty) return;
      this.pending = this.batch;
      this.batch = this.newBatch();
      await writeBatch(catalog, this.pending, this.options.topKeys, this.region);
      this.pending = undefined;
    };
    this.flushing = run().finally(() => (this.flushing = undefined));
    await this.flushing;
  }
}

/** A key as the hot-key list keeps it: text as given; numbers and bigints in decimal; anything else as JSON. */
function keyText(key: unknown): string {
  if (typeof key === 'string') return key;
  if (typeof key === 'number' || typeof key === 'bigint') return String(key);
  return JSON.stringify(key) ?? String(key);
}

const bucketOf = (ms: number): Date => new Date(Math.floor(ms / BUCKET_MS) * BUCKET_MS);

/** One batch in one transaction; nothing when its id was already committed (a retry after a lost reply). */
async function writeBatch(pool: pg.Pool, batch: ProfileBatch, topKeys: number, region: string): Promise<void> {
  const db = await pool.connect();
  let failed: unknown;
  try {
    await db.query('begin');
    try {
      const { rowCount } = await db.query('insert into shardcast_stats.profile_flushes (id) values ($1) on conflict do nothing', [batch.id]);
      if (rowCount === 1) await writeCounts(db, batch, topKeys, region);
      await db.query('commit');
    } catch (err) {
      await db.query('rollback').catch(() => undefined);
      throw err;
    }
    await failpoint('profile.flush.after-commit');
  } catch (err) {
    failed = err;
    throw err;
  } finally {
    db.release(failed instanceof Error ? failed : undefined);
  }
}

async function writeCounts(db: Queryable, batch: ProfileBatch, topKeys: number, region: string): Promise<void> {
  const bucket = bucketOf(batch.startedAt);
  const templates = [...batch.templates.values()].map((t) => ({
    id: t.info.id,
    fingerprint: t.info.fingerprint,
    query: t.info.query,
    kind: t.info.features.kind,
    tables: t.info.features.tables,
    features: t.info.features,
    vector: t.info.vector,
    calls: t.calls,
    rows: t.rows,
    total_ms: t.totalMs,
    max_ms: t.maxMs,
    single: t.singleShard,
    scatter: t.scatter,
    first_seen: new Date(t.firstSeen).toISOString(),
    last_seen: new Date(t.lastSeen).toISOString(),
  }));
  if (templates.length) {
    await db.query(
      `insert into shardcast_stats.query_templates as q
         (template_id, fingerprint, query, kind, tables, features, feature_vector, calls, rows, total_ms, max_ms, single_shard, scatter, first_seen, last_seen)
       select id, fingerprint, query, kind, array(select jsonb_array_elements_text(tables)), features, array(select jsonb_array_elements_text(vector)::real),
              calls, rows, total_ms, max_ms, single, scatter, first_seen, last_seen
         from jsonb_to_recordset($1::jsonb) as t(id text, fingerprint text, query text, kind text, tables jsonb, features jsonb, vector jsonb,
              calls bigint, rows bigint, total_ms float8, max_ms float8, single bigint, scatter bigint, first_seen timestamptz, last_seen timestamptz)
       on conflict (template_id) do update set
         calls = q.calls + excluded.calls, rows = q.rows + excluded.rows, total_ms = q.total_ms + excluded.total_ms,
         max_ms = greatest(q.max_ms, excluded.max_ms), single_shard = q.single_shard + excluded.single_shard,
         scatter = q.scatter + excluded.scatter, first_seen = least(q.first_seen, excluded.first_seen), last_seen = greatest(q.last_seen, excluded.last_seen)`,
      [JSON.stringify(templates)],
    );
    await db.query(
      `insert into shardcast_stats.template_calls as c (template_id, bucket, calls, rows, total_ms, single_shard, scatter)
       select id, $2, calls, rows, total_ms, single, scatter
         from jsonb_to_recordset($1::jsonb) as t(id text, calls bigint, rows bigint, total_ms float8, single bigint, scatter bigint)
       on conflict (template_id, bucket) do update set calls = c.calls + excluded.calls, rows = c.rows + excluded.rows,
         total_ms = c.total_ms + excluded.total_ms, single_shard = c.single_shard + excluded.single_shard, scatter = c.scatter + excluded.scatter`,
      [JSON.stringify(templates), bucket],
    );
  }
  const shards: Array<{ t: string; s: number; n: number }> = [];
  const keyed: Array<{ t: string; n: number }> = [];
  const hot: Array<{ t: string; k: string; n: number; lb: number }> = [];
  for (const [table, counts] of batch.tables) {
    for (const [s, n] of counts.shards) shards.push({ t: table, s, n });
    if (counts.keys.total > 0) keyed.push({ t: table, n: counts.keys.total });
    for (const h of counts.keys.top(topKeys)) hot.push({ t: table, k: h.key, n: Math.round(h.count), lb: Math.round(h.lowerBound) });
  }
  if (shards.length) {
    await db.query(
      `insert into shardcast_stats.shard_accesses as a (table_name, shard_id, bucket, accesses)
       select t, s, $2, n from jsonb_to_recordset($1::jsonb) as x(t text, s bigint, n bigint)
       on conflict (table_name, shard_id, bucket) do update set accesses = a.accesses + excluded.accesses`,
      [JSON.stringify(shards), bucket],
    );
  }
  if (keyed.length) {
    await db.query(
      `insert into shardcast_stats.key_accesses as a (table_name, bucket, accesses)
       select t, $2, n from jsonb_to_recordset($1::jsonb) as x(t text, n bigint)
       on conflict (table_name, bucket) do update set accesses = a.accesses + excluded.accesses`,
      [JSON.stringify(keyed), bucket],
    );
  }
  if (hot.length) {
    await db.query(
      `insert into shardcast_stats.hot_keys as h (table_name, bucket, key, region, count, lower_bound)
       select t, $2, k, $3, n, lb from jsonb_to_recordset($1::jsonb) as x(t text, k text, n bigint, lb bigint)
       on conflict (table_name, bucket, key, region) do update set count = h.count + excluded.count, lower_bound = h.lower_bound + excluded.lower_bound`,
      [JSON.stringify(hot), bucket, region],
    );
  }
}
