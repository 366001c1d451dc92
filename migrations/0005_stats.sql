-- Workload statistics (DESIGN §4 collection). Samples keep the raw cumulative counters as read, with
-- the node's own clock (microseconds); rates are derived from consecutive samples, so a collector
-- needs no state of its own and a restart loses at most one interval. Each table is partitioned by
-- day; partitions are created ahead and dropped past the retention (src/profiling/partitions.ts).
create schema if not exists shardcast_stats;

-- pg_stat_user_tables: per shard table (a shard is a schema).
create table shardcast_stats.table_samples (
  ts timestamptz not null,
  node_id bigint not null,
  schema_name text not null,
  table_name text not null,
  n_tup_ins bigint not null,
  n_tup_upd bigint not null,
  n_tup_del bigint not null,
  seq_scan bigint not null,
  seq_tup_read bigint not null,
  idx_scan bigint not null,
  idx_tup_fetch bigint not null,
  n_live_tup bigint not null,
  -- when the node's statistics were last reset (postmaster start or pg_stat_reset): a change is a counter reset
  stats_epoch timestamptz not null
) partition by range (ts);
create index on shardcast_stats.table_samples (node_id, schema_name, table_name, ts);

-- pg_stat_user_indexes.
create table shardcast_stats.index_samples (
  ts timestamptz not null,
  node_id bigint not null,
  schema_name text not null,
  table_name text not null,
  index_name text not null,
  idx_scan bigint not null,
  idx_tup_read bigint not null,
  stats_epoch timestamptz not null
) partition by range (ts);
create index on shardcast_stats.index_samples (node_id, schema_name, index_name, ts);

-- pg_stat_statements (when the extension is installed on the node).
create table shardcast_stats.statement_samples (
  ts timestamptz not null,
  node_id bigint not null,
  queryid bigint not null,
  query text not null,
  calls bigint not null,
  total_exec_time double precision not null,
  mean_exec_time double precision not null,
  stats_epoch timestamptz not null
) partition by range (ts);
create index on shardcast_stats.statement_samples (node_id, queryid, ts);

-- pg_stat_database, pg_stat_io, and the host (from /proc, read through the node when it may).
create table shardcast_stats.node_samples (
  ts timestamptz not null,
  node_id bigint not null,
  xact_commit bigint not null,
  xact_rollback bigint not null,
  blks_read bigint not null,
  blks_hit bigint not null,
  blk_read_time double precision not null,
  blk_write_time double precision not null,
  io_reads bigint,
  io_writes bigint,
  io_read_time double precision,
  io_write_time double precision,
  cpu_busy_jiffies bigint,
  cpu_total_jiffies bigint,
  mem_total_kb bigint,
  mem_available_kb bigint,
  disk_read_sectors bigint,
  disk_write_sectors bigint,
  stats_epoch timestamptz not null
) partition by range (ts);
create index on shardcast_stats.node_samples (node_id, ts);
