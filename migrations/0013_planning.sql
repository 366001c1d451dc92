-- Planning (DESIGN §5): plans and their actions' outcomes, movement sizes for the move-duration
-- model, the rebalancer's pause switch, and node capacity that is calibrated unless overridden.

-- A node's capacity in load units is now calibrated from its own history (src/planning/capacity.ts)
-- unless an operator sets it: null means "calibrate". The old default 100 was not in load units and
-- could not be compared with a shard's load, so a stored 100 is taken as that default and cleared.
alter table shardcast.nodes alter column capacity drop not null;
alter table shardcast.nodes alter column capacity drop default;
-- (Only where there is such a node: the update's statement trigger bumps the map version.)
do $$
begin
  if exists (select 1 from shardcast.nodes where capacity = 100) then
    update shardcast.nodes set capacity = null where capacity = 100;
  end if;
end $$;

-- The bytes a movement copied (its source schemas' size when it started): the move-duration model
-- learns bytes per second from finished movements.
alter table shardcast.movements add column bytes bigint;

create table shardcast.plans (
  id bigserial primary key,
  created_at timestamptz not null default now(),
  -- the horizon's start (the forecasts' issue time)
  as_of timestamptz not null,
  dry_run boolean not null,
  -- the rebalance workflow that made it (null: `shardcast plan`, not stored by a workflow)
  workflow_id text,
  -- why it was made: 'schedule' (after the hourly forecast), 'operator', 'drain'
  trigger text not null,
  plan jsonb not null
);
create index plans_created on shardcast.plans (created_at desc);

create table shardcast.plan_actions (
  plan_id bigint not null references shardcast.plans (id) on delete cascade,
  action_id text not null,
  kind text not null,
  start_at timestamptz not null,
  start_by timestamptz not null,
  state text not null default 'planned'
    check (state in ('planned', 'dry-run', 'waiting', 'started', 'done', 'failed', 'skipped', 'cancelled')),
  -- the movement workflow it started, and what came of it
  workflow_id text,
  outcome text,
  updated_at timestamptz not null default now(),
  primary key (plan_id, action_id)
);

-- One row: the rebalancer's pause switch (`shardcast rebalance pause|resume`), kept across runs.
create table shardcast.rebalance_control (
  one boolean primary key default true check (one),
  paused boolean not null default false,
  changed_at timestamptz not null default now()
);
insert into shardcast.rebalance_control default values;
