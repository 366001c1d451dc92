import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { migrate } from '../src/catalog/migrate.js';
import { NodePools } from '../src/catalog/node-pools.js';
import { ensureNodes, getNode } from '../src/catalog/nodes.js';
import { createTableOnNode } from '../src/catalog/shard-ddl.js';
import { activateTable, registerTable, type TableSpec } from '../src/catalog/tables.js';
import { freePort, PostgresServer } from '../src/fleet/postgres-server.js';

export interface BenchFleet {
  catalogUrl: string;
  nodes: PostgresServer[];
  catalog: pg.Pool;
  /** Creates a distributed table with the same steps as the workflow's activities, without Temporal. */
  createTable(spec: TableSpec): Promise<void>;
  stop(): Promise<void>;
}

/** A throwaway embedded fleet: a catalog and `nodeCount` nodes on free ports. */
export async function startBenchFleet(nodeCount: number): Promise<BenchFleet> {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-bench-'));
  chmodSync(dir, 0o755);
  const make = async (name: string): Promise<PostgresServer> =>
    new PostgresServer({ name, dataDir: path.join(dir, name), port: await freePort(), user: 'postgres', password: 'bench' });
  const catalogServer = await make('catalog');
  const nodes: PostgresServer[] = [];
  for (let i = 1; i <= nodeCount; i++) nodes.push(await make(`node-${i}`));
  await Promise.all([catalogServer, ...nodes].map(async (s) => {
    await s.start();
    await s.ensureDatabase('shardcast');
  }));
  const catalogUrl = catalogServer.url('shardcast');
  const catalog = new pg.Pool({ connectionString: catalogUrl, max: 4 });
  // An idle connection meeting its server's shutdown at teardown must not end the bench with an error.
  catalog.on('error', () => undefined);
  const client = await catalog.connect();
  await migrate(client);
  client.release();
  await ensureNodes(catalog, nodes.map((n) => ({ name: n.name, dsn: n.url('shardcast') })));
  const pools = new NodePools();
  return {
    catalogUrl,
    nodes,
    catalog,
    async createTable(spec) {
      const table = await registerTable(catalog, spec, `bench-${spec.name}`);
      for (const nodeId of table.nodeIds) {
        const schemas = table.shards.filter((s) => s.nodeId === nodeId).map((s) => s.schema);
        await createTableOnNode(pools, await getNode(catalog, nodeId), { name: spec.name, columns: spec.columns }, schemas);
      }
      await activateTable(catalog, table.tableId);
    },
    async stop() {
      await pools.end();
      await catalog.end();
      await Promise.all([catalogServer, ...nodes].map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Busy CPU cores on the whole machine since the meter was made (from /proc/stat: all but idle and
 * iowait), to say how much of the machine a phase used. Linux only; NaN elsewhere.
 */
export class CpuMeter {
  private readonly start = CpuMeter.sample();

  private static sample(): { busy: number; total: number; steal: number } | undefined {
    try {
      const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
      const total = fields.reduce((a, b) => a + b, 0);
      return { busy: total - fields[3]! - fields[4]!, total, steal: fields[7] ?? 0 };
    } catch {
      return undefined;
    }
  }

  cores(): number {
    const end = CpuMeter.sample();
    if (!this.start || !end || end.total === this.start.total) return Number.NaN;
    return ((end.busy - this.start.busy) / (end.total - this.start.total)) * availableParallelism();
  }

  /** Of the machine's cores, how many the hypervisor took for other guests (steal time) since the meter started. */
  stolen(): number {
    const end = CpuMeter.sample();
    if (!this.start || !end || end.total === this.start.total) return Number.NaN;
    return ((end.steal - this.start.steal) / (end.total - this.start.total)) * availableParallelism();
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
