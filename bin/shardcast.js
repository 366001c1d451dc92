#!/usr/bin/env node
// Runs the built CLI (dist/, made by `npm run build`, and by `npm install`/`npm ci` through `prepare`)
// when it is there and no source file is newer than it; otherwise the TypeScript sources through tsx's
// loader, which is slower to start (it compiles them) but never runs stale code.
import { existsSync, readdirSync, statSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const built = new URL('dist/cli/main.js', root);

/** The newest modification time of the TypeScript sources the build compiles (0 when there are none, as in a package without them). */
function newestSource() {
  let newest = 0;
  for (const dir of ['cli', 'client', 'src', 'workers', 'workflows', 'activities']) {
    const base = new URL(`${dir}/`, root);
    let names;
    try {
      names = readdirSync(base, { recursive: true });
    } catch {
      continue;
    }
    for (const name of names) {
      if (typeof name === 'string' && name.endsWith('.ts')) newest = Math.max(newest, statSync(new URL(name, base)).mtimeMs);
    }
  }
  return newest;
}

if (existsSync(built) && statSync(built).mtimeMs >= newestSource()) {
  // With --verbose, stack traces name the TypeScript sources (dist/ has their source maps); only then,
  // as reading the maps slows the start.
  if (process.argv.includes('--verbose') || process.argv.includes('-v')) process.setSourceMapsEnabled(true);
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
