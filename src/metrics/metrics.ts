import { createServer, type Server } from 'node:http';
import type pg from 'pg';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { LEFTOVER_KINDS } from '../movement/doctor.js';
import { nodeHealth } from '../profiling/collector.js';

/** Time the copy governor held movements back, counted by the activities of this worker process. */
export const movementThrottledSeconds = new Counter({
  name: 'shardcast_movement_throttled_seconds_total',
  help: 'Seconds the copy governor held a movement back (copy or apply) to spare the foreground',
  labelNames: ['operation', 'phase'],
  registers: [],
});

/** Rows the retention of restored tables archived and deleted, counted by the activities of this worker process. */
export const retentionRowsArchived = new Counter({
  name: 'shardcast_retention_rows_archived_total',
  help: 'Rows past their table\'s data_retention_policy archived to Arrow and deleted (schedule shardcast-retention)',
  labelNames: ['table'],
  registers: [],
});

/**
 * The worker's Prometheus endpoint: process metrics plus the shard map as the catalog has it,
 * read at scrape time (deploy/prometheus-rules.yml alerts on these).
 */
interface CatalogSnapshot {
  ok: boolean;
  version: number;
  nodes: Array<{ state: string; count: number }>;
  shards: Array<{ node: string; count: number }>;
  /**
   * Running movements whose catalog switch has committed (a move's shard placed on its target, a split's
   * or merge's source shards gone): for a few seconds at the end of every movement, and for as long as
   * the source cannot be reached to finish the cutover (forward only: its prepared fence holds locks).
   */
  switchedUnfinished: number;
  /** Each node's health at the last collection round (reachable null: not checked yet). */
  health: Array<{ node: string; reachable: boolean | null }>;
  /** The janitor's last run, when there was one. */
  janitor?: { checkedAt: Date; leftovers: Record<string, number>; failed: number };
  /** The latest stored plan (rebalance workflow or `nodes drain`), when there is one. */
  plan?: PlanSnapshot;
  /** Movements by outcome over the last 24 hours. */
  movements: Array<{ operation: string; state: string; count: number }>;
}

interface PlanSnapshot {
  createdAt: Date;
  feasible: boolean;
  /** Per node: capacity, predicted peak utilisation over the horizon without and with the plan. */
  nodes: Array<{ name: string; capacity: number; without: number; with: number }>;
  actions: Array<{ state: string; count: number }>;
}

