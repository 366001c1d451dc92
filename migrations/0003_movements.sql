-- Shard movements (move, split, merge): one running movement per shard, a lease for the workflow.
create table shardcast.movements (
  id text primary key check (id ~ '^[a-z0-9_]{1,40}$'),
  operation text not null check (operation in ('move', 'split', 'merge')),
  shard_id bigint not null,
  source_node_id bigint not null references shardcast.nodes (id),
  target_node_ids bigint[] not null check (cardinality(target_node_ids) >= 1),
  state text not null default 'running' check (state in ('running', 'done', 'failed', 'cancelled')),
  workflow_id text,
  started_at timestamptz not null default now(),
  finished_at timestamptz
);

-- The lease: at most one running movement per shard.
create unique index movements_one_running_per_shard on shardcast.movements (shard_id) where state = 'running';
create index movements_running on shardcast.movements (state) where state = 'running';
