-- Retention of restored tables (data_retention_policy, src/restore/retention.ts): one row per run and
-- table, and one per shard whose expired rows a run archived and deleted. The shard's row is written
-- after the node's transaction committed; the node keeps the same record in sc_retention.archives,
-- written in that transaction, so a retry after a lost reply finds what was done.
create table shardcast.retention_runs (
  id text not null check (id ~ '^[a-z0-9_-]{1,64}$'),
  table_name text not null,
  dir text not null,
  cutoff timestamptz not null,
  state text not null default 'running' check (state in ('running', 'done')),
  rows bigint not null default 0,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (id, table_name)
);

create table shardcast.retention_archives (
  run_id text not null,
  table_name text not null,
  shard_id bigint not null,
  node_name text not null,
  file text not null,
  rows bigint not null check (rows > 0),
  bytes bigint not null,
  sha256 text not null,
  batches integer not null,
  digest_sum text not null,
  archived_at timestamptz not null default now(),
  primary key (run_id, table_name, shard_id),
  foreign key (run_id, table_name) references shardcast.retention_runs (id, table_name)
);
