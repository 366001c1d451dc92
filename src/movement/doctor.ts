import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { listNodes, type NodeRecord } from '../catalog/nodes.js';
import { errorMessage } from '../errors.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';
import { commitCatalogSwitch, commitPreparedIfAny, onServer } from './cutover.js';
import { movementLeaseRows, type MovementLeaseRow } from './lease.js';
import { dropSubscription, movementLeftovers, WATERMARKS } from './replication.js';

/**
 * The janitor (issue 9 §5): what a terminated workflow, a crash or retries running out after the
 * cutover leave behind — replication slots, publications, subscriptions, watermarks, prepared
 * transactions, running leases, fenced and half-built shard schemas — found on the catalog and every
 * node and attributed to the movement that left them (by name and the catalog's movements rows).
 * Only objects of movements whose workflow is closed (or no longer exists) are fixed, and a half-done
 * switch is finished or undone by the rules of cutover recovery: never undo what cannot be proven
 * uncommitted.
 */

export const LEFTOVER_KINDS = ['lease', 'prepared-transaction', 'subscription', 'slot', 'publication', 'watermark', 'fenced-schema', 'target-schema'] as const;
export type LeftoverKind = (typeof LEFTOVER_KINDS)[number];

/** running: the movement is alive, its objects are in use. closed / not-found: a leftover. unknown: no movement to ask about. */
export type WorkflowState = 'running' | 'closed' | 'not-found' | 'unknown';

export interface Leftover {
  kind: LeftoverKind;
  /** 'catalog' or a node's name. */
  node: string;
  name: string;
  movementId: string | null;
  workflowId: string | null;
  workflow: WorkflowState;
}

export interface DoctorAction {
  kind: LeftoverKind;
  node: string;
  name: string;
  movementId: string;
  /** What was done: dropped, committed, rolled back, lease ended. */
  action: string;
  ok: boolean;
  error?: string;
}

export interface DoctorReport {
  checkedAt: string;
  /** What --fix did (empty without it). */
  actions: DoctorAction[];
  /** Leftovers still there: of closed, vanished or unknown movements, and what could not be decided. */
  leftovers: Leftover[];
  /** Objects of movements whose workflow still runs: not leftovers, listed for completeness. */
  inUse: Leftover[];
  /** Nodes (or the catalog) that could not be checked. */
  unreachable: Array<{ node: string; error: string }>;
}

export interface DoctorDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  pools: NodePools;
  /** The workflow's state in Temporal: 'running', 'closed' or 'not-found' (a vanished workflow counts as closed). */
  workflowState(workflowId: string): Promise<Exclude<WorkflowState, 'unknown'>>;
}

export interface DoctorOptions {
  fix?: boolean;
  /** Log line per action (the CLI and the activity pass one). */
  log?: (line: string) => void;
}

interface Scan {
  movements: Map<string, MovementLeaseRow>;
  nodes: NodeRecord[];
  found: Leftover[];
  unreachable: Array<{ node: string; error: string }>;
}

const CATALOG = 'catalog';

export function isLeftover(l: Leftover): boolean {
  return l.workflow !== 'running';
}

/** Finds every leftover; with `fix`, cleans those of closed movements, then looks again. */
export async function doctor(deps: DoctorDeps, options: DoctorOptions = {}): Promise<DoctorReport> {
  const states = new Map<string, Promise<Exclude<WorkflowState, 'unknown'>>>();
  const stateOf = (workflowId: string) => {
    let s = states.get(workflowId);
    if (!s) states.set(workflowId, (s = deps.workflowState(workflowId)));
    return s;
  };
  const actions: DoctorAction[] = [];
  let scan = await scanAll(deps, stateOf);
  // A committed fence turns the source schema into a fenced one: a second round drops it.
  for (let round = 0; options.fix && round < 4; round++) {
    const fixable = scan.found.filter((l) => (l.workflow === 'closed' || l.workflow === 'not-found') && l.movementId !== null);
    if (fixable.length === 0) break;
    const before = actions.length;
    for (const id of new Set(fixable.map((l) => l.movementId!))) {
      await fixMovement(deps, scan, scan.movements.get(id)!, fixable.filter((l) => l.movementId === id), actions, options.log);
    }
    scan = await scanAll(deps, stateOf);
    if (actions.slice(before).every((a) => !a.ok)) break;
  }
  return {
    checkedAt: new Date().toISOString(),
    actions,
    leftovers: scan.found.filter(isLeftover),
    inUse: scan.found.filter((l) => !isLeftover(l)),
    unreachable: scan.unreachable,
  };
}

