/**
 * The query pattern analyzer: from a `pg_stat_statements` export (CSV with a header, or JSON: rows
 * with `query` and `calls`), how the restored table is used — per column, the calls that filter it by
 * equality (`=`, `IN`), by range (`<`, `>=`, `BETWEEN`) or join on it, and the read/write mix. Each
 * query is parsed with PostgreSQL's own parser (libpg-query), never matched with regular expressions.
 */
import { loadModule, parseSync } from 'libpg-query';
import { InvalidInputError, errorMessage } from '../errors.js';

export interface ColumnUse {
  equality: number;
  range: number;
  join: number;
}

export interface QueryAnalysis {
  table: string;
  /** Calls of statements that touch the table. */
  calls: number;
  reads: number;
  writes: number;
  columns: Record<string, ColumnUse>;
  /** Queries that could not be parsed (pg_stat_statements truncates long texts): skipped, counted. */
  unparsed: number;
  templates: Array<{ query: string; calls: number }>;
}

export interface LoggedQuery {
  query: string;
  calls: number;
  /** Rows retrieved or affected over all its calls (pg_stat_statements' `rows`), when the export has them. */
  rows?: number;
}

/** RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      if (row.some((f) => f !== '')) rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  row.push(field);
  if (row.some((f) => f !== '')) rows.push(row);
  return rows;
}

/** The queries of an export; a malformed file is one error naming it and the line or entry. */
export function readQueryLog(text: string, file: string): LoggedQuery[] {
  const count = (v: unknown, where: string, what: string): number => {
    const n = typeof v === 'string' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw new InvalidInputError(`${file}: ${where}: ${what}: expected a number ≥ 0, got ${JSON.stringify(v)}`);
    return n;
  };
  const calls = (v: unknown, where: string): number => count(v, where, 'calls');
  if (/^\s*[[{]/.test(text)) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new InvalidInputError(`${file}: not valid JSON: ${errorMessage(err)}`);
    }
    if (!Array.isArray(doc)) throw new InvalidInputError(`${file}: expected a JSON array of {"query": …, "calls": …}`);
    return doc.map((e: unknown, i) => {
      const q = (e as { query?: unknown } | null)?.query;
      if (typeof q !== 'string') throw new InvalidInputError(`${file}: [${i}]: query: expected the statement's text`);
      const r = (e as { rows?: unknown }).rows;
      return { query: q, calls: calls((e as { calls?: unknown }).calls, `[${i}]`), ...(r !== undefined && r !== null ? { rows: count(r, `[${i}]`, 'rows') } : {}) };
    });
  }
  const rows = parseCsv(text);
  const header = rows[0]?.map((h) => h.trim().toLowerCase()) ?? [];
  const qi = header.indexOf('query');
  const ci = header.indexOf('calls');
  if (qi < 0 || ci < 0) throw new InvalidInputError(`${file}: a pg_stat_statements export needs a header with the columns query and calls`);
  const ri = header.indexOf('rows');
  return rows.slice(1).map((r, i) => ({
    query: r[qi] ?? '',
    calls: calls(r[ci], `line ${i + 2}`),
    ...(ri >= 0 && (r[ri] ?? '') !== '' ? { rows: count(r[ri], `line ${i + 2}`, 'rows') } : {}),
  }));
}

type Node = Record<string, unknown>;

/** Every object node under `n`, depth first, with its kind (`A_Expr`, `RangeVar`, …). */
function* nodes(n: unknown): Generator<[string, Node]> {
  if (Array.isArray(n)) {
    for (const x of n) yield* nodes(x);
    return;
  }
  if (!n || typeof n !== 'object') return;
  const entries = Object.entries(n as Node);
  if (entries.length === 1 && /^[A-Z]/.test(entries[0]![0]) && entries[0]![1] && typeof entries[0]![1] === 'object') {
    yield [entries[0]![0], entries[0]![1] as Node];
    yield* nodes(entries[0]![1]);
    return;
  }
  for (const [, v] of entries) yield* nodes(v);
}

