import { describe, expect, it } from 'vitest';
import { coveredBy, keyComparator, planRescatter, shardInterval, type KeyInterval } from '../../src/router/scatter.js';
import type { ShardRoute } from '../../src/router/shard-map.js';
import { isReadOnlyStatement } from '../../src/router/sql-words.js';

const hashCmp = keyComparator({ name: 't', groupId: 1, keyColumn: 'id', keyType: 'bigint', method: 'hash' });
const textCmp = keyComparator({ name: 't', groupId: 1, keyColumn: 'k', keyType: 'text', method: 'range' });

function hashShard(shardId: number, hashMin: bigint, hashMax: bigint): ShardRoute {
  return { shardId, schema: `sc_s${shardId}`, groupId: 1, nodeId: 1, nodeName: 'node-1', dsn: 'postgres://x/y', hashMin, hashMax };
}

describe('coveredBy', () => {
  it('needs the parts to reach from the start to the end without a gap', () => {
    const range: KeyInterval = { lo: 0n, hi: 100n };
    expect(coveredBy(range, [{ lo: 0n, hi: 50n }, { lo: 50n, hi: 100n }], hashCmp)).toBe(true);
    expect(coveredBy(range, [{ lo: -10n, hi: 200n }], hashCmp)).toBe(true);
    expect(coveredBy(range, [{ lo: 0n, hi: 49n }, { lo: 50n, hi: 100n }], hashCmp)).toBe(false);
    expect(coveredBy(range, [{ lo: 1n, hi: 100n }], hashCmp)).toBe(false);
    expect(coveredBy(range, [{ lo: 0n, hi: 99n }], hashCmp)).toBe(false);
    expect(coveredBy(range, [], hashCmp)).toBe(false);
  });

  it('compares range keys in their key type', () => {
    expect(coveredBy({ lo: 'a', hi: 'n' }, [{ lo: 'a', hi: 'f' }, { lo: 'f', hi: 'n' }], textCmp)).toBe(true);
    expect(coveredBy({ lo: 'a', hi: 'n' }, [{ lo: 'a', hi: 'f' }, { lo: 'g', hi: 'n' }], textCmp)).toBe(false);
  });
});

describe('planRescatter', () => {
  const a = hashShard(1, 0n, 99n);
  const b = hashShard(2, 100n, 199n);
  const c = hashShard(3, 200n, 299n);

  it('after a split, runs on the halves of the retired shard only', () => {
    const low = hashShard(4, 100n, 149n);
    const high = hashShard(5, 150n, 199n);
    const plan = planRescatter([a, low, high, c], [shardInterval(a), shardInterval(c)], [shardInterval(b)], hashCmp);
    expect(plan.run.map((r) => r.shardId)).toEqual([4, 5]);
    expect(plan.mixed).toEqual([]);
  });

  it('after a merge of two retired shards, runs once on the merged shard', () => {
    const merged = hashShard(6, 0n, 199n);
    const plan = planRescatter([merged, c], [shardInterval(c)], [shardInterval(a), shardInterval(b)], hashCmp);
    expect(plan.run.map((r) => r.shardId)).toEqual([6]);
    expect(plan.mixed).toEqual([]);
  });

  it('does not run on a merged shard that holds rows the statement already changed', () => {
    const merged = hashShard(6, 0n, 199n);
    const plan = planRescatter([merged, c], [shardInterval(a), shardInterval(c)], [shardInterval(b)], hashCmp);
    expect(plan.run).toEqual([]);
    expect(plan.mixed.map((r) => r.shardId)).toEqual([6]);
  });
});

describe('isReadOnlyStatement', () => {
  it('accepts plain reads', () => {
    expect(isReadOnlyStatement('select count(*) from orders')).toBe(true);
    expect(isReadOnlyStatement('with x as (select 1) select * from x')).toBe(true);
    expect(isReadOnlyStatement("select * from orders where note = 'update me' -- delete")).toBe(true);
    expect(isReadOnlyStatement('select "update" from orders')).toBe(true);
  });

  it('refuses anything that writes or locks', () => {
    expect(isReadOnlyStatement('update orders set n = n + 1')).toBe(false);
    expect(isReadOnlyStatement('with d as (delete from orders returning *) select * from d')).toBe(false);
    expect(isReadOnlyStatement('select * into copy_of from orders')).toBe(false);
    expect(isReadOnlyStatement('select * from orders for update')).toBe(false);
    expect(isReadOnlyStatement("select nextval('s') from orders")).toBe(false);
    expect(isReadOnlyStatement('  ')).toBe(false);
  });
});
