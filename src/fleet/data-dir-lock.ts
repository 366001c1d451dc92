import { linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ShardcastError } from '../errors.js';

/** Who owns a data directory: a process, told apart from a later one with the same pid by its start time. */
export interface LockOwner {
  pid: number;
  /** /proc/PID/stat's starttime (clock ticks after boot); null where /proc is not available. */
  startTime: string | null;
  startedAt: string;
}

export const LOCK_FILE = 'shardcast-up.lock';

/** The process's start time from /proc/PID/stat (field 22), or null if it cannot be read. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the lock's owner still runs: its pid is alive and (where /proc tells) started when it said. */
export function ownerAlive(owner: LockOwner): boolean {
  if (!pidAlive(owner.pid)) return false;
  if (owner.startTime === null) return true;
  const now = processStartTime(owner.pid);
  return now === null || now === owner.startTime;
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockOwner>;
    if (!Number.isInteger(parsed.pid) || (parsed.pid as number) <= 0) return undefined;
    return { pid: parsed.pid as number, startTime: typeof parsed.startTime === 'string' ? parsed.startTime : null, startedAt: String(parsed.startedAt ?? '') };
  } catch {
    return undefined;
  }
}

export class DataDirInUseError extends ShardcastError {
  constructor(
    readonly dataDir: string,
    readonly owner: LockOwner,
  ) {
    super(
      'DATA_DIR_IN_USE',
      `data directory ${dataDir} is in use by shardcast up (pid ${owner.pid}, started ${owner.startedAt}): ` +
        `stop it first (Ctrl-C in its terminal, or kill -INT ${owner.pid}); nothing was started or stopped`,
    );
  }
}

export interface DataDirLock {
  /** Removes the lock file if it is still this process's. */
  release(): void;
}

/**
 * Takes the data directory for this process: a lock file with its pid and start time. A live owner
 * makes it throw DataDirInUseError; a dead owner's lock (a killed run) is taken over, after which
 * what that run left behind may be stopped.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, startTime: processStartTime(process.pid), startedAt: new Date().toISOString() };
  const content = `${JSON.stringify(me)}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      writeFileSync(file, content, { flag: 'wx' });
      return { release: () => releaseIfMine(file, content) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = readOwner(file);
    if (owner && ownerAlive(owner)) throw new DataDirInUseError(dataDir, owner);
    takeOverStale(file, owner);
  }
  throw new ShardcastError('DATA_DIR_LOCK', `data directory ${dataDir}: cannot take ${LOCK_FILE} (another shardcast up starting at the same moment?)`);
}

/**
 * Moves a dead owner's lock aside, atomically: if what was moved is not the lock that was judged
 * dead (another process took over meanwhile), it is put back, and the next attempt sees it.
 */
function takeOverStale(file: string, judged: LockOwner | undefined): void {
  const aside = `${file}.stale-${process.pid}`;
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = readOwner(aside);
  if (moved && (!judged || moved.pid !== judged.pid || moved.startTime !== judged.startTime) && ownerAlive(moved)) {
    try {
      linkSync(aside, file);
    } catch {
      // A third process holds the name now; the next attempt judges that one.
    }
  }
  unlinkSync(aside);
}

function releaseIfMine(file: string, content: string): void {
  try {
    if (readFileSync(file, 'utf8') === content) unlinkSync(file);
  } catch {
    // already gone
  }
}