async function scanAll(deps: DoctorDeps, stateOf: (workflowId: string) => Promise<Exclude<WorkflowState, 'unknown'>>): Promise<Scan> {
  const [movementRows, nodes, placements, shards, catalogPrepared] = await Promise.all([
    movementLeaseRows(deps.catalog),
    listNodes(deps.catalog),
    deps.catalog.query<{ schema: string; node_id: number }>(
      'select s.schema_name as schema, p.node_id::int from shardcast.placements p join shardcast.shards s on s.id = p.shard_id',
    ),
    deps.catalog.query<{ schema: string }>('select schema_name as schema from shardcast.shards'),
    deps.catalog.query<{ gid: string }>(`select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database() order by gid`),
  ]);
  const movements = new Map(movementRows.map((m) => [m.id, m]));
  const placed = new Set(placements.rows.map((p) => `${p.node_id}/${p.schema}`));
  const knownShard = new Set(shards.rows.map((s) => s.schema));
  const raw: Array<Omit<Leftover, 'workflow' | 'workflowId'>> = [];
  const unreachable: Scan['unreachable'] = [];

  for (const m of movements.values()) if (m.state === 'running') raw.push({ kind: 'lease', node: CATALOG, name: m.id, movementId: m.id });
  for (const { gid } of catalogPrepared.rows) raw.push({ kind: 'prepared-transaction', node: CATALOG, name: gid, movementId: movementOfName(movements, gid) });

  await Promise.all(
    nodes.map(async (node) => {
      try {
        const [objects, schemas] = await Promise.all([
          movementLeftovers(deps.pools, node),
          deps.pools
            .get(node.dsn)
            .query<{ name: string }>(`select nspname::text as name from pg_namespace where nspname ~ '^sc_s[0-9]+($|_moved_)' order by 1`),
        ]);
        const add = (kind: LeftoverKind, names: string[]) => {
          for (const name of names) raw.push({ kind, node: node.name, name, movementId: movementOfName(movements, name) });
        };
        add('prepared-transaction', objects.preparedTransactions);
        add('subscription', objects.subscriptions);
        add('slot', objects.slots);
        add('publication', objects.publications);
        add('watermark', objects.watermarks);
        // A source whose fence is prepared keeps its schema name until the fence commits: once the
        // catalog switch committed, the catalog no longer places it here, yet it is that movement's source.
        const pendingSources = new Map<string, string>();
        for (const gid of objects.preparedTransactions) {
          const m = movements.get(movementOfName(movements, gid) ?? '');
          if (m) for (const shard of sourceShardsOn(m, node.id)) pendingSources.set(`sc_s${shard}`, m.id);
        }
        for (const { name } of schemas.rows) {
          const fenced = /^sc_s\d+_moved_(.+)$/.exec(name);
          if (fenced) {
            raw.push({ kind: 'fenced-schema', node: node.name, name, movementId: movements.has(fenced[1]!) ? fenced[1]! : null });
          } else if (!placed.has(`${node.id}/${name}`)) {
            const movementId = pendingSources.get(name) ?? targetSchemaMovement(movements, node, name, knownShard.has(name));
            raw.push({ kind: 'target-schema', node: node.name, name, movementId });
          }
        }
      } catch (err) {
        unreachable.push({ node: node.name, error: errorMessage(err) });
      }
    }),
  );

  // A movement leaves an in-progress target schema on a node: while any movement into that node
  // still runs, an unattributed shard schema there may be its own.
  const found: Leftover[] = [];
  for (const item of raw) {
    const m = item.movementId ? movements.get(item.movementId) : undefined;
    const workflowId = m ? ownerOf(m, item) : null;
    let workflow: WorkflowState = workflowId ? await stateOf(workflowId) : 'unknown';
    if (item.kind === 'target-schema' && workflow !== 'running') {
      const node = nodes.find((n) => n.name === item.node)!;
      for (const other of movements.values()) {
        if (other.state === 'running' && other.target_node_ids.includes(node.id) && other.workflow_id && (await stateOf(other.workflow_id)) === 'running') {
          workflow = 'running';
        }
      }
    }
    found.push({ ...item, workflowId, workflow });
  }
  const order = (l: Leftover) => LEFTOVER_KINDS.indexOf(l.kind);
  found.sort((a, b) => order(a) - order(b) || a.node.localeCompare(b.node) || a.name.localeCompare(b.name));
  return { movements, nodes, found, unreachable };
}

/**
 * The workflow that uses a movement's object: the movement's own while it runs; after it, the fenced
 * copy and the reverse stream (`…_r`) belong to the child that follows and then drops them during
 * the grace period (moveShard's dropFencedCopy), so they are leftovers only once that one is closed.
 */
