import { describe, it, expect } from 'vitest';
import { evenHashRanges, hashKey, type KeyType } from '../../src/catalog/keys.js';
import type { ShardMethod } from '../../src/catalog/tables.js';
import { InvalidShardKeyError, KeyOutOfRangeError, UnknownTableError } from '../../src/errors.js';
import { tableNamedIn } from '../../src/router/router.js';
import { ShardMap, type RoutedTable, type ShardRoute } from '../../src/router/shard-map.js';
import { rng } from '../helpers/random.js';


function table(name: string, groupId: number, keyType: KeyType, method: ShardMethod): RoutedTable {
  return { name, groupId, keyColumn: 'id', keyType, method };
}

let nextShardId = 1;
function hashShards(groupId: number, count: number): ShardRoute[] {
  return evenHashRanges(count).map((r, i) => {
    const shardId = nextShardId++;
    return { shardId, schema: `sc_s${shardId}`, groupId, nodeId: (i % 3) + 1, nodeName: `node-${(i % 3) + 1}`, dsn: `postgres://n${(i % 3) + 1}/db`, hashMin: r.min, hashMax: r.max };
  });
}

function rangeShards(groupId: number, bounds: Array<bigint | string>): ShardRoute[] {
  const shards: ShardRoute[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const shardId = nextShardId++;
    shards.push({ shardId, schema: `sc_s${shardId}`, groupId, nodeId: i + 1, nodeName: `node-${i + 1}`, dsn: `postgres://n${i + 1}/db`, rangeMin: bounds[i], rangeMax: bounds[i + 1] });
  }
  return shards;
}

const HASH8 = hashShards(1, 8);
const HASH1 = hashShards(2, 1);
const HASH7_TEXT = hashShards(3, 7);
const HASH5_UUID = hashShards(4, 5);
const RANGE_INT = rangeShards(10, [0n, 100n, 1000n, 5000n]);
const RANGE_TEXT = rangeShards(11, ['a', 'h', 'p', 'é']);

const map = new ShardMap(
  42,
  new Map([
    ['orders', table('orders', 1, 'bigint', 'hash')],
    ['order_items', table('order_items', 1, 'bigint', 'hash')],
    ['single', table('single', 2, 'integer', 'hash')],
    ['users', table('users', 3, 'text', 'hash')],
    ['devices', table('devices', 4, 'uuid', 'hash')],
    ['events', table('events', 10, 'integer', 'range')],
    ['names', table('names', 11, 'text', 'range')],
    ['orphan', table('orphan', 99, 'bigint', 'hash')],
  ]),
  new Map<number, readonly ShardRoute[]>([
    [1, HASH8],
    [2, HASH1],
    [3, HASH7_TEXT],
    [4, HASH5_UUID],
    [10, RANGE_INT],
    [11, RANGE_TEXT],
  ]),
);

