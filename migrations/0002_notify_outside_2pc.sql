-- PostgreSQL refuses to PREPARE a transaction that ran NOTIFY. A cutover switches a placement in a
-- prepared transaction (two-phase commit with the source node), so it sets shardcast.in_2pc and
-- sends the notification itself once the switch is committed. map_version is still bumped.
create or replace function shardcast.bump_map_version() returns trigger
language plpgsql as $$
declare
  v bigint;
begin
  update shardcast.map_version set version = version + 1 returning version into v;
  if coalesce(current_setting('shardcast.in_2pc', true), '') <> 'on' then
    perform pg_notify('shardcast_map', v::text);
  end if;
  return null;
end
$$;
