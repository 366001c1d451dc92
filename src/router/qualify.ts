import { createHash } from 'node:crypto';
import { loadModule, parseSync } from 'libpg-query';
import { quoteIdent } from '../sql/ident.js';

/**
 * Schema-qualifying application SQL for one shard, so that a statement needs no `SET search_path`
 * before it: the statement is parsed once with PostgreSQL's own parser (libpg-query), every
 * unqualified reference to a distributed table gets the shard's schema written before it, and
 * everything else in the text is left exactly as the application wrote it.
 *
 * A statement is qualified only when every name in it that PostgreSQL would look up through
 * search_path is known to resolve the same way without it. Otherwise it is left to the SET path
 * (see `Qualification.reason`): statements other than SELECT/INSERT/UPDATE/DELETE/MERGE, several
 * statements in one text, text the parser rejects (the server then reports its own error),
 * relations that are not distributed tables, functions outside a list of built-ins (a user
 * function may read tables by unqualified name at run time), casts to types outside the built-ins
 * (composite types of shard tables, regclass), `current_schema`, and a CTE named like a
 * distributed table. Operators are not looked at: an application's own operator in a shard schema
 * is not supported on the qualified path.
 */

let parserLoaded: Promise<void> | undefined;

/** Loads the parser's WebAssembly module; qualify() needs it loaded. */
export function loadSqlParser(): Promise<void> {
  parserLoaded ??= loadModule();
  return parserLoaded;
}

/** Built-in functions that resolve no relation, type or schema by name at run time. */
const SAFE_FUNCTIONS = new Set([
  // aggregates and window functions
  'count', 'sum', 'avg', 'min', 'max', 'bool_and', 'bool_or', 'every', 'array_agg', 'string_agg', 'json_agg', 'jsonb_agg',
  'json_object_agg', 'jsonb_object_agg', 'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp',
  'percentile_cont', 'percentile_disc', 'mode', 'bit_and', 'bit_or', 'row_number', 'rank', 'dense_rank', 'percent_rank',
  'cume_dist', 'ntile', 'lag', 'lead', 'first_value', 'last_value', 'nth_value',
  // time
  'now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp', 'date_trunc', 'date_part', 'extract',
  'age', 'make_date', 'make_time', 'make_timestamp', 'make_timestamptz', 'make_interval', 'to_timestamp', 'to_char',
  'to_date', 'to_number', 'date_bin', 'timezone', 'isfinite', 'justify_days', 'justify_hours', 'justify_interval',
  // text
  'lower', 'upper', 'length', 'char_length', 'character_length', 'octet_length', 'substring', 'substr', 'position',
  'strpos', 'btrim', 'ltrim', 'rtrim', 'trim', 'lpad', 'rpad', 'replace', 'concat', 'concat_ws', 'left', 'right',
  'reverse', 'repeat', 'split_part', 'initcap', 'starts_with', 'format', 'md5', 'sha256', 'encode', 'decode',
  'regexp_replace', 'regexp_match', 'regexp_matches', 'regexp_like', 'regexp_split_to_array', 'regexp_count',
  'string_to_array', 'array_to_string', 'overlay', 'translate', 'quote_literal', 'quote_nullable', 'normalize',
  // numbers
  'abs', 'ceil', 'ceiling', 'floor', 'round', 'trunc', 'mod', 'power', 'sqrt', 'exp', 'ln', 'log', 'sign', 'div',
  'greatest', 'least', 'random', 'width_bucket', 'gcd', 'lcm',
  // arrays, json, ranges
  'array_length', 'cardinality', 'array_position', 'array_positions', 'array_append', 'array_prepend', 'array_cat',
  'array_remove', 'array_replace', 'unnest', 'generate_series', 'generate_subscripts', 'array_lower', 'array_upper',
  'json_build_object', 'jsonb_build_object', 'json_build_array', 'jsonb_build_array', 'to_json', 'to_jsonb',
  'row_to_json', 'jsonb_set', 'jsonb_insert', 'jsonb_strip_nulls', 'jsonb_pretty', 'json_typeof', 'jsonb_typeof',
  'jsonb_array_length', 'json_array_length', 'jsonb_each', 'jsonb_each_text', 'json_each', 'json_each_text',
  'jsonb_array_elements', 'jsonb_array_elements_text', 'json_array_elements', 'json_array_elements_text',
  'jsonb_object_keys', 'json_object_keys', 'jsonb_path_query', 'jsonb_path_exists', 'jsonb_path_match',
  'lower_inf', 'upper_inf', 'isempty', 'range_merge',
  // identity and hashing
  'gen_random_uuid', 'uuidv4', 'uuidv7', 'hashint4extended', 'hashint8extended', 'hashtextextended', 'coalesce', 'nullif',
  'num_nonnulls', 'num_nulls', 'pg_collation_for',
]);

