import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirInUseError, LOCK_FILE, lockDataDir, processStartTime } from '../../src/fleet/data-dir-lock.js';

const dirs: string[] = [];
function freshDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-lock-'));
  dirs.push(dir);
  return dir;
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function writeLock(dir: string, owner: { pid: number; startTime: string | null }): void {
  writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ ...owner, startedAt: '2026-01-01T00:00:00.000Z' }));
}

function lockedBy(dir: string): number {
  return (JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid;
}

describe('lockDataDir', () => {
  it('takes a free directory and gives it back', () => {
    const dir = freshDir();
    const lock = lockDataDir(dir);
    expect(lockedBy(dir)).toBe(process.pid);
    lock.release();
    expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('refuses while the owner runs, naming its pid, and leaves its lock alone', () => {
    const dir = freshDir();
    // This very process stands in for a live `up`: same pid, same start time.
    writeLock(dir, { pid: process.pid, startTime: processStartTime(process.pid) });
    const before = readFileSync(path.join(dir, LOCK_FILE), 'utf8');
    expect(() => lockDataDir(dir)).toThrow(DataDirInUseError);
    expect(() => lockDataDir(dir)).toThrow(new RegExp(`^data directory ${dir} is in use by shardcast up \\(pid ${process.pid}, started 2026-01-01T00:00:00.000Z\\)`));
    expect(readFileSync(path.join(dir, LOCK_FILE), 'utf8')).toBe(before);
  });

  it("takes over a dead owner's lock", () => {
    const dir = freshDir();
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeLock(dir, { pid: Number(dead.stdout), startTime: '12345' });
    lockDataDir(dir).release();
  });

  it('takes over a lock whose pid now belongs to another process (start time differs)', () => {
    const dir = freshDir();
    writeLock(dir, { pid: process.pid, startTime: '1' });
    const lock = lockDataDir(dir);
    expect(readFileSync(path.join(dir, LOCK_FILE), 'utf8')).toContain(`"startTime":"${processStartTime(process.pid)}"`);
    lock.release();
  });

  it('takes over an unreadable lock file, and a release does not remove a lock that is no longer its own', () => {
    const dir = freshDir();
    writeFileSync(path.join(dir, LOCK_FILE), 'garbage');
    const lock = lockDataDir(dir);
    writeLock(dir, { pid: 1, startTime: processStartTime(1) });
    lock.release();
    expect(lockedBy(dir)).toBe(1);
  });
});