export function createMetricsRegistry(catalog: pg.Pool): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'shardcast_' });
  registry.registerMetric(movementThrottledSeconds);
  registry.registerMetric(retentionRowsArchived);
  // prom-client collects the gauges concurrently: they share one read of the catalog per scrape.
  let pending: { at: number; snapshot: Promise<CatalogSnapshot> } | undefined;
  const snapshot = (): Promise<CatalogSnapshot> => {
    if (!pending || Date.now() - pending.at > 500) pending = { at: Date.now(), snapshot: readCatalog(catalog) };
    return pending.snapshot;
  };
  new Gauge({
    name: 'shardcast_catalog_up',
    help: '1 when the catalog answered the last scrape',
    registers: [registry],
    async collect() {
      this.set((await snapshot()).ok ? 1 : 0);
    },
  });
  new Gauge({
    name: 'shardcast_map_version',
    help: 'Shard map version in the catalog',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (s.ok) this.set(s.version);
    },
  });
  new Gauge({
    name: 'shardcast_nodes',
    help: 'Nodes by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok) return;
      this.reset();
      for (const state of ['active', 'standby', 'draining', 'retired']) this.set({ state }, 0);
      for (const row of s.nodes) this.set({ state: row.state }, row.count);
    },
  });
  new Gauge({
    name: 'shardcast_shards',
    help: 'Shards placed on each node',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok) return;
      this.reset();
      for (const row of s.shards) this.set({ node: row.node }, row.count);
    },
  });
  new Gauge({
    name: 'shardcast_node_reachable',
    help: 'Whether the node answered the last collection round (1) or not (0); absent until it was first checked',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok) return;
      this.reset();
      for (const h of s.health) if (h.reachable !== null) this.set({ node: h.node }, h.reachable ? 1 : 0);
    },
  });
  new Gauge({
    name: 'shardcast_movements_switched_unfinished',
    help: 'Running movements whose catalog switch has committed but whose cutover has not finished (alerted when it lasts: the source is unreachable and holds its prepared fence)',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (s.ok) this.set(s.switchedUnfinished);
    },
  });
  new Gauge({
    name: 'shardcast_leftovers',
    help: 'What closed movements left behind (slots, publications, subscriptions, prepared transactions, leases, schemas), by kind, at the janitor\'s last run',
    labelNames: ['kind'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok || !s.janitor) return;
      this.reset();
      for (const kind of LEFTOVER_KINDS) this.set({ kind }, s.janitor.leftovers[kind] ?? 0);
    },
  });
  new Gauge({
    name: 'shardcast_janitor_last_run_timestamp_seconds',
    help: 'When the janitor (schedule shardcast-janitor or shardcast doctor) last checked for leftovers, in Unix seconds',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      setOrAbsent(this, s.ok && s.janitor ? s.janitor.checkedAt.getTime() / 1000 : undefined);
    },
  });
  new Gauge({
    name: 'shardcast_janitor_fix_failures',
    help: 'Fixes that failed at the janitor\'s last run (plus nodes it could not reach)',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      setOrAbsent(this, s.ok ? s.janitor?.failed : undefined);
    },
  });
  new Gauge({
    name: 'shardcast_node_predicted_utilisation',
    help: 'Each node\'s predicted peak utilisation over the latest plan\'s horizon (a fraction of its capacity, at the planning bound), without the plan ("without") and with it ("with")',
    labelNames: ['node', 'plan'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok || !s.plan) return;
      this.reset();
      for (const n of s.plan.nodes) {
        this.set({ node: n.name, plan: 'without' }, n.without);
        this.set({ node: n.name, plan: 'with' }, n.with);
      }
    },
  });
  new Gauge({
    name: 'shardcast_node_capacity',
    help: 'Each node\'s capacity in load units as the latest plan used it (set, or calibrated from its load and CPU history)',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok || !s.plan) return;
      this.reset();
      for (const n of s.plan.nodes) this.set({ node: n.name }, n.capacity);
    },
  });
  new Gauge({
    name: 'shardcast_plan_feasible',
    help: '1 when the latest plan keeps every node under target at every step of its horizon, 0 when it cannot',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      setOrAbsent(this, s.ok && s.plan ? Number(s.plan.feasible) : undefined);
    },
  });
  new Gauge({
    name: 'shardcast_plan_timestamp_seconds',
    help: 'When the latest plan was made, in Unix seconds',
    registers: [registry],
    async collect() {
      const s = await snapshot();
      setOrAbsent(this, s.ok && s.plan ? s.plan.createdAt.getTime() / 1000 : undefined);
    },
  });
  new Gauge({
    name: 'shardcast_plan_actions',
    help: 'The latest plan\'s actions by state (planned, waiting, started, done, failed, skipped, cancelled, dry-run)',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok || !s.plan) return;
      this.reset();
      for (const a of s.plan.actions) this.set({ state: a.state }, a.count);
    },
  });
  new Gauge({
    name: 'shardcast_movements_last_day',
    help: 'Movements that started in the last 24 hours, by operation and state (running, done, failed, cancelled)',
    labelNames: ['operation', 'state'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s.ok) return;
      this.reset();
      for (const m of s.movements) this.set({ operation: m.operation, state: m.state }, m.count);
    },
  });
  return registry;
}

/**
 * A gauge without labels reads 0 until it is set: with nothing to report (no plan made, no janitor run
 * yet, catalog down) it must be absent instead, or "timestamp 0" reads as "last run in 1970" and alerts.
 */
