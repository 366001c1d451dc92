import type pg from 'pg';
import type { Queryable } from '../../src/catalog/nodes.js';
import { CardinalityModel, cardinalityStatistics, postgresEstimate, qError } from '../../src/profiling/cardinality.js';
import { loadQueryParser, templateOf } from '../../src/profiling/templates.js';
import { quoteIdent } from '../../src/sql/ident.js';
export { percentile } from '../../src/movement/governor.js';
import { rng } from './random.js';

/**
 * A generated table with known skewed and correlated data, and a workload of templates over it with
 * varied constants, for the cardinality model against PostgreSQL's own estimate:
 *
 * - tenant_id: zipf-like (P(k) ∝ 1/k over 1 … 999): a few heavy tenants, a long tail;
 * - created_at: uniform over 2026; status: four values, 70 / 20 / 9 / 1 %;
 * - city (200, uniform) and country = city / 10: a functional dependency, where the planner's
 *   independence assumption underestimates `country = X and city = Y` twentyfold.
 */
export const CARDINALITY_ROWS = 100_000;

/** `db` is one session (not a pool): the seed must hold for the insert. */
export async function createCardinalityTable(db: Pick<pg.ClientBase, 'query'>, schema: string, rows = CARDINALITY_ROWS): Promise<void> {
  const t = `${quoteIdent(schema)}.events`;
  await db.query(`create schema if not exists ${quoteIdent(schema)}`);
  await db.query(`drop table if exists ${t}`);
  await db.query(`create table ${t} (id bigint primary key, tenant_id int not null, created_at timestamptz not null, status text not null, city int not null, country int not null)`);
  // The seed set in the insert's session: the same rows every run (ANALYZE's sample stays random).
  await db.query(`select setseed(0.42)`);
  await db.query(
    `insert into ${t}
     select g, floor(power(1000, z))::int, timestamptz '2026-01-01 00:00:00+00' + r * interval '365 days',
            case when s < 0.7 then 'active' when s < 0.9 then 'pending' when s < 0.99 then 'closed' else 'failed' end, c, c / 10
       from (select g, random() as z, random() as r, random() as s, floor(random() * 200)::int as c from generate_series(1, $1::int) g) x`,
    [rows],
  );
  await db.query(`create index on ${t} (tenant_id)`);
  await db.query(`create index on ${t} (created_at)`);
  await db.query(`create index on ${t} (city)`);
  await db.query(`analyze ${t}`);
}

export interface GeneratedStatement {
  template: string;
  sql: string;
}

const YEAR_START = Date.parse('2026-01-01T00:00:00Z');
const HOUR = 3_600_000;
const stamp = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '+00');

/** `perTemplate` statements of each template, interleaved, with constants from a seeded generator. */
export function cardinalityWorkload(schema: string, perTemplate = 60, seed = 7): GeneratedStatement[] {
  const r = rng(seed);
  const t = `${quoteIdent(schema)}.events`;
  const tenant = () => Math.floor(Math.pow(1000, r()));
  const tenants = (n: number) => [...new Set(Array.from({ length: n }, tenant))];
  const statuses = ['active', 'pending', 'closed', 'failed'];
  const status = () => statuses[Math.floor(r() * statuses.length)]!;
  const city = () => Math.floor(r() * 200);
  const window = (): [string, string] => {
    const width = Math.exp(Math.log(HOUR) + r() * (Math.log(60 * 24 * HOUR) - Math.log(HOUR)));
    const start = YEAR_START + r() * (365 * 24 * HOUR - width);
    return [stamp(start), stamp(start + width)];
  };
  const templates: Record<string, () => string> = {
    'tenant equality': () => `select id from ${t} where tenant_id = ${tenant()}`,
    'time window': () => {
      const [a, b] = window();
      return `select id from ${t} where created_at >= '${a}' and created_at < '${b}'`;
    },
    'status equality': () => `select id from ${t} where status = '${status()}'`,
    'tenant and status': () => `select id from ${t} where tenant_id = ${tenant()} and status = '${status()}'`,
    'country and city (correlated)': () => {
      const c = city();
      return `select id from ${t} where country = ${Math.floor(c / 10)} and city = ${c}`;
    },
    'tenant IN list': () => `select id from ${t} where tenant_id in (${tenants(2 + Math.floor(r() * 7)).join(', ')})`,
    'since a time, one status': () => `select id from ${t} where created_at > '${window()[0]}' and status = '${status()}'`,
    'city in a time window': () => {
      const [a, b] = window();
      return `select id from ${t} where city = ${city()} and created_at between '${a}' and '${b}'`;
    },
  };
  const out: GeneratedStatement[] = [];
  for (let i = 0; i < perTemplate; i++) for (const [template, make] of Object.entries(templates)) out.push({ template, sql: make() });
  return out;
}

export interface CardinalityResult {
  trained: number;
  heldOut: number;
  /** Per held-out statement (every third of each template), the model trained on the other statements of every template. */
  rows: Array<{ template: string; actual: number; model: number; postgres: number; modelQ: number; postgresQ: number }>;
  /** The same held-out statements, each predicted by a model that never saw its template (trained on every other template's statements). */
  unseenTemplate: Array<{ template: string; actual: number; model: number; modelQ: number }>;
}

/**
 * Runs every statement (its actual rows: count(*) of the same query) and EXPLAINs it; trains the
 * model on two thirds of each template's statements and evaluates it and PostgreSQL's estimate on the
 * held-out third; then, per template, a model trained on the other templates only, on the same third.
 */
export async function runCardinalityExperiment(db: Queryable, schema: string, statements: readonly GeneratedStatement[]): Promise<CardinalityResult> {
  await loadQueryParser();
  const statistics = { events: await cardinalityStatistics(db, schema, 'events') };
  const perTemplate = new Map<string, number>();
  const runs: Array<{ template: string; tpl: ReturnType<typeof templateOf>; actual: number; postgres: number; heldOut: boolean }> = [];
  for (const s of statements) {
    const { rows } = await db.query<{ n: number }>(`select count(*)::float8 as n from (${s.sql}) q`);
    const i = perTemplate.get(s.template) ?? 0;
    perTemplate.set(s.template, i + 1);
    runs.push({ template: s.template, tpl: templateOf(s.sql), actual: rows[0]!.n, postgres: await postgresEstimate(db, s.sql), heldOut: i % 3 === 2 });
  }
  const model = new CardinalityModel(statistics);
  for (const r of runs) if (!r.heldOut) model.observe(r.tpl, r.actual);
  const heldOut = runs.filter((r) => r.heldOut);
  const rows = heldOut.map((h) => {
    const est = model.predict(h.tpl);
    return { template: h.template, actual: h.actual, model: est, postgres: h.postgres, modelQ: qError(est, h.actual), postgresQ: qError(h.postgres, h.actual) };
  });
  const unseenTemplate: CardinalityResult['unseenTemplate'] = [];
  for (const template of perTemplate.keys()) {
    const m = new CardinalityModel(statistics);
    for (const r of runs) if (r.template !== template) m.observe(r.tpl, r.actual);
    for (const h of heldOut) {
      if (h.template !== template) continue;
      const est = m.predict(h.tpl);
      unseenTemplate.push({ template, actual: h.actual, model: est, modelQ: qError(est, h.actual) });
    }
  }
  return { trained: runs.length - heldOut.length, heldOut: heldOut.length, rows, unseenTemplate };
}
