import { describe, it, expect } from 'vitest';
import { MAX_SHARDS_PER_TABLE, parseRangeBounds, shardTableDdl, validateTableSpec, type TableSpec } from '../../src/catalog/tables.js';
import { InvalidInputError } from '../../src/errors.js';

const COLUMNS = 'id bigint primary key, body text';

function spec(extra: Partial<TableSpec> = {}): TableSpec {
  return { name: 'orders', columns: COLUMNS, shardKey: 'id', ...extra };
}

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidInputError');
}

describe('validateTableSpec: valid specs', () => {
  it('accepts the defaults (hash, 8 shards)', () => {
    expect(() => validateTableSpec(spec())).not.toThrow();
  });

  it('accepts hash with 1 and with the maximum shard count', () => {
    expect(MAX_SHARDS_PER_TABLE).toBe(4096);
    expect(() => validateTableSpec(spec({ method: 'hash', shardCount: 1 }))).not.toThrow();
    expect(() => validateTableSpec(spec({ shardCount: 4096 }))).not.toThrow();
  });

  it('accepts range with two or more bounds', () => {
    expect(() => validateTableSpec(spec({ method: 'range', rangeBounds: ['0', '100'] }))).not.toThrow();
    expect(() => validateTableSpec(spec({ method: 'range', rangeBounds: ['0', '100', '1000'], nodes: ['node-1', 'node_2'] }))).not.toThrow();
  });

  it('accepts colocateWith alone', () => {
    expect(() => validateTableSpec(spec({ name: 'order_items', colocateWith: 'orders' }))).not.toThrow();
  });

  it('accepts an empty node list', () => {
    expect(() => validateTableSpec(spec({ nodes: [] }))).not.toThrow();
  });
});

describe('validateTableSpec: names', () => {
  it('checks the table name', () => {
    expect(invalid(() => validateTableSpec(spec({ name: 'Orders' })))).toMatch(/^table name "Orders" is not allowed/);
    expect(invalid(() => validateTableSpec(spec({ name: 'sc_orders' })))).toMatch(/reserved/);
    expect(invalid(() => validateTableSpec(spec({ name: '' })))).toBe('table name is required');
  });

  it('checks the shard key column', () => {
    expect(invalid(() => validateTableSpec(spec({ shardKey: 'user id' })))).toMatch(/^shard key column name "user id" is not allowed/);
  });

  it('checks the colocation table', () => {
    expect(invalid(() => validateTableSpec(spec({ colocateWith: 'Orders;' })))).toMatch(/^colocation table name "Orders;" is not allowed/);
  });

  it('requires column definitions', () => {
    expect(invalid(() => validateTableSpec(spec({ columns: '' })))).toBe('table "orders": column definitions are required');
    expect(invalid(() => validateTableSpec(spec({ columns: '   ' })))).toBe('table "orders": column definitions are required');
    expect(invalid(() => validateTableSpec(spec({ columns: undefined as unknown as string })))).toBe('table "orders": column definitions are required');
  });
});

describe('validateTableSpec: colocateWith', () => {
  const message =
    'table "items": a table colocated with "orders" takes that group\'s method, shards and nodes; do not give method, shard count, bounds or nodes';
  it('cannot be combined with method, shard count, bounds or nodes', () => {
    expect(invalid(() => validateTableSpec(spec({ name: 'items', colocateWith: 'orders', method: 'hash' })))).toBe(message);
    expect(invalid(() => validateTableSpec(spec({ name: 'items', colocateWith: 'orders', shardCount: 8 })))).toBe(message);
    expect(invalid(() => validateTableSpec(spec({ name: 'items', colocateWith: 'orders', rangeBounds: ['a', 'b'] })))).toBe(message);
    expect(invalid(() => validateTableSpec(spec({ name: 'items', colocateWith: 'orders', nodes: ['node-1'] })))).toBe(message);
  });
});

describe('validateTableSpec: hash', () => {
  for (const count of [0, -1, 5000, 4097, 1.5, NaN]) {
    it(`refuses shard count ${count}`, () => {
      expect(invalid(() => validateTableSpec(spec({ shardCount: count })))).toBe(
        `table "orders": shard count must be an integer from 1 to 4096, got ${count}`,
      );
    });
  }

  it('refuses range bounds', () => {
    expect(invalid(() => validateTableSpec(spec({ rangeBounds: ['0', '10'] })))).toBe('table "orders": range bounds are for the range method');
    expect(invalid(() => validateTableSpec(spec({ method: 'hash', rangeBounds: ['0', '10'] })))).toBe('table "orders": range bounds are for the range method');
  });

  it('refuses an unknown method', () => {
    expect(invalid(() => validateTableSpec(spec({ method: 'list' as 'hash' })))).toBe('table "orders": method must be hash or range, got "list"');
  });
});

