-- Shard keys of date and full-precision timestamp types (range or hash), e.g. a restore's range
-- layout on a time column (src/catalog/keys.ts).
alter table shardcast.colocation_groups drop constraint colocation_groups_key_type_check;
alter table shardcast.colocation_groups add constraint colocation_groups_key_type_check
  check (key_type in ('smallint', 'integer', 'bigint', 'text', 'uuid', 'date', 'timestamp', 'timestamptz'));
