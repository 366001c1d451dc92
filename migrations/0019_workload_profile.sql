-- The workload profile (src/profiling/workload.ts): a router created with `profile` reduces every
-- statement it routes to its template (PostgreSQL's parser, constants stripped) and counts, in bounded
-- memory, calls, rows and latency per template, accesses per shard and the most accessed shard-key
-- values per table (count-min sketch plus top-k). Each flush writes one interval's counts here in one
-- transaction, named by its flush id (profile_flushes), so that a flush retried after a lost reply
-- is not counted twice. No parameter value of a statement is stored, except the shard-key values
-- of hot_keys (the keys given to forKey).
create table shardcast_stats.query_templates (
  -- The fingerprint plus what routing depends on that it leaves out (operator classes, IN-list lengths).
  template_id text primary key,
  fingerprint text not null,
  -- The statement with its constants replaced by $n.
  query text not null,
  kind text not null,
  tables text[] not null,
  -- Predicates, joins and columns set or inserted, without their constants.
  features jsonb not null,
  feature_vector real[] not null,
  calls bigint not null default 0,
  rows bigint not null default 0,
  total_ms double precision not null default 0,
  max_ms double precision not null default 0,
  single_shard bigint not null default 0,
  scatter bigint not null default 0,
  first_seen timestamptz not null,
  last_seen timestamptz not null
);
create index on shardcast_stats.query_templates using gin (tables);

-- Calls per template per minute (the minute a router's flush interval began): a query-volume series.
create table shardcast_stats.template_calls (
  template_id text not null references shardcast_stats.query_templates on delete cascade,
  bucket timestamptz not null,
  calls bigint not null check (calls >= 0),
  rows bigint not null default 0,
  total_ms double precision not null default 0,
  single_shard bigint not null default 0,
  scatter bigint not null default 0,
  primary key (template_id, bucket)
);
create index on shardcast_stats.template_calls (bucket);

-- Accesses per distributed table and shard per minute (a scatter statement is one access to each shard).
create table shardcast_stats.shard_accesses (
  table_name text not null,
  shard_id bigint not null,
  bucket timestamptz not null,
  accesses bigint not null check (accesses >= 0),
  primary key (table_name, shard_id, bucket)
);
create index on shardcast_stats.shard_accesses (bucket);

-- Statements (and transactions) through forKey per table per minute: the denominator of a key's share.
create table shardcast_stats.key_accesses (
  table_name text not null,
  bucket timestamptz not null,
  accesses bigint not null check (accesses >= 0),
  primary key (table_name, bucket)
);

-- Each interval's heavy hitters per table: the top-k shard-key values with their counts (an
-- overestimate, and a lower bound), added up when several flushes land in one minute.
create table shardcast_stats.hot_keys (
  table_name text not null,
  bucket timestamptz not null,
  key text not null,
  count bigint not null check (count >= 0),
  lower_bound bigint not null,
  primary key (table_name, bucket, key)
);
create index on shardcast_stats.hot_keys (bucket);

create table shardcast_stats.profile_flushes (
  id uuid primary key,
  flushed_at timestamptz not null default now()
);