describe('validateTableSpec: range', () => {
  it('needs bounds', () => {
    const message = 'table "orders": the range method needs at least two bounds (b0 < b1 < …)';
    expect(invalid(() => validateTableSpec(spec({ method: 'range' })))).toBe(message);
    expect(invalid(() => validateTableSpec(spec({ method: 'range', rangeBounds: [] })))).toBe(message);
    expect(invalid(() => validateTableSpec(spec({ method: 'range', rangeBounds: ['10'] })))).toBe(message);
  });

  it('takes bounds, not a shard count', () => {
    expect(invalid(() => validateTableSpec(spec({ method: 'range', rangeBounds: ['0', '10'], shardCount: 2 })))).toBe(
      'table "orders": the range method takes bounds, not a shard count',
    );
  });

  it('allows at most 4096 ranges', () => {
    const ok = Array.from({ length: 4097 }, (_, i) => String(i));
    expect(() => validateTableSpec(spec({ method: 'range', rangeBounds: ok }))).not.toThrow();
    const tooMany = Array.from({ length: 4098 }, (_, i) => String(i));
    expect(invalid(() => validateTableSpec(spec({ method: 'range', rangeBounds: tooMany })))).toBe('table "orders": at most 4096 ranges');
  });
});

describe('validateTableSpec: node names', () => {
  for (const bad of ['Node1', '1node', 'node 1', 'node;1', '', 'nöde', 'n'.repeat(64)]) {
    it(`refuses ${JSON.stringify(bad)}`, () => {
      expect(invalid(() => validateTableSpec(spec({ nodes: ['node-1', bad] })))).toBe(`unknown node name ${JSON.stringify(bad)}`);
    });
  }

  it('refuses non-string node names', () => {
    expect(invalid(() => validateTableSpec(spec({ nodes: [7 as unknown as string] })))).toBe('unknown node name 7');
  });
});

describe('parseRangeBounds', () => {
  it('canonicalises integer bounds', () => {
    expect(parseRangeBounds('t', 'bigint', ['-100', ' 0 ', '007', '9223372036854775807'])).toEqual(['-100', '0', '7', '9223372036854775807']);
    expect(parseRangeBounds('t', 'smallint', ['-32768', '32767'])).toEqual(['-32768', '32767']);
  });

  it('compares integers numerically', () => {
    expect(parseRangeBounds('t', 'integer', ['9', '10', '100'])).toEqual(['9', '10', '100']);
    expect(invalid(() => parseRangeBounds('t', 'integer', ['100', '20']))).toBe('table "t": range bounds must be strictly ascending (100 is not below 20)');
  });

  it('keeps text bounds verbatim and orders them by UTF-8 bytes', () => {
    expect(parseRangeBounds('t', 'text', [' a', 'A', 'a', 'é'])).toEqual([' a', 'A', 'a', 'é']);
    expect(invalid(() => parseRangeBounds('t', 'text', ['a', 'Z']))).toBe('table "t": range bounds must be strictly ascending (a is not below Z)');
  });

  it('lower-cases UUID bounds', () => {
    expect(parseRangeBounds('t', 'uuid', ['00000000-0000-0000-0000-000000000000', 'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF'])).toEqual([
      '00000000-0000-0000-0000-000000000000',
      'ffffffff-ffff-ffff-ffff-ffffffffffff',
    ]);
  });

  it('refuses equal bounds', () => {
    expect(invalid(() => parseRangeBounds('t', 'bigint', ['1', '01']))).toBe('table "t": range bounds must be strictly ascending (1 is not below 01)');
    expect(invalid(() => parseRangeBounds('t', 'text', ['x', 'x']))).toMatch(/strictly ascending/);
  });

  it('names a bound of the wrong type', () => {
    expect(invalid(() => parseRangeBounds('t', 'integer', ['0', 'ten']))).toBe(
      'table "t": range bound "ten": expected an integer key for an integer shard key, got the string "ten"',
    );
    expect(invalid(() => parseRangeBounds('t', 'smallint', ['0', '40000']))).toBe('table "t": range bound "40000": key 40000 is out of range for smallint');
    expect(invalid(() => parseRangeBounds('t', 'uuid', ['nope', 'ffffffffffffffffffffffffffffffff']))).toBe(
      'table "t": range bound "nope": expected a UUID key, got the string "nope"',
    );
    expect(invalid(() => parseRangeBounds('t', 'text', ['a\u0000', 'b']))).toBe(
      'table "t": range bound "a\\u0000": text keys cannot contain NUL characters',
    );
  });
});

describe('shardTableDdl', () => {
  it('quotes schema and table', () => {
    expect(shardTableDdl('sc_s12', 'orders', COLUMNS)).toBe(`create table if not exists "sc_s12"."orders" (${COLUMNS})`);
  });
});
