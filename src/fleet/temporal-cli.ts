import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ShardcastError } from '../errors.js';

const execFileAsync = promisify(execFile);

/** The newest Temporal CLI release that `go install` accepts (later ones carry a `replace` directive). */
export const TEMPORAL_CLI_VERSION = '1.5.1';

export interface ResolvedTemporalCli {
  path: string;
  source: 'env' | 'path' | 'cache' | 'go-install' | 'sdk-download';
}

/** Fixed cache place, shared by every checkout on the machine, so a second run is instant. */
export function temporalCliCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.SHARDCAST_CACHE_DIR ?? path.join(env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'shardcast');
  return path.join(base, 'temporal-cli', TEMPORAL_CLI_VERSION);
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function onPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

/**
 * Finds the Temporal CLI: $TEMPORAL_CLI_PATH, else `temporal` on PATH, else the cached build, else
 * `go install` into the cache (where Go exists), else the SDK's own download (machines with internet).
 */
export async function resolveTemporalCli(
  options: { env?: NodeJS.ProcessEnv; log?: (line: string) => void } = {},
): Promise<ResolvedTemporalCli> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => undefined);
  if (env.TEMPORAL_CLI_PATH) {
    if (!isExecutable(env.TEMPORAL_CLI_PATH)) {
      throw new ShardcastError('TEMPORAL_CLI_MISSING', `TEMPORAL_CLI_PATH=${env.TEMPORAL_CLI_PATH} is not an executable file`);
    }
    return { path: env.TEMPORAL_CLI_PATH, source: 'env' };
  }
  const fromPath = onPath('temporal', env);
  if (fromPath) return { path: fromPath, source: 'path' };

  const cacheDir = temporalCliCacheDir(env);
  const cached = path.join(cacheDir, 'temporal');
  if (isExecutable(cached)) return { path: cached, source: 'cache' };

  const go = onPath('go', env);
  if (go) {
    mkdirSync(cacheDir, { recursive: true });
    log(`temporal: building the Temporal CLI v${TEMPORAL_CLI_VERSION} with go install (once; cached in ${cacheDir})`);
    try {
      await execFileAsync(go, ['install', `github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_VERSION}`], {
        env: { ...env, GOBIN: cacheDir, GOFLAGS: '-mod=mod' },
        maxBuffer: 64 * 1024 * 1024,
        timeout: 30 * 60_000,
      });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? '';
      throw new ShardcastError('TEMPORAL_CLI_BUILD_FAILED', `go install of the Temporal CLI failed: ${stderr.trim().split('\n').slice(-3).join(' | ')}`, {
        cause: err,
      });
    }
    if (isExecutable(cached)) return { path: cached, source: 'go-install' };
  }

  log('temporal: downloading the Temporal CLI through the Temporal SDK (once)');
  const downloadDir = path.join(cacheDir, 'download');
  mkdirSync(downloadDir, { recursive: true });
  const { TestWorkflowEnvironment } = await import('@temporalio/testing');
  const probe = await TestWorkflowEnvironment.createLocal({
    server: { executable: { type: 'cached-download', downloadDir } },
  });
  await probe.teardown();
  const downloaded = findExecutable(downloadDir);
  if (!downloaded) {
    throw new ShardcastError('TEMPORAL_CLI_MISSING', `the SDK download left no Temporal CLI in ${downloadDir}`);
  }
  return { path: downloaded, source: 'sdk-download' };
}

function findExecutable(dir: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      const inner = findExecutable(full);
      if (inner) return inner;
    } else if (entry.name.startsWith('temporal') && isExecutable(full)) {
      return full;
    }
  }
  return undefined;
}
