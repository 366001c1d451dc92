import { describe, expect, it } from 'vitest';
import { hashKey } from '../../../src/catalog/keys.js';
import { InvalidInputError } from '../../../src/errors.js';
import { chooseIsolationTarget, isolationSteps, loadSplitPoints, shardOfKey, type TenantTable } from '../../../src/profiling/tenants.js';

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

describe('loadSplitPoints into two', () => {
  /** The one point of a split in two, with the lower half's share. */
  const loadSplitPoint = (...args: [TenantTable, TenantTable['shards'][number], Array<{ key: string; accesses: number }>, number]) => {
    const cut = loadSplitPoints(...args, 2);
    return cut && { at: cut.points[0]!, lowerShare: cut.shares[0]!, heavyShare: cut.heavyShare };
  };
  const t = hashTable([[MIN, MAX, 'node-1']]);
  const shard = t.shards[0]!;
  // Keys 1..200 and their hashes, in hash order.
  const keys = Array.from({ length: 200 }, (_, i) => ({ key: String(i + 1), hash: hashKey('bigint', BigInt(i + 1)) })).sort((a, b) => (a.hash < b.hash ? -1 : 1));

  it('is the midpoint of the hash range when the heavy keys are light against the even rest', () => {
    const s = loadSplitPoint(t, shard, [{ key: keys[0]!.key, accesses: 1 }], 1_000_000)!;
    expect(s.lowerShare).toBeCloseTo(0.5, 4);
    // Within a millionth of the range of its middle (-1).
    expect(Number(BigInt(s.at) - -1n) / 2 ** 64).toBeLessThan(1e-6);
  });

  it('moves the point towards the heavy keys so that each half carries about half the accesses', () => {
    // Two heavy keys low in the hash range take 60% of the accesses: the lower half would take them all at the midpoint.
    const low = keys.slice(0, 2).map((k) => ({ key: k.key, accesses: 300 }));
    const s = loadSplitPoint(t, shard, low, 1000)!;
    expect(s.heavyShare).toBeCloseTo(0.6);
    expect(Math.abs(s.lowerShare - 0.5)).toBeLessThanOrEqual(0.15 + 1e-9);
    // The split is just around them: one in each half, or both below with almost nothing else.
    expect(BigInt(s.at)).toBeLessThan(keys[2]!.hash);
    // Even the better side of a key that straddles the middle: one key with 70% goes to one half, alone but for the rest's share.
    const h = keys[100]!.hash;
    const one = loadSplitPoint(t, shard, [{ key: keys[100]!.key, accesses: 700 }], 1000)!;
    expect([h - 1n, h]).toContain(BigInt(one.at));
    const below = (0.3 * Number(h - MIN)) / 2 ** 64; // the rest's share under the key
    expect(Math.abs(one.lowerShare - 0.5)).toBeCloseTo(Math.min(Math.abs(below - 0.5), Math.abs(below + 0.7 - 0.5)), 6);
  });

  it('is undefined without heavy keys in the shard, for a range table, or for a shard without accesses', () => {
    expect(loadSplitPoint(t, shard, [], 1000)).toBeUndefined();
    expect(loadSplitPoint(t, shard, [{ key: '5', accesses: 10 }], 0)).toBeUndefined();
    const range: TenantTable = { table: 'r', method: 'range', keyType: 'bigint', shards: [{ shardId: 1, node: 'a', hashMin: null, hashMax: null, rangeMin: '0', rangeMax: '100' }] };
    expect(loadSplitPoint(range, range.shards[0]!, [{ key: '5', accesses: 10 }], 100)).toBeUndefined();
    // A key of another shard does not count.
    const two = hashTable([[MIN, -1n, 'a'], [0n, MAX, 'b']]);
    const elsewhere = keys.find((k) => k.hash >= 0n)!;
    expect(loadSplitPoint(two, two.shards[0]!, [{ key: elsewhere.key, accesses: 500 }], 1000)).toBeUndefined();
  });
});

