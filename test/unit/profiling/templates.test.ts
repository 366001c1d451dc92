import { beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { FEATURE_DIMENSIONS, featureTokens, featureVector, loadQueryParser, templateOf, updatesColumn } from '../../../src/profiling/templates.js';

beforeAll(loadQueryParser);

describe('query templates (libpg-query)', () => {
  it('strips constants: statements differing only in constants or IN-list length share a fingerprint and a text', () => {
    const a = templateOf("select * from orders where tenant_id = 5 and status in ('a', 'b')");
    const b = templateOf("SELECT *  FROM orders WHERE tenant_id = 77 AND status IN ('c', 'd', 'e')");
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(a.text).toBe('select * from orders where tenant_id = $1 and status in ($2, $3)');
    expect(a.shape).toBe(templateOf("select * from orders where tenant_id = 6 and status in ('x', 'y')").shape);
    expect(templateOf('select * from orders where tenant_id > 5').fingerprint).not.toBe(a.fingerprint);
    // The fingerprint makes = $1, IN (…) and = ANY(…) one; the shape, which routing reads, does not.
    const eq = templateOf('select * from t where k = 1');
    const list = templateOf('select * from t where k in (1, 2)');
    expect(list.fingerprint).toBe(eq.fingerprint);
    expect(list.shape).not.toBe(eq.shape);
  });

  it('reads tables, predicates with their operator class, joins through aliases and the constants touched', () => {
    const { features } = templateOf(
      "select * from orders o join customers c on o.customer_id = c.id where o.tenant_id = 5 and o.created_at >= '2024-01-01' and o.status in ('a','b') and c.region = any($1)",
    );
    expect(features.kind).toBe('select');
    expect(features.tables).toEqual(['customers', 'orders']);
    expect(features.predicates.map((p) => [p.table, p.column, p.op, p.values, p.conjunctive])).toEqual([
      ['orders', 'tenant_id', 'equality', ['5'], true],
      ['orders', 'created_at', 'range', ['2024-01-01'], true],
      ['orders', 'status', 'in', ['a', 'b'], true],
      ['customers', 'region', 'in', [], true],
    ]);
    expect(features.joins).toEqual([{ left: { table: 'orders', column: 'customer_id' }, right: { table: 'customers', column: 'id' }, conjunctive: true }]);
  });

  it('BETWEEN and constants on the left are ranges and equalities; a zero constant is "0"; OR makes predicates non-conjunctive', () => {
    const f = templateOf('delete from events where 0 = tenant_id and at between 10 and 20 or kind = $1').features;
    expect(f.kind).toBe('delete');
    expect(f.predicates.map((p) => [p.column, p.op, p.values, p.conjunctive])).toEqual([
      ['tenant_id', 'equality', ['0'], false],
      ['at', 'range', ['10', '20'], false],
      ['kind', 'equality', [], false],
    ]);
  });

  it('a sub-select in an expression does not restrict the statement\'s rows; one in FROM does', () => {
    const f = templateOf('select * from t where a = 1 or id in (select id from t where tenant_id = 5)').features;
    expect(f.predicates.map((p) => [p.column, p.conjunctive])).toEqual([
      ['a', false],
      ['tenant_id', false],
    ]);
    const g = templateOf('select * from (select * from t where tenant_id = 5) x').features;
    expect(g.predicates.map((p) => [p.column, p.conjunctive])).toEqual([['tenant_id', true]]);
  });

  it('JOIN … USING is a join condition; an unqualified column of several tables is attributed with columnsOf', () => {
    const sql = 'select * from orders join lines using (order_id) where sku = $1';
    const f = templateOf(sql).features;
    expect(f.joins).toEqual([{ left: { table: 'orders', column: 'order_id' }, right: { table: 'lines', column: 'order_id' }, conjunctive: true }]);
    expect(f.predicates[0]).toMatchObject({ table: null, column: 'sku' });
    const g = templateOf(sql, { columnsOf: (t) => (t === 'lines' ? ['order_id', 'sku'] : ['order_id']) }).features;
    expect(g.predicates[0]).toMatchObject({ table: 'lines', column: 'sku' });
  });

  it('INSERT: the columns and the constants of each VALUES row; UPDATE: the columns set', () => {
    const ins = templateOf("insert into orders (id, tenant_id, note) values (1, 7, 'x'), (2, $1, 'y')").features;
    expect(ins.kind).toBe('insert');
    expect(ins.insertedRows).toBe(2);
    expect(ins.inserted).toEqual([
      { table: 'orders', column: 'id', values: ['1', '2'], increasing: false },
      { table: 'orders', column: 'tenant_id', values: ['7'], increasing: false },
      { table: 'orders', column: 'note', values: ['x', 'y'], increasing: false },
    ]);
    const clock = templateOf("insert into events (id, at, day, v) values (nextval('s'), now(), current_date::date, $1)").features;
    expect(clock.inserted.map((c) => [c.column, c.increasing])).toEqual([['id', true], ['at', true], ['day', true], ['v', false]]);
    const upd = templateOf('update orders set status = $1, tenant_id = 3 where id = $2').features;
    expect(updatesColumn(upd, 'orders', 'tenant_id')).toBe(true);
    expect(updatesColumn(upd, 'orders', 'id')).toBe(false);
    expect(updatesColumn(ins, 'orders', 'tenant_id')).toBe(false);
    expect(upd.predicates).toMatchObject([{ column: 'id', op: 'equality', conjunctive: true }]);
  });

  it('feature vectors: fixed size, equal for one template whatever its constants, different for different shapes', () => {
    const a = featureVector(templateOf('select * from t where a = 1').features);
    const b = featureVector(templateOf('select * from t where a = 99').features);
    const c = featureVector(templateOf('select * from t where a > 1').features);
    expect(a).toHaveLength(FEATURE_DIMENSIONS);
    expect([...a]).toEqual([...b]);
    expect([...a]).not.toEqual([...c]);
    expect(featureTokens(templateOf('select * from t where a > 1').features)).toContain('pred:t.a:range');
    expect(featureVector(templateOf('select 1').features, 16)).toHaveLength(16);
  });

  it('refuses what does not parse and several statements, with a one-line error', () => {
    expect(() => templateOf('select from where')).toThrow(InvalidInputError);
    expect(() => templateOf('select 1; select 2')).toThrow(/expected one SQL statement, got 2/);
  });
});