function ownerOf(m: MovementLeaseRow, item: Pick<Leftover, 'kind' | 'name'>): string | null {
  if (!m.workflow_id) return null;
  const graceObject = item.kind === 'fenced-schema' || ((item.kind === 'slot' || item.kind === 'publication') && item.name.endsWith('_r'));
  return graceObject && m.state !== 'running' ? `${m.workflow_id}-drop-fenced-${m.id}` : m.workflow_id;
}

/**
 * `sc_mv_<id>` (a move, a split's or merge's catalog gid), `sc_mv_<id>_<i>` (a split's or merge's
 * source i), with `_v` (a verify slot), `_r` (a move's reverse stream) or `_t`/`_t<i>` (a target's
 * prepared fence drop) after either.
 */
export function movementOfName(movements: Map<string, unknown>, name: string): string | null {
  if (!name.startsWith('sc_mv_')) return null;
  const rest = name.slice('sc_mv_'.length);
  const base = rest.replace(/_(v|r|t\d*)$/, '');
  for (const candidate of [rest, base, base.replace(/_\d+$/, '')]) if (movements.has(candidate)) return candidate;
  return null;
}

/** The movement's source shards on this node. */
function sourceShardsOn(m: MovementLeaseRow, nodeId: number): number[] {
  const shards = [m.shard_id, ...m.other_shard_ids];
  const nodes = [m.source_node_id, ...m.other_source_node_ids];
  return shards.filter((_, i) => nodes[i] === nodeId);
}

/**
 * Which movement built a shard schema the catalog does not place on this node: the latest move of
 * that shard into the node, or, for a shard the catalog does not know (a split's or merge's new
 * shard), the latest split or merge into the node. Null when none did.
 */
function targetSchemaMovement(movements: Map<string, MovementLeaseRow>, node: NodeRecord, schema: string, shardKnown: boolean): string | null {
  const shardId = Number(schema.slice('sc_s'.length));
  let found: MovementLeaseRow | undefined;
  for (const m of movements.values()) {
    if (!m.target_node_ids.includes(node.id)) continue;
    const matches = m.operation === 'move' ? m.shard_id === shardId : !shardKnown;
    if (matches && (!found || m.started_at >= found.started_at)) found = m;
  }
  return found?.id ?? null;
}

