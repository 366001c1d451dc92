-- What the janitor (`shardcast doctor`, schedule shardcast-janitor) found at its last run: leftovers
-- of movements by kind, read by the worker's metrics at scrape time (shardcast_leftovers{kind}).
create table shardcast.janitor_runs (
  singleton boolean primary key default true check (singleton),
  checked_at timestamptz not null,
  -- {"slot": 1, "lease": 0, ...}: leftovers still there after the run's fixes.
  leftovers jsonb not null,
  fixed int not null,
  failed int not null,
  unreachable int not null
);
