-- Movement traffic is not workload (DESIGN §4, §5: the planner must not chase its own moves).
-- Samples carry the table's oid, so that a shard table dropped and created again on a node (a shard
-- moved away and back) starts a new counter stream instead of being bridged to its old one.
alter table shardcast_stats.table_samples add column relid oid;
alter table shardcast_stats.index_samples add column relid oid;

-- Tuples a movement's own sessions read from a placed shard's tables (its copy, its verify), as the
-- session's own statistics counted them (pg_stat_xact_user_tables): subtracted from the table's
-- reads when series are derived. Kept as long as the samples (src/profiling/partitions.ts).
create table shardcast_stats.movement_reads (
  node_id bigint not null,
  schema_name text not null,
  table_name text not null,
  started_at timestamptz not null,
  ended_at timestamptz not null,
  tuples bigint not null check (tuples >= 0),
  movement_id text,
  check (ended_at >= started_at)
);
create index on shardcast_stats.movement_reads (schema_name, ended_at);
create index on shardcast_stats.movement_reads (node_id, ended_at);
