import { createServer, type Server } from 'node:http';
import type pg from 'pg';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The worker's Prometheus endpoint: process metrics plus the shard map as the catalog has it,
 * read at scrape time (deploy/prometheus-rules.yml alerts on these).
 */
export function createMetricsRegistry(catalog: pg.Pool): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'shardcast_process_' });
  const up = new Gauge({ name: 'shardcast_catalog_up', help: '1 when the catalog answered the last scrape', registers: [registry] });
  const version = new Gauge({ name: 'shardcast_map_version', help: 'Shard map version in the catalog', registers: [registry] });
  const nodes = new Gauge({ name: 'shardcast_nodes', help: 'Nodes by state', labelNames: ['state'], registers: [registry] });
  const shards = new Gauge({ name: 'shardcast_shards', help: 'Shards placed on each node', labelNames: ['node'], registers: [registry] });
  // One collect callback reads everything, so one scrape is one consistent look at the catalog.
  new Gauge({
    name: 'shardcast_metrics_scrape_ok',
    help: '1 when the catalog metrics were read',
    registers: [registry],
    async collect() {
      try {
        const [v, n, s] = await Promise.all([
          catalog.query<{ version: string }>('select version::text as version from shardcast.map_version'),
          catalog.query<{ state: string; count: number }>('select state, count(*)::int as count from shardcast.nodes group by state'),
          catalog.query<{ node: string; count: number }>(
            `select n.name as node, count(p.shard_id)::int as count
               from shardcast.nodes n left join shardcast.placements p on p.node_id = n.id group by n.name`,
          ),
        ]);
        version.set(Number(v.rows[0]?.version ?? 0));
        nodes.reset();
        for (const state of ['active', 'standby', 'draining', 'retired']) nodes.set({ state }, 0);
        for (const row of n.rows) nodes.set({ state: row.state }, row.count);
        shards.reset();
        for (const row of s.rows) shards.set({ node: row.node }, row.count);
        up.set(1);
        this.set(1);
      } catch {
        up.set(0);
        this.set(0);
      }
    },
  });
  return registry;
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
