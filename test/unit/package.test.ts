import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('the package', () => {
  it('builds and exports the router API under its own name', () => {
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'pipe' });
    const script = `
      import * as shardcast from 'shardcast';
      console.log(JSON.stringify({
        createRouter: typeof shardcast.createRouter,
        hash: shardcast.hashInt8Extended(0n).toString(),
        errors: [shardcast.UnknownTableError.name, shardcast.InvalidShardKeyError.name, shardcast.KeyOutOfRangeError.name],
        routerErrors: [shardcast.MapTooStaleError, shardcast.CatalogUnavailableError].map((e) => [e.name, e.prototype instanceof shardcast.ShardcastError]),
        keyTypes: shardcast.KEY_TYPES,
      }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({
      createRouter: 'function',
      hash: '4154612158245552303',
      errors: ['UnknownTableError', 'InvalidShardKeyError', 'KeyOutOfRangeError'],
      routerErrors: [
        ['MapTooStaleError', true],
        ['CatalogUnavailableError', true],
      ],
      keyTypes: ['smallint', 'integer', 'bigint', 'text', 'uuid', 'date', 'timestamp', 'timestamptz'],
    });
  }, 120_000);
});
