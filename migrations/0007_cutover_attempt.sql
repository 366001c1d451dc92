-- The cutover's fencing token (DESIGN §3, step 6): each cutover attempt takes the next number under
-- the lease row's lock, and the catalog transaction that switches the placement checks it under the
-- same lock, so that an attempt a retry has replaced can no longer fence, prepare or switch anything.
alter table shardcast.movements add column cutover_attempt bigint not null default 0;