function containing(shards: readonly ShardRoute[], hash: bigint): ShardRoute[] {
  return shards.filter((s) => s.hashMin! <= hash && hash <= s.hashMax!);
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('ShardMap basics', () => {
  it('exposes version, tables and shards', () => {
    expect(map.version).toBe(42);
    expect(map.table('orders').keyType).toBe('bigint');
    expect(map.shardsOf('order_items')).toBe(HASH8);
    expect(map.shardsOf('orphan')).toEqual([]);
    expect([...map.dsns()].sort()).toEqual(['postgres://n1/db', 'postgres://n2/db', 'postgres://n3/db']);
  });

  it('unknown tables are UnknownTableError', () => {
    const err = thrown(() => map.route('nope', 1));
    expect(err).toBeInstanceOf(UnknownTableError);
    expect((err as UnknownTableError).table).toBe('nope');
    expect(err.message).toBe('unknown distributed table "nope"');
    expect(() => map.shardsOf('nope')).toThrow(UnknownTableError);
    expect(() => map.route('Orders', 1)).toThrow(UnknownTableError);
  });
});

describe('hash routing', () => {
  it('each bigint key lands in the one shard whose range contains its hash', () => {
    const random = rng(7);
    const counts = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const key = Math.floor(random() * 2 ** 53) - 2 ** 52;
      const route = map.route('orders', key);
      const expected = containing(HASH8, hashKey('bigint', key));
      expect(expected).toHaveLength(1);
      expect(route).toBe(expected[0]);
      counts.set(route.shardId, (counts.get(route.shardId) ?? 0) + 1);
    }
    // 3000 keys over 8 shards: every shard gets some.
    expect(counts.size).toBe(8);
  });

  it('the number, bigint and string forms of a key route alike; colocated tables share shards', () => {
    for (const key of [0, 1, -1, 123456789, -987654321012, Number.MAX_SAFE_INTEGER]) {
      const route = map.route('orders', key);
      expect(map.route('orders', BigInt(key))).toBe(route);
      expect(map.route('orders', String(key))).toBe(route);
      expect(map.route('order_items', key)).toBe(route);
    }
    expect(map.route('orders', 9223372036854775807n)).toBe(containing(HASH8, hashKey('bigint', 9223372036854775807n))[0]);
  });

  it('text keys land in the shard containing hashtextextended', () => {
    const random = rng(11);
    for (let i = 0; i < 1000; i++) {
      const key = Math.floor(random() * 1e9).toString(36) + (i % 2 ? 'é' : '');
      expect(map.route('users', key)).toBe(containing(HASH7_TEXT, hashKey('text', key))[0]);
    }
  });

  it('uuid keys land in the shard containing uuid_hash_extended, whatever their spelling', () => {
    const random = rng(13);
    for (let i = 0; i < 500; i++) {
      const hex = Array.from({ length: 32 }, () => Math.floor(random() * 16).toString(16)).join('');
      const dashed = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      const route = map.route('devices', dashed);
      expect(route).toBe(containing(HASH5_UUID, hashKey('uuid', dashed))[0]);
      expect(map.route('devices', hex.toUpperCase())).toBe(route);
    }
  });

  it('a one-shard group takes every key', () => {
    for (const key of [0, -2147483648, 2147483647, '17']) expect(map.route('single', key)).toBe(HASH1[0]);
  });

  it('a group without shards gives KeyOutOfRangeError', () => {
    const err = thrown(() => map.route('orphan', 5));
    expect(err).toBeInstanceOf(KeyOutOfRangeError);
    expect(err.message).toBe('table "orphan": key "5" is outside every shard range');
  });

  it('a gap in the hash ranges gives KeyOutOfRangeError, not a neighbour', () => {
    const hash0 = hashKey('bigint', 0); // 4154612158245552303, in the upper half
    const gapped = new ShardMap(
      1,
      new Map([['t', table('t', 1, 'bigint', 'hash')]]),
      new Map([
        [
          1,
          [
            { shardId: 1, schema: 'sc_s1', groupId: 1, nodeId: 1, nodeName: 'a', dsn: 'postgres://a/db', hashMin: -(2n ** 63n), hashMax: hash0 - 1n },
            { shardId: 2, schema: 'sc_s2', groupId: 1, nodeId: 1, nodeName: 'a', dsn: 'postgres://a/db', hashMin: hash0 + 1n, hashMax: 2n ** 63n - 1n },
          ],
        ],
      ]),
    );
    expect(() => gapped.route('t', 0)).toThrow(KeyOutOfRangeError);
    expect(gapped.route('t', 1).shardId).toBe(hashKey('bigint', 1) < hash0 ? 1 : 2);
  });

  it('a string key on a bigint table is InvalidShardKeyError naming the table', () => {
    const err = thrown(() => map.route('orders', 'abc'));
    expect(err).toBeInstanceOf(InvalidShardKeyError);
    expect((err as InvalidShardKeyError).table).toBe('orders');
    expect((err as InvalidShardKeyError).code).toBe('INVALID_SHARD_KEY');
    expect(err.message).toBe('table "orders": expected an integer key for a bigint shard key, got the string "abc"');
    expect(err.cause).toBeInstanceOf(TypeError);
  });

  it('other bad keys are InvalidShardKeyError too', () => {
    expect(thrown(() => map.route('orders', 1.5)).message).toBe('table "orders": expected an integer key for a bigint shard key, got the number 1.5');
    expect(thrown(() => map.route('single', 2 ** 31)).message).toBe('table "single": key 2147483648 is out of range for integer');
    expect(thrown(() => map.route('users', 5))).toBeInstanceOf(InvalidShardKeyError);
    expect(thrown(() => map.route('devices', 'not-a-uuid')).message).toBe('table "devices": expected a UUID key, got the string "not-a-uuid"');
    expect(thrown(() => map.route('orders', null))).toBeInstanceOf(InvalidShardKeyError);
  });
});

