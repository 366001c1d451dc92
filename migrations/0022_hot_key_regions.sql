-- The client region of each hot key's accesses (the router's `region`; '' from a router without one):
-- an entity's region shares, for the target of its isolation (src/profiling/tenants.ts).
alter table shardcast_stats.hot_keys add column region text not null default '';
alter table shardcast_stats.hot_keys drop constraint hot_keys_pkey;
alter table shardcast_stats.hot_keys add primary key (table_name, bucket, key, region);