async function fixMovement(deps: DoctorDeps, scan: Scan, m: MovementLeaseRow, items: Leftover[], actions: DoctorAction[], log?: (line: string) => void): Promise<void> {
  const nodeByName = new Map(scan.nodes.map((n) => [n.name, n]));
  const act = async (item: Leftover, action: string, work: () => Promise<unknown>): Promise<boolean> => {
    const entry: DoctorAction = { kind: item.kind, node: item.node, name: item.name, movementId: m.id, action, ok: true };
    try {
      await work();
    } catch (err) {
      entry.ok = false;
      entry.error = errorMessage(err);
    }
    actions.push(entry);
    log?.(`${entry.ok ? 'fixed' : 'failed'}: ${action} ${item.kind} ${item.name} on ${item.node} (movement ${m.id})${entry.error ? `: ${entry.error}` : ''}`);
    return entry.ok;
  };
  const of = (kind: LeftoverKind) => items.filter((i) => i.kind === kind);

  // 1. The switch: finished or undone, by the rules of cutover recovery.
  const catalogPrepared = of('prepared-transaction').find((i) => i.node === CATALOG);
  // Node-side parts: the targets' fence drops (`_t…`) commit before the sources' fences, as in the cutover.
  const isTarget = (i: Leftover) => /_t\d*$/.test(i.name);
  const sourcesPrepared = of('prepared-transaction')
    .filter((i) => i.node !== CATALOG)
    .sort((a, b) => Number(isTarget(b)) - Number(isTarget(a)));
  let unresolved = false;
  if (catalogPrepared) {
    // The catalog voted for the switch: it commits, then every source's fence.
    const ok = await act(catalogPrepared, 'commit', () => commitCatalogSwitch({ catalogUrl: deps.catalogUrl, pools: deps.pools }, catalogPrepared.name));
    for (const s of sourcesPrepared) {
      if (ok) await act(s, 'commit', () => commitPreparedIfAny(deps.pools, nodeByName.get(s.node)!.dsn, s.name));
    }
    unresolved = !ok;
  } else if (sourcesPrepared.length > 0) {
    const where = await switchState(deps.catalog, m);
    if (where === 'switched') {
      for (const s of sourcesPrepared) await act(s, 'commit', () => commitPreparedIfAny(deps.pools, nodeByName.get(s.node)!.dsn, s.name));
    } else if (where === 'not-switched') {
      // Catalog not prepared and the placement still on the source(s): the switch never happened.
      // The placement rows stay locked (and the lease ended) meanwhile, so a stale attempt cannot switch now.
      await act(sourcesPrepared[0]!, 'roll back', () => rollBackSources(deps, m, sourcesPrepared.map((s) => ({ dsn: nodeByName.get(s.node)!.dsn, gid: s.name }))));
      for (const s of sourcesPrepared.slice(1)) actions.push({ kind: s.kind, node: s.node, name: s.name, movementId: m.id, action: 'roll back (with the first)', ok: true });
    } else {
      unresolved = true;
      log?.(`left alone: prepared ${sourcesPrepared.map((s) => `${s.name} on ${s.node}`).join(', ')} (movement ${m.id}): the catalog neither holds nor shows its switch`);
    }
  }
  // Nothing else of this movement is touched while its switch is undecided; once it is decided, the
  // next round looks again (a committed switch places the target schema, a committed fence renames the source's).
  if (unresolved || catalogPrepared || sourcesPrepared.length > 0) return;

  // 2. Replication: subscriptions (which let go of their slots), slots, publications, watermarks.
  for (const s of of('subscription')) await act(s, 'drop', () => dropSubscription(deps.pools.get(nodeByName.get(s.node)!.dsn), s.name));
  for (const s of of('slot')) await act(s, 'drop', () => dropSlot(deps.pools.get(nodeByName.get(s.node)!.dsn), s.name));
  for (const p of of('publication')) await act(p, 'drop', () => deps.pools.get(nodeByName.get(p.node)!.dsn).query(`drop publication if exists ${quoteIdent(p.name)}`));
  for (const w of of('watermark')) await act(w, 'delete', () => deps.pools.get(nodeByName.get(w.node)!.dsn).query(`delete from ${WATERMARKS} where movement_id = $1`, [w.name]));

  // 3. Schemas, each only when the catalog does not place its shard on that node.
  for (const s of [...of('fenced-schema'), ...of('target-schema')]) {
    const node = nodeByName.get(s.node)!;
    const shardSchema = s.name.replace(/_moved_.*$/, '');
    await act(s, 'drop', async () => {
      const placed = await deps.catalog.query(
        'select 1 from shardcast.placements p join shardcast.shards sh on sh.id = p.shard_id where sh.schema_name = $1 and p.node_id = $2',
        [shardSchema, node.id],
      );
      if (placed.rowCount) throw new Error(`the catalog places ${shardSchema} on ${node.name}: not dropped`);
      if (s.kind === 'fenced-schema') {
        // The fence is committed once the movement has no prepared transaction left on the node.
        const pending = await deps.pools
          .get(node.dsn)
          .query('select 1 from pg_prepared_xacts where (gid = $1 or gid ~ $2) and database = current_database()', [`sc_mv_${m.id}`, `^sc_mv_${m.id}(_[0-9]+)?(_t[0-9]*)?$`]);
        if (pending.rowCount) throw new Error(`movement ${m.id} still has a prepared transaction on ${node.name}: not dropped yet`);
      }
      // A lock held elsewhere (a prepared transaction, a session) makes this fail, not wait.
      await onServer(deps.pools, node.dsn, async (c) => {
        await c.query('begin');
        await c.query("set local lock_timeout = '5s'");
        await c.query(`drop schema if exists ${quoteIdent(s.name)} cascade`);
        await c.query('commit');
      });
    });
  }

  // 4. The lease.
  for (const l of of('lease')) {
    await act(l, 'end (failed)', () => deps.catalog.query("update shardcast.movements set state = 'failed', finished_at = now() where id = $1 and state = 'running'", [l.name]));
  }
}

/** Where the catalog has the movement's shards: on the target(s) (switched), still on the source(s), or neither. */
async function switchState(catalog: pg.Pool, m: MovementLeaseRow): Promise<'switched' | 'not-switched' | 'unknown'> {
  const sources = [m.shard_id, ...m.other_shard_ids];
  const sourceNodes = [m.source_node_id, ...m.other_source_node_ids];
  const { rows } = await catalog.query<{ shard_id: number; node_id: number }>(
    'select shard_id::int, node_id::int from shardcast.placements where shard_id = any($1::bigint[])',
    [sources],
  );
  if (m.operation === 'move') {
    const node = rows[0]?.node_id;
    if (node !== undefined && m.target_node_ids.includes(node)) return 'switched';
    return node === m.source_node_id ? 'not-switched' : 'unknown';
  }
  // A split or merge deletes its source shards in the switch.
  if (rows.length === 0) return 'switched';
  const onSources = sources.every((id, i) => rows.some((r) => r.shard_id === id && r.node_id === sourceNodes[i]));
  return onSources ? 'not-switched' : 'unknown';
}

