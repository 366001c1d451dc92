import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * What a module loads before any command runs: its static imports (not `import type`, not `import()`),
 * followed through the project's own modules. Returns the packages reached, each with the chain of
 * project modules that reaches it.
 */
function staticPackages(entry: string): Map<string, string[]> {
  const packages = new Map<string, string[]>();
  const seen = new Set<string>();
  const queue: Array<[string, string[]]> = [[path.join(ROOT, entry), [entry]]];
  for (let next = queue.shift(); next; next = queue.shift()) {
    const [file, chain] = next;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(/^(import|export)\s+(type\s)?[^;]*?from\s+'([^']+)';|^import\s+'([^']+)';/gms)) {
      if (m[2]) continue;
      const spec = (m[3] ?? m[4])!;
      if (spec.startsWith('.')) {
        const target = path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts'));
        if (existsSync(target)) queue.push([target, [...chain, path.relative(ROOT, target)]]);
      } else if (!spec.startsWith('node:')) {
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!packages.has(name)) packages.set(name, chain);
      }
    }
  }
  return packages;
}

describe('the CLI starts light', () => {
  it('cli/main.ts loads only commander before a command runs: pg, the Temporal client and worker, TensorFlow.js and zod load in the commands that need them', () => {
    const reached = staticPackages('cli/main.ts');
    expect(Object.fromEntries([...reached].map(([name, chain]) => [name, chain.join(' > ')]))).toEqual({ commander: 'cli/main.ts' });
  });

  it('a Temporal client does not load the worker (client/index.ts reaches no @temporalio/worker nor TensorFlow.js)', () => {
    expect(staticPackages('cli/stack.ts').has('@temporalio/worker')).toBe(true); // the walk does find it where it is
    const reached = staticPackages('client/index.ts');
    expect(reached.has('@temporalio/worker')).toBe(false);
    expect([...reached.keys()].filter((p) => p.startsWith('@tensorflow/'))).toEqual([]);
  });

  it('the configuration, which every command loads, reaches only zod: no pg (the governor\'s defaults and the TLS modes are import-free modules), no YAML parser unless the file is YAML', () => {
    const reached = staticPackages('src/config.ts');
    expect(Object.fromEntries([...reached].map(([name, chain]) => [name, chain.join(' > ')]))).toEqual({ zod: 'src/config.ts' });
    for (const module of ['src/movement/governor-settings.ts', 'src/catalog/pg-tls-settings.ts']) expect([...staticPackages(module).keys()], module).toEqual([]);
  });

  it('status loads no Temporal and no TensorFlow.js', () => {
    for (const module of ['src/planning/outlook.ts', 'src/profiling/collector.ts', 'src/catalog/tables.ts', 'src/catalog/nodes.ts', 'cli/program-config.ts']) {
      const reached = [...staticPackages(module).keys()];
      expect(reached.filter((p) => p.startsWith('@temporalio/') || p.startsWith('@tensorflow/')), module).toEqual([]);
    }
  });

  it('pg loads without Node\'s fetch (undici): its Cloudflare probe sees a navigator while it loads, and the global is as before afterwards', () => {
    const script = `
      const { withoutFetchProbe } = await import('./cli/program-config.ts');
      const before = 'navigator' in globalThis;
      let inside;
      await withoutFetchProbe(async () => { inside = globalThis.navigator?.userAgent; await import('pg'); });
      const failed = await withoutFetchProbe(async () => { throw new Error('boom'); }).catch((e) => e.message);
      console.log(JSON.stringify({ undici: process.moduleLoadList.some((m) => m.includes('undici')), inside, same: ('navigator' in globalThis) === before, failed }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ undici: false, inside: expect.stringMatching(/^Node\.js\/\d+/), same: true, failed: 'boom' });
  });
});
