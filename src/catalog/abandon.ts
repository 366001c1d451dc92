import type pg from 'pg';

/**
 * A COPY TO stream that is destroyed before its end (the code consuming it failed: a target went
 * down, a file could not be written) leaves its connection in the middle of the COPY, its socket
 * paused: node-postgres never sees the end of the statement, and every later statement on that
 * client (the caller's rollback) waits forever, holding its activity, and the locks and snapshot of
 * its transaction, with it.
 *
 * When `statement` is still the client's running statement, its socket is closed at once: the
 * server ends the session (rolling its transaction back), every statement queued on the client fails
 * with "Connection terminated", and a pool drops the client when it is released. A statement that
 * already ended (an error from the server ends a COPY cleanly) leaves the connection alone.
 */
export function abandonIfRunning(client: pg.ClientBase, statement: unknown): boolean {
  if (statement === undefined || statement === null) return false;
  if ((client as unknown as { _activeQuery?: unknown })._activeQuery !== statement) return false;
  // The statement is told "Connection terminated" too; its stream, already given up by its reader, must not
  // raise that as an unhandled 'error' event (which would end the process).
  (statement as { on?: (event: string, listener: () => void) => void }).on?.('error', () => undefined);
  dropConnection(client);
  return true;
}

/**
 * Closes a client's socket at once: the server sees the client vanish (ending its session and
 * transaction), and the client fails what it runs or has queued. The client's own report of its lost
 * socket (an 'error' event, which a checked-out pool client has no listener for) is expected here.
 */
export function dropConnection(client: { on?(event: 'error', listener: () => void): unknown }): void {
  client.on?.('error', () => undefined);
  (client as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
