-- A move back within the grace period (`move --reverse`) names the movement it reverses: while it
-- runs, that movement's fenced copy and reverse stream are not dropped at the end of the grace period.
alter table shardcast.movements add column reverse_of text;