/** Built-in types that an unqualified name may cast to (keywords such as int or varchar come out as pg_catalog.*). */
const SAFE_TYPES = new Set([
  'text', 'json', 'jsonb', 'uuid', 'bytea', 'date', 'timestamptz', 'timetz', 'inet', 'cidr', 'macaddr', 'money',
  'int2', 'int4', 'int8', 'float4', 'float8', 'bool', 'numeric', 'varchar', 'bpchar', 'tsvector', 'tsquery', 'xml',
  'int4range', 'int8range', 'numrange', 'tsrange', 'tstzrange', 'daterange', 'oid', 'name', 'citext', 'record',
]);

const DML = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Where the shard's schema goes: before each unqualified reference to a distributed table. */
interface Analysis {
  /** Set when the statement cannot be qualified whatever the map holds. */
  fallback?: string;
  /** Unqualified relation references (not CTEs), by name, at their byte offsets, in text order. */
  relations: Array<{ name: string; offset: number }>;
  /** Every CTE name in the statement. */
  cteNames: string[];
  /** The text split at the relations' offsets: relations.length + 1 parts. */
  parts: string[];
  /** The verdict for the last map's tables (maps are immutable: a new map is a new object). */
  tables?: ReadonlyMap<string, unknown>;
  verdict?: string;
  /** Qualified text and statement name per shard schema. */
  bySchema: Map<string, QualifiedStatement>;
}

export interface QualifiedStatement {
  qualified: true;
  text: string;
  /** The prepared statement's name: differs per qualified text, so per shard schema. */
  name: string;
}

export type Qualification = QualifiedStatement | { qualified: false; reason: string };

/** Statement texts kept analysed; the cache is dropped whole when full, as the texts an application sends are few. */
const MAX_ANALYSES = 10_000;

export class StatementQualifier {
  private readonly analyses = new Map<string, Analysis>();

  /**
   * `sql` with every unqualified reference to one of `tables` qualified with `schema`, or why the
   * statement has to run under `SET search_path` instead.
   */
  qualify(sql: string, tables: ReadonlyMap<string, unknown>, schema: string): Qualification {
    let analysis = this.analyses.get(sql);
    if (!analysis) {
      if (this.analyses.size >= MAX_ANALYSES) this.analyses.clear();
      analysis = analyse(sql);
      this.analyses.set(sql, analysis);
    }
    if (analysis.tables !== tables) {
      analysis.verdict = verdict(analysis, tables);
      analysis.tables = tables;
    }
    if (analysis.verdict !== undefined) return { qualified: false, reason: analysis.verdict };
    let placed = analysis.bySchema.get(schema);
    if (!placed) {
      const text = analysis.parts.join(`${quoteIdent(schema)}.`);
      placed = { qualified: true, text, name: `sc_q_${createHash('sha256').update(`qualified\u0000${text}`).digest('hex').slice(0, 24)}` };
      analysis.bySchema.set(schema, placed);
    }
    return placed;
  }
}

function verdict(analysis: Analysis, tables: ReadonlyMap<string, unknown>): string | undefined {
  if (analysis.fallback !== undefined) return analysis.fallback;
  const hidden = analysis.cteNames.find((name) => tables.has(name));
  if (hidden !== undefined) return `a CTE is named ${JSON.stringify(hidden)}, like a distributed table`;
  const other = analysis.relations.find((r) => !tables.has(r.name));
  if (other) return `it names the relation ${JSON.stringify(other.name)}, which is not a distributed table`;
  if (analysis.relations.length === 0) return 'it names no distributed table';
  return undefined;
}

interface Walk {
  relations: Array<{ name: string; offset: number }>;
  cteNames: string[];
  fallback?: string;
}

function analyse(sql: string): Analysis {
  const result = (walk: Walk): Analysis => ({
    ...walk,
    parts: walk.fallback === undefined ? split(sql, walk.relations.map((r) => r.offset)) : [],
    bySchema: new Map(),
  });
  let stmts: Array<{ stmt?: Record<string, unknown> }>;
  try {
    stmts = (parseSync(sql) as { stmts?: Array<{ stmt?: Record<string, unknown> }> }).stmts ?? [];
  } catch (err) {
    return result({ relations: [], cteNames: [], fallback: `the parser rejects it (${(err as Error).message})` });
  }
  if (stmts.length !== 1 || !stmts[0]!.stmt) return result({ relations: [], cteNames: [], fallback: 'it is not exactly one statement' });
  const stmt = stmts[0]!.stmt;
  const kind = Object.keys(stmt)[0]!;
  if (!DML.has(kind)) return result({ relations: [], cteNames: [], fallback: `it is a ${kind}, not SELECT, INSERT, UPDATE, DELETE or MERGE` });
  if ((stmt[kind] as { intoClause?: unknown }).intoClause) return result({ relations: [], cteNames: [], fallback: 'SELECT INTO creates a table' });
  const walk: Walk = { relations: [], cteNames: [] };
  visit(stmt, new Set(), walk);
  walk.relations.sort((a, b) => a.offset - b.offset);
  return result(walk);
}

