import type pg from 'pg';

/**
 * What the creation of a logical replication slot on this server waits for: PostgreSQL builds the
 * slot's snapshot only once every transaction holding a transaction id when it began has ended, in
 * any database of the server — a prepared transaction left behind (by a crashed cutover, or by
 * another application) included, however long it stays. One line per transaction, oldest first.
 */
export async function slotBlockers(db: Pick<pg.ClientBase, 'query'>, since: Date): Promise<string[]> {
  const { rows } = await db.query<{ line: string }>(
    `select line from (
       select prepared as at, format('prepared transaction %L in database %s since %s', gid, database, to_char(prepared, 'YYYY-MM-DD HH24:MI:SS TZ')) as line
         from pg_prepared_xacts where prepared < $1
       union all
       select xact_start, format('session %s (%s) in database %s, in a transaction since %s', pid, coalesce(nullif(application_name, ''), usename::text, '?'), datname, to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS TZ'))
         from pg_stat_activity where backend_xid is not null and xact_start < $1 and pid <> pg_backend_pid()
     ) t order by at limit 10`,
    [since],
  );
  return rows.map((r) => r.line);
}

/**
 * Awaits a slot's creation; while it waits longer than `afterMs`, tells `report` (every `afterMs`)
 * what it waits for, so that a movement stuck behind a forgotten transaction says so instead of
 * hanging out of sight. It does not give up: the transactions it waits for may well end.
 */
export async function reportingSlotWait<T>(creating: Promise<T>, db: Pick<pg.ClientBase, 'query'>, report: (waitingFor: string) => void, afterMs = 5000): Promise<T> {
  // Transactions begun up to a second after it are named too: a margin for the clocks of client and server.
  const since = new Date(Date.now() + 1000);
  let timer: NodeJS.Timeout | undefined;
  let done = false;
  const tick = (): void => {
    timer = setTimeout(() => {
      void slotBlockers(db, since)
        .then((lines) => {
          if (!done && lines.length) report(`the replication slot's creation waits for ${lines.join('; ')}`);
        })
        .catch(() => undefined)
        .finally(() => {
          if (!done) tick();
        });
    }, afterMs);
  };
  tick();
  try {
    return await creating;
  } finally {
    done = true;
    clearTimeout(timer);
  }
}
