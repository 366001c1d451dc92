-- Hot, warm and cold shards (src/profiling/temperature.ts): each computation's class per shard of a
-- table, with the shard's key range and node at the time and the features it was clustered on
-- (accesses per second recent, mean and peak, trend, forecast peak). A table's newest computation is
-- its key map; the hourly forecast run adds one per table with accesses, `shardcast temperature
-- --store` adds one too. Pruned with the workload profile.
create table shardcast_stats.temperature (
  table_name text not null,
  computed_at timestamptz not null,
  shard_id bigint not null,
  class text not null check (class in ('hot', 'warm', 'cold')),
  key_range text not null,
  node text not null,
  features jsonb not null,
  primary key (table_name, computed_at, shard_id)
);
create index on shardcast_stats.temperature (computed_at);