describe('loadSplitPoints', () => {
  const t = hashTable([[MIN, MAX, 'node-1']]);
  const shard = t.shards[0]!;
  const keys = Array.from({ length: 200 }, (_, i) => ({ key: String(i + 1), hash: hashKey('bigint', BigInt(i + 1)) })).sort((a, b) => (a.hash < b.hash ? -1 : 1));

  it('cuts into pieces of about even load, in increasing order: the quarter points of the range without skew', () => {
    const even = loadSplitPoints(t, shard, [{ key: keys[0]!.key, accesses: 1 }], 1_000_000, 4)!;
    expect(even.points).toHaveLength(3);
    expect(even.shares.reduce((a, b) => a + b, 0)).toBeCloseTo(1);
    for (const share of even.shares) expect(share).toBeCloseTo(0.25, 3);
    const points = even.points.map(BigInt);
    expect(points[0]! < points[1]! && points[1]! < points[2]!).toBe(true);
    expect(Math.abs(Number(points[1]! - -1n)) / 2 ** 64).toBeLessThan(1e-6);
  });

  it('crowds the cuts where the heavy keys are', () => {
    // Four heavy keys together high in the range take 80%: three cuts among them, not at the quarter points.
    const hot = keys.slice(190, 194).map((k) => ({ key: k.key, accesses: 200 }));
    const s = loadSplitPoints(t, shard, hot, 1000, 4)!;
    // Keys are not cut: a piece is off by at most one key's share (20%).
    for (const share of s.shares) expect(Math.abs(share - 0.25)).toBeLessThanOrEqual(0.2);
    expect(s.points.every((p) => BigInt(p) >= keys[189]!.hash)).toBe(true);
    // A split in two cuts at the middle one of the four's points.
    expect(loadSplitPoints(t, shard, hot, 1000, 2)!.points[0]).toBe(s.points[1]);
  });

  it('is undefined for fewer than two pieces or without heavy keys', () => {
    expect(loadSplitPoints(t, shard, [{ key: '1', accesses: 5 }], 100, 1)).toBeUndefined();
    expect(loadSplitPoints(t, shard, [], 100, 4)).toBeUndefined();
  });
});


describe('chooseIsolationTarget', () => {
  const weights = { load: 1, bytes: 0.05, locality: 0.5, alignment: 0.5 };
  const flat = new Array<number>(24).fill(0);
  /** A daily profile peaking at `hour` (a triangle wave over the day). */
  const peakAt = (hour: number) => Array.from({ length: 24 }, (_, h) => 12 - Math.min(Math.abs(h - hour), 24 - Math.abs(h - hour)));
  const node = (name: string, region: string | null, utilisation: number, hourly = flat) => ({ name, region, utilisation, hourly });

  it('an entity accessed mostly from one region goes to a node there, when load allows', () => {
    const entity = { regionShares: { eu: 0.9, us: 0.1 }, hourly: flat };
    const inEu = chooseIsolationTarget(entity, [node('node-2', 'us', 0.2), node('node-3', 'eu', 0.3)], weights, 0.7);
    expect(inEu.name).toBe('node-3');
    expect(inEu.terms.locality).toBeCloseTo(0.1);
    expect(inEu.reason).toMatch(/^node-3: 30% utilised; 90% of the key's accesses from eu \(target cost 0\.48, next node-2 0\.74\)$/);
    // The node in the region is over the target: load first.
    expect(chooseIsolationTarget(entity, [node('node-2', 'us', 0.2), node('node-3', 'eu', 0.75)], weights, 0.7).name).toBe('node-2');
    // Every node over the target: the lowest cost among them all.
    expect(chooseIsolationTarget(entity, [node('node-2', 'us', 0.8), node('node-3', 'eu', 0.85)], weights, 0.7).name).toBe('node-3');
  });

  it('entities with opposite daily peaks share a node in preference to ones with the same peak', () => {
    const entity = { regionShares: {}, hourly: peakAt(3) };
    const choice = chooseIsolationTarget(entity, [node('node-2', null, 0.3, peakAt(3)), node('node-3', null, 0.3, peakAt(15))], weights, 0.7);
    expect(choice.name).toBe('node-3');
    expect(choice.terms.alignment).toBe(0);
    expect(choice.reason).toContain('its daily peak at 3:00 UTC on the node\'s peaking at 15:00 stacks 0%');
    // Without profiles: no preference but load, then the name.
    expect(chooseIsolationTarget({ regionShares: {}, hourly: flat }, [node('node-3', null, 0.3), node('node-2', null, 0.3)], weights, 0.7).name).toBe('node-2');
    expect(chooseIsolationTarget({ regionShares: {}, hourly: flat }, [node('node-3', null, 0.1), node('node-2', null, 0.3)], weights, 0.7).name).toBe('node-3');
  });
});
