-- Node health (DESIGN §4, §5): each collection round records whether the node answered, so that
-- `shardcast status`, the metrics and the planner see an unreachable node within one interval.
create table shardcast_stats.node_health (
  node_id bigint primary key references shardcast.nodes (id) on delete cascade,
  checked_at timestamptz not null,
  reachable boolean not null,
  error text,
  -- the last round it answered; null when it never has
  last_ok_at timestamptz
);
