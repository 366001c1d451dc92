/**
 * Fault injection for tests that kill a worker at an exact step: SHARDCAST_FAILPOINTS holds
 * `name=sleep:MS` pairs separated by commas, and the named point pauses that long. Unset in
 * production, where every failpoint is a no-op.
 */
export async function failpoint(name: string): Promise<void> {
  const spec = process.env.SHARDCAST_FAILPOINTS;
  if (!spec) return;
  for (const entry of spec.split(',')) {
    const [point, action] = entry.split('=');
    if (point?.trim() !== name || !action) continue;
    const sleep = /^sleep:(\d+)$/.exec(action.trim());
    if (sleep) await new Promise((resolve) => setTimeout(resolve, Number(sleep[1])));
  }
}
