import { heartbeat } from '@temporalio/activity';

/**
 * Heartbeats every `everyMs` while `work` runs, including while one long wait (a lock, a checksum, an
 * external provisioner) keeps it from heartbeating by itself: a live attempt is never taken for a
 * lost one, and a dead worker's attempt is retried once the heartbeat timeout passes.
 */
export async function whileHeartbeating<T>(what: string, work: () => Promise<T>, everyMs = 2000): Promise<T> {
  const timer = setInterval(() => heartbeat(what), everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