/** Every relation reference under `n`: RangeVar nodes, and the typed `relation` fields (UPDATE, DELETE, INSERT) that hold one unwrapped. */
function* relations(n: unknown): Generator<{ relname: string; alias?: { aliasname?: string } }> {
  if (Array.isArray(n)) {
    for (const x of n) yield* relations(x);
    return;
  }
  if (!n || typeof n !== 'object') return;
  if (typeof (n as { relname?: unknown }).relname === 'string') yield n as { relname: string };
  for (const v of Object.values(n as Node)) yield* relations(v);
}

/** The column a ColumnRef names (its last field) when it is the table's: unqualified, or qualified by one of `ours` (its name or aliases). */
function columnOf(n: unknown, ours: ReadonlySet<string>): string | null {
  const fields = (n as { ColumnRef?: { fields?: unknown[] } } | undefined)?.ColumnRef?.fields;
  if (!fields) return null;
  const name = (f: unknown) => (f as { String?: { sval?: string } } | undefined)?.String?.sval;
  if (fields.length >= 2 && !ours.has(name(fields.at(-2)) ?? '')) return null;
  return name(fields.at(-1)) ?? null;
}

const RANGE_OPS = new Set(['<', '<=', '>', '>=']);

let parserLoaded: Promise<void> | undefined;

export async function analyzeQueries(queries: LoggedQuery[], table: string, columns: readonly string[]): Promise<QueryAnalysis> {
  await (parserLoaded ??= loadModule());
  const known = new Set(columns);
  const out: QueryAnalysis = { table, calls: 0, reads: 0, writes: 0, columns: {}, unparsed: 0, templates: [] };
  const use = (c: string): ColumnUse => (out.columns[c] ??= { equality: 0, range: 0, join: 0 });
  for (const { query, calls } of queries) {
    let stmts: Array<{ stmt: Node }>;
    try {
      stmts = (parseSync(query) as { stmts?: Array<{ stmt: Node }> }).stmts ?? [];
    } catch {
      out.unparsed += calls;
      continue;
    }
    for (const { stmt } of stmts) {
      const all = [...nodes(stmt)];
      const ours = new Set<string>();
      for (const r of relations(stmt)) if (r.relname === table) ours.add(r.alias?.aliasname ?? table);
      if (ours.size === 0) continue;
      const kind = Object.keys(stmt)[0];
      out.calls += calls;
      if (kind === 'SelectStmt') out.reads += calls;
      else out.writes += calls;
      out.templates.push({ query, calls });
      // Each use counted once per statement: `a >= $1 and a < $2` is one range query.
      const seen = new Set<string>();
      const count = (c: string, how: keyof ColumnUse) => {
        if (seen.has(`${c} ${how}`)) return;
        seen.add(`${c} ${how}`);
        use(c)[how] += calls;
      };
      for (const [k, n] of all) {
        if (k !== 'A_Expr') continue;
        const op = ((n.name as unknown[] | undefined) ?? []).map((x) => (x as { String?: { sval?: string } }).String?.sval).join('');
        const left = columnOf(n.lexpr, ours);
        const right = columnOf(n.rexpr, ours);
        const column = left && known.has(left) ? left : right && known.has(right) ? right : null;
        if (!column) continue;
        const exprKind = (n.kind as string | undefined) ?? 'AEXPR_OP';
        const otherSideColumn = (n.lexpr as Node | undefined)?.ColumnRef !== undefined && (n.rexpr as Node | undefined)?.ColumnRef !== undefined;
        if (otherSideColumn && op === '=') {
          // Column = column: a join key (each side that is one of the table's columns).
          for (const c of [left, right]) if (c && known.has(c)) count(c, 'join');
        } else if (exprKind === 'AEXPR_IN' || (exprKind === 'AEXPR_OP' && op === '=')) count(column, 'equality');
        else if (exprKind === 'AEXPR_BETWEEN' || exprKind === 'AEXPR_NOT_BETWEEN' || (exprKind === 'AEXPR_OP' && RANGE_OPS.has(op))) count(column, 'range');
      }
    }
  }
  out.templates.sort((a, b) => b.calls - a.calls);
  return out;
}
