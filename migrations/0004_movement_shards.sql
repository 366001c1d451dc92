-- Splits and merges: a merge leases two shards and reads from two source nodes. The extra shards
-- and nodes are kept here; the lease check looks at both columns, under the node row locks.
alter table shardcast.movements
  add column other_shard_ids bigint[] not null default '{}',
  add column other_source_node_ids bigint[] not null default '{}';
