-- The physical database a node name stands for: its cluster's system identifier (pg_control_system())
-- and the database's oid. Two names for one database would let a movement's compensation drop the
-- shard it copies from; the unique index refuses the second name. Null for rows registered before.
alter table shardcast.nodes
  add column system_identifier bigint,
  add column database_oid bigint,
  add constraint nodes_identity_whole check ((system_identifier is null) = (database_oid is null));

create unique index nodes_physical_database on shardcast.nodes (system_identifier, database_oid);
