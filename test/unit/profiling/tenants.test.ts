import { describe, expect, it } from 'vitest';
import { hashKey } from '../../../src/catalog/keys.js';
import { InvalidInputError } from '../../../src/errors.js';
import { isolationSteps, shardOfKey, type TenantTable } from '../../../src/profiling/tenants.js';

const MIN = -(2n ** 63n);
const MAX = 2n ** 63n - 1n;

function hashTable(bounds: Array<[bigint, bigint, string]>): TenantTable {
  return { table: 'orders', method: 'hash', keyType: 'bigint', shards: bounds.map(([lo, hi, node], i) => ({ shardId: i + 1, node, hashMin: lo.toString(), hashMax: hi.toString(), rangeMin: null, rangeMax: null })) };
}

describe('isolationSteps', () => {
  it('cuts a hash key out of the middle of its shard in two splits: in place first, then the key\'s piece onto the target', () => {
    const h = hashKey('bigint', 42n);
    const t = hashTable([[MIN, -1n, 'node-1'], [0n, MAX, 'node-2']]);
    const plan = isolationSteps(t, '42', 'node-3');
    const home = h < 0n ? 1 : 2;
    expect(plan).toMatchObject({ key: '42', shardId: home, sourceNode: `node-${home}`, targetNode: 'node-3', piece: `hash [${h}, ${h}]`, keyHalf: 0 });
    expect(plan.steps).toEqual([
      { shard: home, at: (h - 1n).toString(), targets: [`node-${home}`, `node-${home}`] },
      { shard: 'upper', at: h.toString(), targets: ['node-3', `node-${home}`] },
    ]);
  });

  it('needs one split when the key\'s hash is at either end of its shard, and refuses a key that is already alone', () => {
    const h = hashKey('bigint', 7n);
    const atLow = isolationSteps(hashTable([[MIN, h - 1n, 'a'], [h, MAX, 'b']]), '7', 'c');
    expect(atLow.steps).toEqual([{ shard: 2, at: h.toString(), targets: ['c', 'b'] }]);
    expect(atLow.keyHalf).toBe(0);
    const atHigh = isolationSteps(hashTable([[MIN, h, 'a'], [h + 1n, MAX, 'b']]), '7', 'c');
    expect(atHigh.steps).toEqual([{ shard: 1, at: (h - 1n).toString(), targets: ['a', 'c'] }]);
    expect(atHigh.keyHalf).toBe(1);
    expect(() => isolationSteps(hashTable([[MIN, h - 1n, 'a'], [h, h, 'b'], [h + 1n, MAX, 'a']]), '7', 'c')).toThrow(/already has shard 2 to itself/);
  });

  it('isolates an integer range key as [k, k + 1), and refuses a text range key with the reason', () => {
    const t: TenantTable = { table: 'events', method: 'range', keyType: 'bigint', shards: [{ shardId: 5, node: 'n1', hashMin: null, hashMax: null, rangeMin: '0', rangeMax: '1000' }] };
    const plan = isolationSteps(t, '500', 'n2');
    expect(plan.piece).toBe('range [500, 501)');
    expect(plan.steps).toEqual([
      { shard: 5, at: '500', targets: ['n1', 'n1'] },
      { shard: 'upper', at: '501', targets: ['n2', 'n1'] },
    ]);
    expect(isolationSteps(t, '0', 'n2').steps).toEqual([{ shard: 5, at: '1', targets: ['n2', 'n1'] }]);
    expect(isolationSteps(t, '999', 'n2').steps).toEqual([{ shard: 5, at: '999', targets: ['n1', 'n2'] }]);
    const alone: TenantTable = { ...t, shards: [{ ...t.shards[0]!, rangeMin: '500', rangeMax: '501' }] };
    expect(() => isolationSteps(alone, '500', 'n2')).toThrow(/key 500 of table "events" already has shard 5 to itself/);
    const text: TenantTable = { ...t, keyType: 'text', shards: [{ ...t.shards[0]!, rangeMin: 'a', rangeMax: 'z' }] };
    expect(() => isolationSteps(text, 'm', 'n2')).toThrow(/range-sharded by a text key: a single key's range has no end to split at/);
  });

  it('refuses a key its column cannot hold, naming it, and a key outside every range', () => {
    const t = hashTable([[MIN, MAX, 'node-1']]);
    expect(() => shardOfKey(t, 'abc')).toThrow(InvalidInputError);
    expect(() => shardOfKey(t, 'abc')).toThrow(/key "abc" of table "orders"/);
    const r: TenantTable = { table: 'events', method: 'range', keyType: 'bigint', shards: [{ shardId: 5, node: 'n1', hashMin: null, hashMax: null, rangeMin: '0', rangeMax: '1000' }] };
    expect(() => shardOfKey(r, '5000')).toThrow(/key 5000 of table "events" is in no shard's range/);
  });
});
