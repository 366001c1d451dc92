/**
 * Fault injection for tests that cut a step short at an exact point: SHARDCAST_FAILPOINTS holds
 * `name=action` pairs separated by commas. Actions: `sleep:MS` pauses that long; `throw` fails the
 * step; `drop-connection` destroys the socket of the connection the step passed in (the server sees
 * the client vanish, the step sees its connection lost) and fails the step. A suffix `*N` fires only
 * the first N times in this process. Unset in production, where every failpoint is a no-op.
 */
export async function failpoint(name: string, context: { connection?: unknown } = {}): Promise<void> {
  const spec = process.env.SHARDCAST_FAILPOINTS;
  if (!spec) return;
  for (const entry of spec.split(',')) {
    const [point, rawAction] = entry.split('=');
    if (point?.trim() !== name || !rawAction) continue;
    const [action, limit] = rawAction.trim().split('*');
    if (limit !== undefined) {
      const fired = firedCounts.get(entry) ?? 0;
      if (fired >= Number(limit)) continue;
      firedCounts.set(entry, fired + 1);
    }
    const sleep = /^sleep:(\d+)$/.exec(action!);
    if (sleep) await new Promise((resolve) => setTimeout(resolve, Number(sleep[1])));
    if (action === 'throw') throw new Error(`failpoint ${name}: injected failure`);
    if (action === 'drop-connection') {
      const client = context.connection as { on?(event: 'error', listener: () => void): void; connection?: { stream?: { destroy(): void } } } | undefined;
      client?.on?.('error', () => undefined); // the client reports its lost socket: expected here
      client?.connection?.stream?.destroy();
      throw new Error(`failpoint ${name}: connection dropped`);
    }
  }
}

const firedCounts = new Map<string, number>();

/** Forgets how often each `*N` failpoint fired (tests that reuse a spec call it). */
export function resetFailpoints(): void {
  firedCounts.clear();
}
