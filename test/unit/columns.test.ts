import { describe, expect, it } from 'vitest';
import { checkColumnDefinitions } from '../../src/catalog/columns.js';
import { InvalidInputError } from '../../src/errors.js';

const refused = async (columns: string): Promise<string> => {
  const err = await checkColumnDefinitions('t', columns).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, columns).toBeInstanceOf(InvalidInputError);
  return (err as Error).message;
};

describe('--columns, parsed with the PostgreSQL parser', () => {
  it('accepts column definitions and table constraints, with allowed defaults, checks and generated columns', async () => {
    const ok = [
      'id bigint primary key, name text not null',
      'order_id bigint not null, customer_id bigint not null, sku text, qty int, primary key (customer_id, order_id, sku)',
      "id uuid default gen_random_uuid(), at timestamptz not null default now(), day date default current_date, note text default 'x'::text",
      'id bigint generated always as identity, n int check (n > 0 and n < 100), doubled int generated always as (n * 2) stored',
      'id serial, total numeric(12,2) default 0 check (total >= 0), tags text[] default array[]::text[], unique (id)',
      "id int, name text collate \"C\", status text default 'new' check (status in ('new', 'done')), constraint lower_name check (name = lower(name))",
      'id int, meta jsonb default \'{}\'::jsonb check (jsonb_typeof(meta) = \'object\'), ts timestamp default localtimestamp',
      'id int, x int default coalesce(null, 1), y int default greatest(1, 2) check (y is not null), z text default case when true then \'a\' else \'b\' end',
    ];
    for (const c of ok) expect(await checkColumnDefinitions('t', c), c).toHaveProperty('columns');
    expect((await checkColumnDefinitions('t', 'a int, b text, primary key (a)')).columns).toEqual(['a', 'b']);
  });

  it('refuses other clauses, naming them', async () => {
    expect(await refused('id int) inherits (pg_class')).toBe('table "t": --columns: INHERITS is not allowed (only column definitions and table constraints)');
    expect(await refused('like orders')).toMatch(/LIKE is not allowed/);
    expect(await refused('like orders including all')).toMatch(/LIKE is not allowed/);
    expect(await refused('id int) partition by range (id')).toMatch(/PARTITION BY is not allowed/);
    expect(await refused('id int) with (fillfactor = 10')).toMatch(/WITH \(storage options\) is not allowed/);
    expect(await refused('id int) using heap2 with (fillfactor = 10')).toMatch(/is not allowed/);
    expect(await refused('id int primary key using index tablespace pg_default')).toMatch(/USING INDEX TABLESPACE is not allowed/);
    expect(await refused('id int primary key with (fillfactor = 50)')).toMatch(/WITH \(index storage options\) is not allowed/);
    expect(await refused('id int references orders (id)')).toMatch(/column id: REFERENCES \(a foreign key\) is not allowed/);
    expect(await refused('id int, foreign key (id) references orders (id)')).toMatch(/a table constraint: REFERENCES/);
    expect(await refused('id int, exclude using gist (id with =)')).toMatch(/EXCLUDE is not allowed/);
    expect(await refused('id int); drop table orders; create table x (id int')).toMatch(/several statements/);
    expect(await refused('id int) --')).toMatch(/comment running to the end/);
    expect(await refused('id int /*')).toMatch(/invalid column definitions/);
    expect(await refused('')).toMatch(/invalid column definitions|no column/);
    expect(await refused('id int, id2 int%')).toMatch(/invalid column definitions/);
  });

  it('refuses expressions calling functions outside the allow-list, subqueries and name lookups', async () => {
    expect(await refused("id bigint default nextval('orders_id_seq')")).toMatch(/^table "t": --columns: column id: DEFAULT: function nextval\(\) is not allowed/);
    expect(await refused('id int default pg_sleep(10)')).toMatch(/function pg_sleep\(\) is not allowed/);
    expect(await refused('id int default public.now()')).toMatch(/function public\.now\(\) is not allowed/);
    expect(await refused('id int check (id > (select max(id) from orders))')).toMatch(/column id: CHECK: a subquery is not allowed/);
    expect(await refused("id regclass default 'orders'::regclass")).toMatch(/a cast to regclass is not allowed/);
    expect(await refused('who text default current_user')).toMatch(/CURRENT_USER is not allowed/);
    expect(await refused('n int, m int generated always as (my_fn(n)) stored')).toMatch(/column m: GENERATED: function my_fn\(\) is not allowed/);
    expect(await refused('n int, constraint c check (count(*) > 0)')).toMatch(/count\(\) is not allowed/);
    expect(await refused('id int default $1')).toMatch(/ParamRef is not allowed|invalid column definitions/);
    expect(await refused('id int, x int operator(public.+) 1')).toMatch(/invalid column definitions|not allowed/);
  });
});
