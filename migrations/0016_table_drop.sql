-- `shardcast tables drop`: a table being dropped is 'dropping': invisible to routers and the planner,
-- its group's shards refused to movements, until the drop workflow has removed it everywhere.
alter table shardcast.distributed_tables drop constraint distributed_tables_state_check;
alter table shardcast.distributed_tables add constraint distributed_tables_state_check check (state in ('creating', 'active', 'dropping'));
