-- Shardcast catalog: nodes, colocation groups, distributed tables, shards, placements, map version.
create schema if not exists shardcast;

create table shardcast.nodes (
  id bigint generated always as identity primary key,
  name text not null unique check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  dsn text not null check (dsn ~ '^postgres(ql)?://'),
  region text,
  zone text,
  capacity double precision not null default 100 check (capacity > 0),
  state text not null default 'active' check (state in ('active', 'standby', 'draining', 'retired')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- Tables that share a shard key and shard boundaries; their rows for one key live on one node.
create table shardcast.colocation_groups (
  id bigint generated always as identity primary key,
  name text not null unique,
  method text not null check (method in ('hash', 'range')),
  key_type text not null check (key_type in ('smallint', 'integer', 'bigint', 'text', 'uuid')),
  created_at timestamptz not null default now()
);

create table shardcast.distributed_tables (
  id bigint generated always as identity primary key,
  name text not null unique,
  group_id bigint not null references shardcast.colocation_groups (id),
  key_column text not null,
  key_type text not null,
  -- The column and constraint definitions, as given: `create table <shard>.<name> (<columns>)`.
  columns_ddl text not null,
  -- 'creating' while the workflow builds the shards; invisible to routers until 'active'.
  state text not null default 'creating' check (state in ('creating', 'active')),
  created_by text,
  created_at timestamptz not null default now()
);

create table shardcast.shards (
  id bigint generated always as identity primary key,
  group_id bigint not null references shardcast.colocation_groups (id),
  schema_name text not null unique,
  -- hash method: inclusive bounds of the 64-bit hash of the key.
  hash_min bigint,
  hash_max bigint,
  -- range method: [range_min, range_max) in the key's type, as text.
  range_min text,
  range_max text,
  created_at timestamptz not null default now(),
  check ((hash_min is not null and hash_max is not null and hash_min <= hash_max and range_min is null and range_max is null)
      or (hash_min is null and hash_max is null and range_min is not null and range_max is not null))
);
create index on shardcast.shards (group_id);

create table shardcast.placements (
  shard_id bigint primary key references shardcast.shards (id) on delete cascade,
  node_id bigint not null references shardcast.nodes (id),
  placed_at timestamptz not null default now()
);
create index on shardcast.placements (node_id);

create table shardcast.map_version (
  singleton boolean primary key default true check (singleton),
  version bigint not null
);
insert into shardcast.map_version (version) values (1);

-- Every change to the shard map bumps map_version in the same transaction and notifies routers.
create function shardcast.bump_map_version() returns trigger
language plpgsql as $$
declare
  v bigint;
begin
  update shardcast.map_version set version = version + 1 returning version into v;
  perform pg_notify('shardcast_map', v::text);
  return null;
end
$$;

create trigger nodes_map_change after insert or update or delete on shardcast.nodes
  for each statement execute function shardcast.bump_map_version();
create trigger tables_map_change after insert or update or delete on shardcast.distributed_tables
  for each statement execute function shardcast.bump_map_version();
create trigger shards_map_change after insert or update or delete on shardcast.shards
  for each statement execute function shardcast.bump_map_version();
create trigger placements_map_change after insert or update or delete on shardcast.placements
  for each statement execute function shardcast.bump_map_version();
