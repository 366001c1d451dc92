import { dropConnection } from './catalog/abandon.js';

/**
 * Fault injection for tests that cut a step short at an exact point: SHARDCAST_FAILPOINTS holds
 * `name=action` pairs separated by commas. Actions: `sleep:MS` pauses that long; `throw` fails the
 * step; `drop-connection` destroys the socket of the connection the step passed in (the server sees
 * the client vanish, the step sees its connection lost) and fails the step. A suffix `*N` fires only
 * the first N times in this process. Unset in production, where every failpoint is a no-op.
 */
export async function failpoint(name: string, options: { signal?: AbortSignal; onWait?: () => void; connection?: unknown } = {}): Promise<void> {
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
    failpointHits.set(name, (failpointHits.get(name) ?? 0) + 1);
    const sleep = /^sleep:(\d+)$/.exec(action!);
    if (sleep) await pause(Number(sleep[1]), options);
    if (action === 'throw') throw new Error(`failpoint ${name}: injected failure`);
    if (action === 'drop-connection') {
      if (options.connection) dropConnection(options.connection as Parameters<typeof dropConnection>[0]);
      throw new Error(`failpoint ${name}: connection dropped`);
    }
  }
}

const firedCounts = new Map<string, number>();

/** Forgets how often each `*N` failpoint fired (tests that reuse a spec call it). */
export function resetFailpoints(): void {
  firedCounts.clear();
}

/** How often each failpoint fired in this process (tests wait for a movement to reach one). */
export const failpointHits = new Map<string, number>();

/** Sleeps `ms`, calling `onWait` every half second; an aborted `signal` ends it with its reason (a held activity that was cancelled does nothing more). */
function pause(ms: number, options: { signal?: AbortSignal; onWait?: () => void }): Promise<void> {
  return new Promise((resolve, reject) => {
    const { signal, onWait } = options;
    const done = setTimeout(() => stop() && resolve(), ms);
    const tick = onWait ? setInterval(onWait, 500) : undefined;
    function stop(): true {
      clearTimeout(done);
      if (tick) clearInterval(tick);
      signal?.removeEventListener('abort', aborted);
      return true;
    }
    function aborted(): void {
      stop();
      reject(signal?.reason instanceof Error ? signal.reason : new Error('failpoint aborted'));
    }
    if (signal?.aborted) return aborted();
    signal?.addEventListener('abort', aborted);
    onWait?.();
  });
}
