import { describe, it, expect } from 'vitest';
import { InvalidInputError } from '../../src/errors.js';
import { quoteIdent, quoteLiteral, shardSchemaName, singleStatement, validateIdentifier } from '../../src/sql/ident.js';

function rejection(name: unknown, kind = 'table'): InvalidInputError {
  try {
    validateIdentifier(kind, name);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).code).toBe('INVALID_INPUT');
    return err as InvalidInputError;
  }
  throw new Error(`expected ${JSON.stringify(name)} to be rejected`);
}

describe('validateIdentifier', () => {
  it('accepts lower-case ASCII identifiers and returns them unchanged', () => {
    for (const name of ['orders', 'a', 'order_items', 't1', '_private', 'x_2_y', 'a'.repeat(63), 'pg', 'sc', 'pgx_table', 'scx']) {
      expect(validateIdentifier('table', name)).toBe(name);
    }
  });

  it('rejects quotes, semicolons, spaces and other punctuation', () => {
    for (const name of ['a"b', "a'b", 'orders;drop table x', 'my table', ' orders', 'orders ', 'a-b', 'a.b', 'a$b', 'tab\tle', 'a\nb', 'a\u0000b']) {
      const err = rejection(name);
      expect(err.message).toBe(
        `table name ${JSON.stringify(name)} is not allowed: use lower-case ASCII letters, digits and underscores, starting with a letter or underscore`,
      );
    }
  });

  it('rejects non-ASCII letters', () => {
    for (const name of ['tablé', '表', 'ordersʼ', 'ｏrders', 'straße']) {
      expect(rejection(name).message).toMatch(/is not allowed: use lower-case ASCII/);
    }
  });

  it('rejects upper case and a leading digit', () => {
    expect(rejection('Orders').message).toContain('"Orders" is not allowed');
    expect(rejection('ORDERS').message).toContain('is not allowed');
    expect(rejection('1orders').message).toContain('"1orders" is not allowed');
    expect(rejection('9').message).toContain('is not allowed');
  });

  it('rejects names over 63 bytes', () => {
    const long = 'a'.repeat(64);
    expect(rejection(long).message).toBe(`table name "${long}" is longer than 63 bytes`);
  });

  it('rejects the reserved prefixes pg_ and sc_', () => {
    expect(rejection('pg_class').message).toBe('table name "pg_class" is not allowed: the prefixes pg_ and sc_ are reserved');
    expect(rejection('sc_s1').message).toBe('table name "sc_s1" is not allowed: the prefixes pg_ and sc_ are reserved');
    expect(rejection('pg_').message).toContain('reserved');
  });

  it('rejects empty and non-string names, naming the kind', () => {
    expect(rejection('', 'shard key column').message).toBe('shard key column name is required');
    for (const value of [undefined, null, 42, {}, ['orders'], Symbol('x')]) {
      expect(rejection(value, 'node').message).toBe('node name is required');
    }
  });

  it('puts the kind in every message', () => {
    expect(rejection('Bad', 'colocation table').message.startsWith('colocation table name "Bad"')).toBe(true);
  });
});

describe('quoteIdent', () => {
  it('wraps in double quotes and doubles embedded ones', () => {
    expect(quoteIdent('orders')).toBe('"orders"');
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(quoteIdent('""')).toBe('""""""');
    expect(quoteIdent("it's")).toBe('"it\'s"');
    expect(quoteIdent('Mixed Case')).toBe('"Mixed Case"');
  });

  it('rejects NUL', () => {
    expect(() => quoteIdent('a\u0000b')).toThrow(InvalidInputError);
    expect(() => quoteIdent('a\u0000b')).toThrow('identifier contains a NUL character');
  });
});

describe('quoteLiteral', () => {
  it('wraps in single quotes and doubles embedded ones', () => {
    expect(quoteLiteral('abc')).toBe("'abc'");
    expect(quoteLiteral("it's")).toBe("'it''s'");
    expect(quoteLiteral("''")).toBe("''''''");
    expect(quoteLiteral('')).toBe("''");
    expect(quoteLiteral('a"b')).toBe(`'a"b'`);
    expect(quoteLiteral("x'); drop table t; --")).toBe("'x''); drop table t; --'");
  });

  it('rejects NUL', () => {
    expect(() => quoteLiteral('\u0000')).toThrow(InvalidInputError);
    expect(() => quoteLiteral('ab\u0000')).toThrow('literal contains a NUL character');
  });
});

describe('shardSchemaName', () => {
  it('is sc_s<id> for numbers and bigints', () => {
    expect(shardSchemaName(1)).toBe('sc_s1');
    expect(shardSchemaName(4096)).toBe('sc_s4096');
    expect(shardSchemaName(12345678901234567890n)).toBe('sc_s12345678901234567890');
  });

  it('uses the reserved sc_ prefix, so no user table can collide with it', () => {
    expect(() => validateIdentifier('table', shardSchemaName(7))).toThrow(/reserved/);
  });
});

describe('singleStatement', () => {
  it('asks for the extended protocol', () => {
    expect(singleStatement('select 1')).toEqual({ text: 'select 1', queryMode: 'extended' });
  });
});
