/**
 * Fault injection for tests that kill a worker at an exact step: SHARDCAST_FAILPOINTS holds
 * `name=sleep:MS` pairs separated by commas, and the named point pauses that long. Unset in
 * production, where every failpoint is a no-op.
 */
export async function failpoint(name: string, options: { signal?: AbortSignal; onWait?: () => void } = {}): Promise<void> {
  const spec = process.env.SHARDCAST_FAILPOINTS;
  if (!spec) return;
  for (const entry of spec.split(',')) {
    const [point, action] = entry.split('=');
    if (point?.trim() !== name || !action) continue;
    const sleep = /^sleep:(\d+)$/.exec(action.trim());
    if (!sleep) continue;
    failpointHits.set(name, (failpointHits.get(name) ?? 0) + 1);
    await pause(Number(sleep[1]), options);
  }
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