/** `sql` cut at byte offsets (the parser's locations count bytes of UTF-8). */
function split(sql: string, offsets: number[]): string[] {
  // eslint-disable-next-line no-control-regex
  if (/^[\u0000-\u007f]*$/.test(sql)) return cut(sql, offsets, (s, a, b) => s.slice(a, b));
  const bytes = Buffer.from(sql, 'utf8');
  return cut(bytes, offsets, (s, a, b) => s.subarray(a, b).toString('utf8'));
}

function cut<T extends { length: number }>(s: T, offsets: number[], slice: (s: T, a: number, b: number) => string): string[] {
  const parts: string[] = [];
  let from = 0;
  for (const at of offsets) {
    parts.push(slice(s, from, at));
    from = at;
  }
  parts.push(slice(s, from, s.length));
  return parts;
}

type JsonNode = Record<string, unknown>;

function isObject(v: unknown): v is JsonNode {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function names(list: unknown): string[] {
  return Array.isArray(list) ? list.map((n) => ((n as { String?: { sval?: string } }).String?.sval ?? '')) : [];
}

/**
 * Walks the parse tree (libpg-query's JSON: a node field holds `{ Kind: {…} }`, a typed field the
 * bare struct), with `scope` the CTE names visible at this point.
 */
function visit(node: unknown, scope: ReadonlySet<string>, walk: Walk): void {
  if (walk.fallback !== undefined) return;
  if (Array.isArray(node)) {
    for (const item of node) visit(item, scope, walk);
    return;
  }
  if (!isObject(node)) return;
  let inner = scope;
  const withClause = node.withClause as { ctes?: unknown[]; recursive?: boolean } | undefined;
  if (isObject(withClause)) {
    const ctes = (withClause.ctes ?? []).map((c) => (c as { CommonTableExpr: { ctename: string; ctequery: unknown } }).CommonTableExpr);
    walk.cteNames.push(...ctes.map((c) => c.ctename));
    const all = new Set([...scope, ...ctes.map((c) => c.ctename)]);
    // Without RECURSIVE a CTE sees only those before it; with it, all of them.
    const seen = new Set(scope);
    for (const cte of ctes) {
      visit(cte.ctequery, withClause.recursive ? all : seen, walk);
      seen.add(cte.ctename);
    }
    inner = all;
  }
  for (const [key, value] of Object.entries(node)) {
    if (walk.fallback !== undefined) return;
    switch (key) {
      case 'withClause':
        break;
      case 'RangeVar':
        relation(value as RangeVarNode, inner, walk);
        break;
      case 'relation':
        // The target of INSERT, UPDATE, DELETE or MERGE: always a table, never a CTE.
        if (isObject(value) && typeof value.relname === 'string') relation(value as unknown as RangeVarNode, new Set(), walk);
        else visit(value, inner, walk);
        break;
      case 'LockingClause':
        // FOR UPDATE OF names range-table entries (aliases), which must stay unqualified.
        break;
      case 'FuncCall': {
        const name = names((value as { funcname?: unknown }).funcname);
        if (!builtin(name, SAFE_FUNCTIONS)) {
          walk.fallback = `it calls ${name.join('.')}, which may look names up through search_path`;
          return;
        }
        visit(value, inner, walk);
        break;
      }
      case 'typeName':
      case 'TypeName': {
        const name = names((value as { names?: unknown }).names);
        const catalogType = name.length === 2 && name[0] === 'pg_catalog' && !name[1]!.startsWith('reg');
        if (!catalogType && !builtin(name, SAFE_TYPES)) {
          walk.fallback = `it names the type ${name.join('.')}, which may be looked up through search_path`;
          return;
        }
        visit(value, inner, walk);
        break;
      }
      case 'SQLValueFunction':
        if ((value as { op?: string }).op === 'SVFOP_CURRENT_SCHEMA') {
          walk.fallback = 'it reads current_schema';
          return;
        }
        break;
      default:
        if (typeof value === 'object' && value !== null) visit(value, inner, walk);
    }
  }
}

function builtin(name: string[], safe: ReadonlySet<string>): boolean {
  const bare = name.length === 1 ? name[0] : name.length === 2 && name[0] === 'pg_catalog' ? name[1] : undefined;
  return bare !== undefined && safe.has(bare);
}

interface RangeVarNode {
  relname: string;
  schemaname?: string;
  catalogname?: string;
  location?: number;
}

function relation(rv: RangeVarNode, scope: ReadonlySet<string>, walk: Walk): void {
  // Qualified by the application: left as written.
  if (rv.schemaname || rv.catalogname) return;
  if (scope.has(rv.relname)) return;
  if (typeof rv.location !== 'number' || rv.location < 0) {
    walk.fallback = `the parser gave no position for ${JSON.stringify(rv.relname)}`;
    return;
  }
  walk.relations.push({ name: rv.relname, offset: rv.location });
}
