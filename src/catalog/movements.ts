/** Catalog reads about movements and the shards they concern, as the CLI shows them. */
import type { Queryable } from './nodes.js';

export interface ShardLocation {
  shardId: number;
  /** Its colocation group's name. */
  group: string;
  /** The node that holds it. */
  node: string;
}

/** Where each of `shardIds` is (ordered by shard id); shards that do not exist are missing from the answer. */
export async function shardLocations(db: Queryable, shardIds: number[]): Promise<ShardLocation[]> {
  const { rows } = await db.query<{ id: number; grp: string; node: string }>(
    `select s.id::int as id, g.name as grp, n.name as node from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id where s.id = any($1::bigint[]) order by s.id`,
    [shardIds],
  );
  return rows.map((r) => ({ shardId: r.id, group: r.grp, node: r.node }));
}

export interface MovementRow {
  id: string;
  operation: string;
  shard: number;
  /** The source node's name. */
  source: string;
  /** The target nodes' names, comma-separated. */
  targets: string;
  state: string;
  workflowId: string | null;
  startedAt: Date;
}

/** The latest `limit` movements with a lease (running or ended), newest first. */
export async function recentMovements(db: Queryable, limit = 50): Promise<MovementRow[]> {
  const { rows } = await db.query<{ id: string; operation: string; shard: number; source: string; targets: string | null; state: string; workflow_id: string | null; started_at: Date }>(
    `select m.id, m.operation, m.shard_id::int as shard, s.name as source,
            (select string_agg(n.name, ',') from shardcast.nodes n where n.id = any(m.target_node_ids)) as targets,
            m.state, m.workflow_id, m.started_at
       from shardcast.movements m join shardcast.nodes s on s.id = m.source_node_id
      order by m.started_at desc limit $1`,
    [limit],
  );
  return rows.map((r) => ({ id: r.id, operation: r.operation, shard: r.shard, source: r.source, targets: r.targets ?? '', state: r.state, workflowId: r.workflow_id, startedAt: r.started_at }));
}
