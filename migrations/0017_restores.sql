-- Restores from backup (`shardcast restore`): one row per restore workflow, with the proposal it
-- was planned from and the policies the workload file gave, which outlive the workflow (retention,
-- rebalance threshold). No credential is stored: `backup` is a directory or an http(s) URL.
create table shardcast.restores (
  id text primary key,
  table_name text not null,
  backup text not null,
  proposal jsonb not null,
  state text not null default 'proposed' check (state in ('proposed', 'importing', 'verifying', 'done', 'failed', 'rejected')),
  rows_expected bigint not null,
  rows_imported bigint not null default 0,
  -- data_retention_policy: rows whose retention_column is older than this many days are archived and dropped.
  retention_days integer check (retention_days > 0),
  retention_column text,
  rebalance_threshold double precision check (rebalance_threshold > 0 and rebalance_threshold <= 1),
  error text,
  created_at timestamptz not null default now(),
  finished_at timestamptz
);
create index restores_table on shardcast.restores (table_name);