function setOrAbsent(gauge: Gauge, value: number | undefined): void {
  if (value === undefined) gauge.remove();
  else gauge.set(value);
}

/** The latest plan's outlook and its actions' states (migration 0013: a worker ahead of its catalog goes without). */
async function readPlan(catalog: pg.Pool): Promise<PlanSnapshot | undefined> {
  const { rows } = await catalog
    .query<{ id: string; created_at: Date; feasible: boolean; nodes: Array<{ name: string; capacity: number; without: number[]; with: number[] }> }>(
      `select id::text, created_at, (plan ->> 'feasible')::boolean as feasible, plan -> 'nodes' as nodes from shardcast.plans order by created_at desc, id desc limit 1`,
    )
    .catch(() => ({ rows: [] as Array<{ id: string; created_at: Date; feasible: boolean; nodes: Array<{ name: string; capacity: number; without: number[]; with: number[] }> }> }));
  const row = rows[0];
  if (!row) return undefined;
  const actions = await catalog.query<{ state: string; count: number }>('select state, count(*)::int as count from shardcast.plan_actions where plan_id = $1 group by state', [row.id]);
  return {
    createdAt: row.created_at,
    feasible: row.feasible,
    nodes: row.nodes.map((n) => ({ name: n.name, capacity: n.capacity, without: Math.max(0, ...n.without), with: Math.max(0, ...n.with) })),
    actions: actions.rows,
  };
}

async function readJanitor(catalog: pg.Pool): Promise<CatalogSnapshot['janitor']> {
  // The table comes with migration 0008: a worker ahead of its catalog still serves the other gauges.
  const { rows } = await catalog.query<{ checked_at: Date; leftovers: Record<string, number>; failed: number }>(
    'select checked_at, leftovers, failed + unreachable as failed from shardcast.janitor_runs',
  ).catch(() => ({ rows: [] as Array<{ checked_at: Date; leftovers: Record<string, number>; failed: number }> }));
  const row = rows[0];
  return row ? { checkedAt: row.checked_at, leftovers: row.leftovers, failed: row.failed } : undefined;
}

async function readCatalog(catalog: pg.Pool): Promise<CatalogSnapshot> {
  try {
    const [v, n, s, switched, janitor, plan, movements] = await Promise.all([
      catalog.query<{ version: string }>('select version::text as version from shardcast.map_version'),
      catalog.query<{ state: string; count: number }>('select state, count(*)::int as count from shardcast.nodes group by state'),
      catalog.query<{ node: string; count: number }>(
        `select n.name as node, count(p.shard_id)::int as count
           from shardcast.nodes n left join shardcast.placements p on p.node_id = n.id group by n.name`,
      ),
      catalog.query<{ count: number }>(
        `select count(*)::int as count from shardcast.movements m
          where m.state = 'running'
            and case when m.operation = 'move'
                     then exists (select 1 from shardcast.placements p where p.shard_id = m.shard_id and p.node_id = any (m.target_node_ids))
                     else not exists (select 1 from shardcast.shards s where s.id = m.shard_id) end`,
      ),
      readJanitor(catalog),
      readPlan(catalog),
      catalog.query<{ operation: string; state: string; count: number }>(
        "select operation, state, count(*)::int as count from shardcast.movements where started_at > now() - interval '1 day' group by operation, state",
      ),
    ]);
    // The table comes with migration 0012: a worker ahead of its catalog still serves the rest.
    const health = await nodeHealth(catalog).catch(() => []);
    return { ok: true, version: Number(v.rows[0]?.version ?? 0), nodes: n.rows, shards: s.rows, switchedUnfinished: switched.rows[0]?.count ?? 0, health, janitor, plan, movements: movements.rows };
  } catch {
    return { ok: false, version: 0, nodes: [], shards: [], switchedUnfinished: 0, health: [], movements: [] };
  }
}

export async function startMetricsServer(registry: Registry, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        })
        .catch((err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        });
      return;
    }
    res.writeHead(404);
    res.end('not found: try /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
