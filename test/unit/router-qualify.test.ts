import { beforeAll, describe, expect, it } from 'vitest';
import { loadSqlParser, StatementQualifier, type Qualification } from '../../src/router/qualify.js';

const TABLES = new Map([
  ['orders', {}],
  ['order_items', {}],
  ['accounts', {}],
]);
const SCHEMA = 'sc_s7';

let qualifier: StatementQualifier;

beforeAll(async () => {
  await loadSqlParser();
  qualifier = new StatementQualifier();
});

function qualified(sql: string, schema = SCHEMA): string {
  const q = qualifier.qualify(sql, TABLES, schema);
  if (!q.qualified) throw new Error(`not qualified: ${q.reason}`);
  return q.text;
}

function fallback(sql: string): string {
  const q: Qualification = qualifier.qualify(sql, TABLES, SCHEMA);
  if (q.qualified) throw new Error(`qualified as ${q.text}`);
  return q.reason;
}

describe('schema-qualifying application SQL', () => {
  it('qualifies plain references and leaves the rest of the text as written', () => {
    expect(qualified('select id, total from orders where id = $1')).toBe('select id, total from "sc_s7".orders where id = $1');
    expect(qualified('SELECT * FROM Orders o WHERE o.id = $1 -- a comment\n')).toBe('SELECT * FROM "sc_s7".Orders o WHERE o.id = $1 -- a comment\n');
    expect(qualified('select 1 from only orders')).toBe('select 1 from only "sc_s7".orders');
  });

  it('qualifies quoted identifiers, and counts the parser’s byte offsets right after non-ASCII text', () => {
    expect(qualified('select "id" from "orders" where note = \'é😀\' and id in (select id from "order_items")')).toBe(
      'select "id" from "sc_s7"."orders" where note = \'é😀\' and id in (select id from "sc_s7"."order_items")',
    );
    // A quoted name with capitals is another relation: not a distributed table.
    expect(fallback('select 1 from "Orders"')).toMatch(/"Orders", which is not a distributed table/);
  });

  it('leaves names the application qualified itself alone', () => {
    expect(qualified('select 1 from orders o join other.orders x on x.id = o.id')).toBe('select 1 from "sc_s7".orders o join other.orders x on x.id = o.id');
    expect(fallback('select 1 from public.orders')).toMatch(/names no distributed table/);
  });

  it('qualifies joins of colocated tables, subqueries and lateral subqueries', () => {
    expect(qualified('select o.id, i.sku from orders o join order_items i using (id) where o.id = $1')).toBe(
      'select o.id, i.sku from "sc_s7".orders o join "sc_s7".order_items i using (id) where o.id = $1',
    );
    expect(qualified('select * from (select id from orders) s, lateral (select count(*) from order_items i where i.id = s.id) c')).toBe(
      'select * from (select id from "sc_s7".orders) s, lateral (select count(*) from "sc_s7".order_items i where i.id = s.id) c',
    );
    expect(qualified('select exists (select 1 from order_items where id = orders.id) from orders')).toBe(
      'select exists (select 1 from "sc_s7".order_items where id = orders.id) from "sc_s7".orders',
    );
  });

  it('leaves CTE names alone and qualifies the tables inside them', () => {
    expect(qualified('with recent as (select * from orders where id = $1) select * from recent join order_items i using (id)')).toBe(
      'with recent as (select * from "sc_s7".orders where id = $1) select * from recent join "sc_s7".order_items i using (id)',
    );
    expect(qualified('with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r, orders')).toBe(
      'with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) select * from r, "sc_s7".orders',
    );
    // A CTE named like a distributed table would hide it in some places and not others: left to SET.
    expect(fallback('with orders as (select 1 as id) select * from orders')).toMatch(/CTE is named "orders"/);
    // A name that is a CTE only outside its own scope is a relation there.
    expect(fallback('with a as (select * from b), b as (select 1) select * from a')).toMatch(/"b", which is not a distributed table/);
  });

  it('qualifies INSERT … ON CONFLICT, UPDATE … FROM, DELETE … USING and MERGE, keeping FOR UPDATE OF names', () => {
    expect(qualified('insert into orders (id, total) values ($1, $2) on conflict (id) do update set total = excluded.total + orders.total returning *')).toBe(
      'insert into "sc_s7".orders (id, total) values ($1, $2) on conflict (id) do update set total = excluded.total + orders.total returning *',
    );
    expect(qualified('update orders set total = s.total from (select id, sum(price) as total from order_items group by id) s where s.id = orders.id')).toBe(
      'update "sc_s7".orders set total = s.total from (select id, sum(price) as total from "sc_s7".order_items group by id) s where s.id = orders.id',
    );
    expect(qualified('delete from order_items using orders where orders.id = order_items.id')).toBe(
      'delete from "sc_s7".order_items using "sc_s7".orders where orders.id = order_items.id',
    );
    expect(qualified('merge into orders o using order_items i on i.id = o.id when matched then update set total = i.price')).toBe(
      'merge into "sc_s7".orders o using "sc_s7".order_items i on i.id = o.id when matched then update set total = i.price',
    );
    expect(qualified('select * from orders o where id = $1 for update of o')).toBe('select * from "sc_s7".orders o where id = $1 for update of o');
    // The target of a write is a table even when a CTE of that name exists: never a silent miss.
    expect(fallback('with orders as (select 1) delete from orders')).toMatch(/CTE is named "orders"/);
  });

  it('gives each schema its own text and prepared statement name', () => {
    const a = qualifier.qualify('select * from orders where id = $1', TABLES, 'sc_s1');
    const b = qualifier.qualify('select * from orders where id = $1', TABLES, 'sc_s2');
    expect(a.qualified && b.qualified).toBe(true);
    if (!a.qualified || !b.qualified) return;
    expect(a.text).not.toBe(b.text);
    expect(a.name).not.toBe(b.name);
    expect(a.name).toMatch(/^sc_q_[0-9a-f]{24}$/);
    // Cached: the same object again.
    expect(qualifier.qualify('select * from orders where id = $1', TABLES, 'sc_s1')).toBe(a);
  });

  it('falls back to SET search_path where names resolve at run time', () => {
    expect(fallback('select * from orders, pg_class')).toMatch(/"pg_class", which is not a distributed table/);
    expect(fallback('select current_schema()')).toMatch(/calls current_schema/);
    expect(fallback('select current_schema, id from orders')).toMatch(/current_schema/);
    expect(fallback('select my_total(id) from orders')).toMatch(/calls my_total/);
    expect(fallback("select nextval('orders_id_seq'), id from orders")).toMatch(/calls nextval/);
    expect(fallback("select 'orders'::regclass from orders")).toMatch(/type regclass/);
    expect(fallback('select null::orders from orders')).toMatch(/type orders/);
    expect(fallback('select 1')).toMatch(/names no distributed table/);
    expect(fallback('set search_path to x')).toMatch(/VariableSetStmt/);
    expect(fallback('do $$ begin perform 1 from orders; end $$')).toMatch(/DoStmt/);
    expect(fallback('select 1 from orders; select 2 from orders')).toMatch(/not exactly one statement/);
    expect(fallback('select * into copy_of_orders from orders')).toMatch(/SELECT INTO/);
    // Built-ins by name, in pg_catalog, and casts to built-in types stay on the fast path.
    expect(qualified("select count(*)::bigint, now(), pg_catalog.lower(note), coalesce(total, 0)::numeric(10,2), $1::text, extract(epoch from now()) from orders")).toContain(
      'from "sc_s7".orders',
    );
  });

  it('leaves what the parser rejects to the server, which reports its own error', () => {
    expect(fallback('selec nonsense')).toMatch(/parser rejects it \(syntax error at or near "selec"\)/);
    expect(fallback('')).toMatch(/parser rejects it \(Query cannot be empty\)/);
  });

  it('re-judges a statement when the map’s tables change', () => {
    const sql = 'select * from invoices where id = $1';
    expect(fallback(sql)).toMatch(/"invoices", which is not a distributed table/);
    const more = new Map([...TABLES, ['invoices', {}]]);
    const q = qualifier.qualify(sql, more, SCHEMA);
    expect(q.qualified && q.text).toBe('select * from "sc_s7".invoices where id = $1');
  });
});
