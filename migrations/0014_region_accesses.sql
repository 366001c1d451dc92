-- Locality (DESIGN §5): how often each shard is reached from each client region. A router created
-- with a `region` counts, in memory, the statements it sends to each shard and adds the counts here
-- per hour at every flush; the planner reads each shard's shares over the last day
-- (src/planning/inputs.ts), and a node's region (shardcast.nodes.region) is where it is.
create table shardcast_stats.shard_region_accesses (
  shard_id bigint not null,
  region text not null,
  hour timestamptz not null,
  accesses bigint not null check (accesses >= 0),
  primary key (shard_id, region, hour)
);
create index on shardcast_stats.shard_region_accesses (hour);