describe('range routing', () => {
  it('integer ranges: lower bound included, upper bound excluded', () => {
    const [s0, s1, s2] = RANGE_INT;
    expect(map.route('events', 0)).toBe(s0);
    expect(map.route('events', 99)).toBe(s0);
    expect(map.route('events', 100)).toBe(s1);
    expect(map.route('events', '100')).toBe(s1);
    expect(map.route('events', 999n)).toBe(s1);
    expect(map.route('events', 1000)).toBe(s2);
    expect(map.route('events', 4999)).toBe(s2);
  });

  it('integer ranges: the last upper bound and anything below the first bound are out of range', () => {
    for (const key of [5000, 5001, -1, -2147483648, 2147483647]) {
      const err = thrown(() => map.route('events', key));
      expect(err).toBeInstanceOf(KeyOutOfRangeError);
      expect((err as KeyOutOfRangeError).table).toBe('events');
      expect(err.message).toBe(`table "events": key "${key}" is outside every shard range`);
    }
  });

  it('integer ranges agree with a linear scan for many keys', () => {
    const random = rng(17);
    for (let i = 0; i < 2000; i++) {
      const key = Math.floor(random() * 6000) - 500;
      const expected = RANGE_INT.find((s) => BigInt(key) >= (s.rangeMin as bigint) && BigInt(key) < (s.rangeMax as bigint));
      if (expected) expect(map.route('events', key)).toBe(expected);
      else expect(() => map.route('events', key)).toThrow(KeyOutOfRangeError);
    }
  });

  it('integer ranges compare numerically, not as text', () => {
    // As text "20" > "100"; numerically it is in the first shard.
    expect(map.route('events', 20)).toBe(RANGE_INT[0]);
    expect(map.route('events', 200)).toBe(RANGE_INT[1]);
  });

  it('text ranges use UTF-8 byte order', () => {
    const [s0, s1, s2] = RANGE_TEXT; // [a,h) [h,p) [p,é)
    expect(map.route('names', 'a')).toBe(s0);
    expect(map.route('names', 'gzzz')).toBe(s0);
    expect(map.route('names', 'h')).toBe(s1);
    expect(map.route('names', 'hello')).toBe(s1);
    expect(map.route('names', 'p')).toBe(s2);
    expect(map.route('names', 'zzz')).toBe(s2);
    expect(map.route('names', 'e\u0301')).toBe(s0); // 'e' + combining accent: starts with 'e'
    expect(map.route('names', '\u00e0')).toBe(s2); // 'à' (C3 A0) sorts below 'é' (C3 A9)
    expect(() => map.route('names', 'é')).toThrow(KeyOutOfRangeError);
    expect(() => map.route('names', '表')).toThrow(KeyOutOfRangeError);
    expect(() => map.route('names', 'Z')).toThrow(KeyOutOfRangeError); // 'Z' < 'a'
    expect(() => map.route('names', '')).toThrow(KeyOutOfRangeError);
  });

  it('a number key on a text range table is InvalidShardKeyError', () => {
    const err = thrown(() => map.route('names', 5));
    expect(err).toBeInstanceOf(InvalidShardKeyError);
    expect(err.message).toBe('table "names": expected a string key for a text shard key, got the number 5');
  });

  it('a string key on an integer range table is InvalidShardKeyError', () => {
    const err = thrown(() => map.route('events', 'abc'));
    expect(err).toBeInstanceOf(InvalidShardKeyError);
    expect(err.message).toContain('table "events"');
  });
});

describe('tableNamedIn', () => {
  it('finds a table named plainly', () => {
    expect(tableNamedIn('select * from orders where id = $1', map)).toBe('orders');
    expect(tableNamedIn('select count(*) from users', map)).toBe('users');
    expect(tableNamedIn('update events set x = 1', map)).toBe('events');
  });

  it('returns the first known table', () => {
    expect(tableNamedIn('select * from users u join orders o on o.user_id = u.id', map)).toBe('users');
    expect(tableNamedIn('select * from unknown_t, orders', map)).toBe('orders');
  });

  it('folds unquoted names to lower case', () => {
    expect(tableNamedIn('SELECT * FROM ORDERS', map)).toBe('orders');
    expect(tableNamedIn('select * from Order_Items', map)).toBe('order_items');
  });

  it('finds quoted identifiers exactly, without folding', () => {
    expect(tableNamedIn('select * from "orders"', map)).toBe('orders');
    expect(tableNamedIn('select * from public."users" x', map)).toBe('users');
    expect(tableNamedIn('select * from "Orders"', map)).toBeUndefined();
  });

  it('does not see names inside string literals', () => {
    expect(tableNamedIn("select 'orders' as label", map)).toBeUndefined();
    expect(tableNamedIn("select 'it''s orders' from users", map)).toBe('users');
    expect(tableNamedIn("select 'orders' from users", map)).toBe('users');
  });

  it('does not see names inside comments', () => {
    expect(tableNamedIn('select 1 -- from orders', map)).toBeUndefined();
    expect(tableNamedIn('select 1 /* orders */', map)).toBeUndefined();
    expect(tableNamedIn('select /* users\n */ 1 from orders', map)).toBe('orders');
    expect(tableNamedIn('select 1 -- users\nfrom orders', map)).toBe('orders');
  });

  it('keeps literals, quoted identifiers and comments apart from each other', () => {
    expect(tableNamedIn("select '--' || x from orders", map)).toBe('orders');
    expect(tableNamedIn("select '/*' || x from orders", map)).toBe('orders');
    expect(tableNamedIn(`select "it's" from orders where a = 'x'`, map)).toBe('orders');
    expect(tableNamedIn('select $fn1$ users $fn1$ from orders', map)).toBe('orders');
    expect(tableNamedIn("select $1 from orders where a = '$$'", map)).toBe('orders');
  });

  it('does not see names inside dollar-quoted bodies', () => {
    expect(tableNamedIn('select $$ orders $$', map)).toBeUndefined();
    expect(tableNamedIn('select $body$ users $body$ from orders', map)).toBe('orders');
    expect(tableNamedIn('do $fn$ begin perform 1 from users; end $fn$', map)).toBeUndefined();
  });

  it('returns undefined when no distributed table is named', () => {
    expect(tableNamedIn('select 1', map)).toBeUndefined();
    expect(tableNamedIn('select * from orders_archive', map)).toBeUndefined();
    expect(tableNamedIn('select * from xorders', map)).toBeUndefined();
    expect(tableNamedIn('', map)).toBeUndefined();
  });
});