/**
 * Rolls back the sources' prepared fences while holding the movement's placement rows (NOWAIT: a
 * switch in flight makes this fail rather than wait) and ending its lease in the same catalog
 * transaction: the switch cannot happen between the check and the rollback.
 */
async function rollBackSources(deps: DoctorDeps, m: MovementLeaseRow, prepared: Array<{ dsn: string; gid: string }>): Promise<void> {
  await onServer(deps.pools, deps.catalogUrl, async (c) => {
    await c.query('begin');
    try {
      await c.query("set local lock_timeout = '2s'");
      const { rows } = await c.query<{ shard_id: number; node_id: number }>(
        'select shard_id::int, node_id::int from shardcast.placements where shard_id = any($1::bigint[]) for update nowait',
        [[m.shard_id, ...m.other_shard_ids]],
      );
      const sourceNodes = [m.source_node_id, ...m.other_source_node_ids];
      const still = [m.shard_id, ...m.other_shard_ids].every((id, i) => rows.some((r) => r.shard_id === id && r.node_id === sourceNodes[i]));
      if (!still) throw new Error('the placement changed meanwhile: nothing rolled back');
      const catalogPrepared = await c.query('select 1 from pg_prepared_xacts where gid = $1 and database = current_database()', [`sc_mv_${m.id}`]);
      if (catalogPrepared.rowCount) throw new Error('the catalog switch was prepared meanwhile: nothing rolled back');
      await c.query("update shardcast.movements set state = 'failed', finished_at = now() where id = $1 and state = 'running'", [m.id]);
      for (const p of prepared) {
        await onServer(deps.pools, p.dsn, async (s) => {
          const { rowCount } = await s.query('select 1 from pg_prepared_xacts where gid = $1 and database = current_database()', [p.gid]);
          if (rowCount) await s.query(`rollback prepared ${quoteLiteral(p.gid)}`);
        });
      }
      await c.query('commit');
    } catch (err) {
      await c.query('rollback').catch(() => undefined);
      throw err;
    }
  });
}

/** A slot still held by a walsender (a subscription elsewhere, a stale reader) is freed first. */
async function dropSlot(db: pg.Pool, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const { rows } = await db.query<{ active_pid: number | null }>('select active_pid from pg_replication_slots where slot_name = $1', [name]);
    if (!rows[0]) return;
    if (rows[0].active_pid !== null) {
      await db.query('select pg_terminate_backend($1)', [rows[0].active_pid]);
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      await db.query('select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1', [name]);
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Leftovers by kind (every kind present, zero when none): the metric and the summary line. */
export function countByKind(leftovers: Leftover[]): Record<LeftoverKind, number> {
  const counts = Object.fromEntries(LEFTOVER_KINDS.map((k) => [k, 0])) as Record<LeftoverKind, number>;
  for (const l of leftovers) counts[l.kind]++;
  return counts;
}

/** What a run found and did, in numbers: the janitor workflow's result and the metric's source. */
export interface DoctorSummary {
  checkedAt: string;
  leftovers: Record<LeftoverKind, number>;
  inUse: number;
  fixed: number;
  failed: number;
  unreachable: number;
}

export function summarize(report: DoctorReport): DoctorSummary {
  return {
    checkedAt: report.checkedAt,
    leftovers: countByKind(report.leftovers),
    inUse: report.inUse.length,
    fixed: report.actions.filter((a) => a.ok).length,
    failed: report.actions.filter((a) => !a.ok).length,
    unreachable: report.unreachable.length,
  };
}

/** Keeps the run's summary in the catalog (one row), where the metrics endpoint reads it. */
export async function recordDoctorRun(catalog: Pick<pg.Pool, 'query'>, summary: DoctorSummary): Promise<void> {
  await catalog.query(
    `insert into shardcast.janitor_runs (checked_at, leftovers, fixed, failed, unreachable) values ($1, $2, $3, $4, $5)
     on conflict (singleton) do update set checked_at = excluded.checked_at, leftovers = excluded.leftovers, fixed = excluded.fixed,
       failed = excluded.failed, unreachable = excluded.unreachable`,
    [summary.checkedAt, JSON.stringify(summary.leftovers), summary.fixed, summary.failed, summary.unreachable],
  );
}
