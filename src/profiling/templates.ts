/**
 * Query templates and their features. A statement is parsed with PostgreSQL's own parser
 * (libpg-query): its template is libpg_query's normalized text (constants replaced by $n) and its
 * fingerprint (the same for every constant and every IN-list length), and its features are read off
 * the parse tree — never matched with regular expressions:
 *
 * - the statement kind (select, insert, update, delete) and the tables it reads or writes;
 * - predicate columns with their operator class: equality (`=`, `= $1`), IN (`in (…)`, `= any(…)`)
 *   and range (`<`, `<=`, `>`, `>=`, BETWEEN), each marked `conjunctive` when only ANDs lead to it
 *   from the WHERE (or JOIN … ON) root, so that it restricts every row the statement touches;
 * - join conditions: column = column across two tables (ON, WHERE or USING);
 * - the constants a predicate or an INSERT's VALUES give a column (shard-key values touched);
 * - the columns an UPDATE sets.
 *
 * Columns are attributed to tables through the statement's aliases; an unqualified column in a
 * statement of several tables has `table: null` unless `columnsOf` says which table has it.
 * The features are tokenized and feature-hashed (signed, into a fixed number of floats) into the
 * vector a model takes as input.
 */
import { fingerprintSync, loadModule, normalizeSync, parseSync } from 'libpg-query';
import { hash32 } from '../backup/stats.js';
import { InvalidInputError } from '../errors.js';

export type StatementKind = 'select' | 'insert' | 'update' | 'delete' | 'other';
export type PredicateOp = 'equality' | 'in' | 'range';

export interface ColumnAt {
  /** The table's name (not its alias); null when an unqualified column cannot be attributed. */
  table: string | null;
  column: string;
}

export interface Predicate extends ColumnAt {
  op: PredicateOp;
  /** Only ANDs between the WHERE (or ON) root and the predicate: it restricts every row touched. */
  conjunctive: boolean;
  /** The constants compared with (text); empty for parameters and expressions. */
  values: string[];
  /** IN: how many items the list has (null for `= any($1)`: unknown). */
  items: number | null;
}

export interface JoinCondition {
  left: ColumnAt;
  right: ColumnAt;
  conjunctive: boolean;
}

export interface QueryFeatures {
  kind: StatementKind;
  /** Tables read or written, sorted, each once. */
  tables: string[];
  predicates: Predicate[];
  joins: JoinCondition[];
  /**
   * INSERT: the columns given and, per column, the constants of its VALUES rows (parameters omitted),
   * and whether a row's value comes from the clock or a sequence (now(), CURRENT_TIMESTAMP, nextval()):
   * an ever-increasing key.
   */
  inserted: Array<{ table: string; column: string; values: string[]; increasing: boolean }>;
  /** INSERT: rows in its VALUES lists (0 for INSERT … SELECT). */
  insertedRows: number;
  /** UPDATE: the columns it sets. */
  setColumns: Array<{ table: string; column: string }>;
}

export interface QueryTemplate {
  /** libpg_query's fingerprint: the same for statements that differ only in constants (and for `= $1`, `IN (…)` and `= ANY(…)` alike). */
  fingerprint: string;
  /** The fingerprint and what it leaves out that routing depends on: the operator classes and IN-list lengths. */
  shape: string;
  /** The statement with its constants replaced by $n. */
  text: string;
  features: QueryFeatures;
}

export const FEATURE_DIMENSIONS = 256;

type Node = Record<string, unknown>;

let loaded: Promise<void> | undefined;

/** Loads the parser (WebAssembly) once; every other function here needs it loaded. */
export async function loadQueryParser(): Promise<void> {
  await (loaded ??= loadModule());
}

const RANGE_OPS = new Set(['<', '<=', '>', '>=']);

function str(n: unknown): string | undefined {
  return (n as { String?: { sval?: string } } | undefined)?.String?.sval;
}

/** The kind and body of a one-key node (`{SelectStmt: {...}}`), or null. */
function unwrap(n: unknown): [string, Node] | null {
  if (!n || typeof n !== 'object' || Array.isArray(n)) return null;
  const keys = Object.keys(n);
  if (keys.length !== 1 || !/^[A-Z]/.test(keys[0]!)) return null;
  const body = (n as Node)[keys[0]!];
  return body && typeof body === 'object' ? [keys[0]!, body as Node] : null;
}

/** A constant's text, through casts; null for anything else (parameters, expressions). */
function constantOf(n: unknown): string | null {
  const u = unwrap(n);
  if (!u) return null;
  const [kind, body] = u;
  if (kind === 'TypeCast') return constantOf(body.arg);
  if (kind !== 'A_Const' || body.isnull) return null;
  const v = (body.ival ?? body.fval ?? body.sval ?? body.boolval ?? body.bsval) as Record<string, unknown> | undefined;
  if (!v) return null;
  const x = v.ival ?? v.fval ?? v.sval ?? v.boolval ?? v.bsval;
  // libpg_query leaves a zero, false or empty string's value out: `ival: {}`.
  return x === undefined ? (body.ival ? '0' : body.boolval ? 'false' : '') : String(x);
}

const INCREASING_FUNCTIONS = new Set(['now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp', 'nextval', 'uuidv7']);
const INCREASING_VALUE_FUNCTIONS = new Set(['SVFOP_CURRENT_DATE', 'SVFOP_CURRENT_TIMESTAMP', 'SVFOP_CURRENT_TIMESTAMP_N', 'SVFOP_LOCALTIMESTAMP', 'SVFOP_LOCALTIMESTAMP_N']);

/** A value from the clock or a sequence, through casts. */
function increasingValue(n: unknown): boolean {
  const u = unwrap(n);
  if (!u) return false;
  if (u[0] === 'TypeCast') return increasingValue(u[1].arg);
  if (u[0] === 'SQLValueFunction') return INCREASING_VALUE_FUNCTIONS.has(String(u[1].op));
  if (u[0] === 'FuncCall') return INCREASING_FUNCTIONS.has(str(((u[1].funcname as unknown[] | undefined) ?? []).at(-1)) ?? '');
  return false;
}

/** A column reference through casts, as its qualifier (or null) and name; null when not a plain column. */
function columnRefOf(n: unknown): { qualifier: string | null; column: string } | null {
  const u = unwrap(n);
  if (!u) return null;
  if (u[0] === 'TypeCast') return columnRefOf(u[1].arg);
  if (u[0] !== 'ColumnRef') return null;
  const fields = (u[1].fields as unknown[] | undefined) ?? [];
  const column = str(fields.at(-1));
  if (column === undefined) return null;
  return { qualifier: fields.length >= 2 ? (str(fields.at(-2)) ?? null) : null, column };
}

/** The statement's relations and aliases: each alias (or bare name) to the table's name. */
function scopeOf(stmt: unknown): { names: Map<string, string>; tables: Set<string> } {
  const names = new Map<string, string>();
  const tables = new Set<string>();
  const walk = (n: unknown): void => {
    if (Array.isArray(n)) return n.forEach(walk);
    if (!n || typeof n !== 'object') return;
    const r = n as { relname?: unknown; alias?: { aliasname?: string } };
    if (typeof r.relname === 'string') {
      tables.add(r.relname);
      names.set(r.alias?.aliasname ?? r.relname, r.relname);
      if (!r.alias) names.set(r.relname, r.relname);
    }
    for (const v of Object.values(n as Node)) walk(v);
  };
  walk(stmt);
  return { names, tables };
}

function kindOf(stmtKind: string): StatementKind {
  switch (stmtKind) {
    case 'SelectStmt':
      return 'select';
    case 'InsertStmt':
      return 'insert';
    case 'UpdateStmt':
      return 'update';
    case 'DeleteStmt':
      return 'delete';
    default:
      return 'other';
  }
}

class FeatureReader {
  readonly predicates: Predicate[] = [];
  readonly joins: JoinCondition[] = [];

  constructor(
    private readonly scope: { names: Map<string, string>; tables: Set<string> },
    private readonly columnsOf: ((table: string) => readonly string[] | undefined) | undefined,
  ) {}

  resolve(ref: { qualifier: string | null; column: string }): ColumnAt {
    if (ref.qualifier !== null) return { table: this.scope.names.get(ref.qualifier) ?? ref.qualifier, column: ref.column };
    if (this.scope.tables.size === 1) return { table: [...this.scope.tables][0]!, column: ref.column };
    const having = this.columnsOf ? [...this.scope.tables].filter((t) => this.columnsOf!(t)?.includes(ref.column)) : [];
    return { table: having.length === 1 ? having[0]! : null, column: ref.column };
  }

  /** A boolean condition: AND chains stay conjunctive, OR and NOT do not. */
  condition(n: unknown, conjunctive: boolean): void {
    const u = unwrap(n);
    if (!u) return;
    const [kind, body] = u;
    if (kind === 'BoolExpr') {
      const and = body.boolop === 'AND_EXPR';
      for (const arg of (body.args as unknown[] | undefined) ?? []) this.condition(arg, conjunctive && and);
      return;
    }
    if (kind === 'A_Expr') {
      this.comparison(body, conjunctive);
      return;
    }
    // Anything else (sub-selects, function calls): its own clauses are found by the statement walk.
  }

  private comparison(e: Node, conjunctive: boolean): void {
    const op = ((e.name as unknown[] | undefined) ?? []).map(str).join('');
    const exprKind = (e.kind as string | undefined) ?? 'AEXPR_OP';
    const left = columnRefOf(e.lexpr);
    const right = columnRefOf(e.rexpr);
    if (exprKind === 'AEXPR_OP' && op === '=' && left && right) {
      const l = this.resolve(left);
      const r = this.resolve(right);
      if (l.table !== r.table || left.qualifier !== right.qualifier) this.joins.push({ left: l, right: r, conjunctive });
      return;
    }
    const add = (ref: { qualifier: string | null; column: string }, p: Omit<Predicate, 'table' | 'column' | 'conjunctive'>) =>
      this.predicates.push({ ...this.resolve(ref), conjunctive, ...p });
    if (exprKind === 'AEXPR_OP' && op === '=' && (left || right)) {
      const c = constantOf(left ? e.rexpr : e.lexpr);
      add((left ?? right)!, { op: 'equality', values: c === null ? [] : [c], items: null });
    } else if (exprKind === 'AEXPR_IN' && op === '=' && left) {
      const items = (unwrap(e.rexpr)?.[1].items as unknown[] | undefined) ?? ((e.rexpr as unknown[] | undefined) ?? []);
      const values = items.map(constantOf).filter((v): v is string => v !== null);
      add(left, { op: items.length === 1 ? 'equality' : 'in', values, items: items.length });
    } else if (exprKind === 'AEXPR_OP_ANY' && op === '=' && left) {
      add(left, { op: 'in', values: [], items: null });
    } else if (exprKind === 'AEXPR_OP' && RANGE_OPS.has(op) && (left || right)) {
      const c = constantOf(left ? e.rexpr : e.lexpr);
      add((left ?? right)!, { op: 'range', values: c === null ? [] : [c], items: null });
    } else if ((exprKind === 'AEXPR_BETWEEN' || exprKind === 'AEXPR_BETWEEN_SYM') && left) {
      const bounds = (unwrap(e.rexpr)?.[1].items as unknown[] | undefined) ?? ((e.rexpr as unknown[] | undefined) ?? []);
      add(left, { op: 'range', values: bounds.map(constantOf).filter((v): v is string => v !== null), items: null });
    }
  }
}

/**
 * Every WHERE, JOIN … ON and USING under the statement, sub-selects included. A sub-select in an
 * expression (`id in (select …)`, EXISTS) does not restrict the statement's own rows: its predicates
 * are not conjunctive; one in FROM does.
 */
function readConditions(stmt: unknown, reader: FeatureReader): void {
  const walk = (n: unknown, restricts: boolean): void => {
    if (Array.isArray(n)) return n.forEach((x) => walk(x, restricts));
    if (!n || typeof n !== 'object') return;
    const u = unwrap(n);
    if (u && u[0] === 'JoinExpr') {
      const j = u[1];
      if (j.quals) reader.condition(j.quals, restricts && (j.jointype === 'JOIN_INNER' || j.jointype === undefined));
      const using = ((j.usingClause as unknown[] | undefined) ?? []).map(str).filter((s): s is string => s !== undefined);
      const side = (x: unknown) => {
        const r = unwrap(x);
        return r && r[0] === 'RangeVar' ? String(r[1].relname) : null;
      };
      const l = side(j.larg);
      const r = side(j.rarg);
      if (l && r) for (const c of using) reader.joins.push({ left: { table: l, column: c }, right: { table: r, column: c }, conjunctive: restricts });
    }
    if (!u && (n as Node).whereClause !== undefined) reader.condition((n as Node).whereClause, restricts);
    const inner = restricts && !(u && u[0] === 'SubLink');
    for (const v of Object.values(n as Node)) walk(v, inner);
  };
  walk(stmt, true);
}

/** The features of one parsed statement. */
function featuresOf(stmt: Node, columnsOf?: (table: string) => readonly string[] | undefined): QueryFeatures {
  const [stmtKind, body] = unwrap(stmt) ?? ['', {}];
  const kind = kindOf(stmtKind);
  const scope = scopeOf(stmt);
  const reader = new FeatureReader(scope, columnsOf);
  readConditions(stmt, reader);
  const inserted: QueryFeatures['inserted'] = [];
  let insertedRows = 0;
  const setColumns: QueryFeatures['setColumns'] = [];
  const target = (body.relation as { relname?: string } | undefined)?.relname;
  if (kind === 'insert' && target) {
    const cols = ((body.cols as unknown[] | undefined) ?? []).map((c) => String(unwrap(c)?.[1].name ?? ''));
    const rows = ((unwrap(body.selectStmt)?.[1].valuesLists as unknown[] | undefined) ?? []).map((l) => (unwrap(l)?.[1].items as unknown[] | undefined) ?? []);
    insertedRows = rows.length;
    cols.forEach((column, i) => {
      const values = rows.map((r) => constantOf(r[i])).filter((v): v is string => v !== null);
      inserted.push({ table: target, column, values, increasing: rows.some((r) => increasingValue(r[i])) });
    });
  }
  if (kind === 'update' && target) {
    for (const t of (body.targetList as unknown[] | undefined) ?? []) {
      const name = unwrap(t)?.[1].name;
      if (typeof name === 'string') setColumns.push({ table: target, column: name });
    }
  }
  return { kind, tables: [...scope.tables].sort(), predicates: reader.predicates, joins: reader.joins, inserted, insertedRows, setColumns };
}

/**
 * The template of one SQL statement. Throws InvalidInputError when it does not parse or holds more than
 * one statement. The parser must be loaded (loadQueryParser).
 */
export function templateOf(sql: string, options: { columnsOf?: (table: string) => readonly string[] | undefined } = {}): QueryTemplate {
  let stmts: Array<{ stmt: Node }>;
  try {
    stmts = (parseSync(sql) as { stmts?: Array<{ stmt: Node }> }).stmts ?? [];
  } catch (err) {
    throw new InvalidInputError(`not a valid SQL statement: ${(err as Error).message}`, { cause: err });
  }
  if (stmts.length !== 1) throw new InvalidInputError(`expected one SQL statement, got ${stmts.length}`);
  const features = featuresOf(stmts[0]!.stmt, options.columnsOf);
  const fingerprint = fingerprintSync(sql);
  const lists = features.predicates.map((p) => (p.op === 'in' ? `${p.items ?? '*'}` : p.op[0])).join('');
  return { fingerprint, shape: `${fingerprint}:${lists}:${features.insertedRows}`, text: normalizeSync(sql), features };
}

/** Whether the statement is an UPDATE that sets `column` of `table`. */
export function updatesColumn(features: QueryFeatures, table: string, column: string): boolean {
  return features.kind === 'update' && features.setColumns.some((c) => c.table === table && c.column === column);
}

/** The features as tokens (constants left out: a template's tokens are the same for every call). */
export function featureTokens(f: QueryFeatures): string[] {
  const col = (c: ColumnAt) => `${c.table ?? '?'}.${c.column}`;
  const tokens = [`kind:${f.kind}`, `tables:${Math.min(f.tables.length, 4)}`];
  for (const t of f.tables) tokens.push(`table:${t}`);
  for (const p of f.predicates) tokens.push(`pred:${col(p)}:${p.op}`, `op:${p.op}`, p.conjunctive ? 'and' : 'or');
  for (const j of f.joins) tokens.push(`join:${[col(j.left), col(j.right)].sort().join('=')}`, 'join');
  for (const c of f.setColumns) tokens.push(`set:${c.table}.${c.column}`);
  for (const c of f.inserted) tokens.push(`insert:${c.table}.${c.column}`);
  if (f.insertedRows > 1) tokens.push('insert:multirow');
  return tokens;
}

/**
 * The features hashed into `dimensions` floats (the hashing trick): each token adds ±1 at the
 * position its hash gives, the sign from another hash so that collisions cancel out on average.
 */
export function featureVector(f: QueryFeatures, dimensions = FEATURE_DIMENSIONS): Float32Array {
  const v = new Float32Array(dimensions);
  for (const token of featureTokens(f)) {
    const h = hash32(token);
    v[h % dimensions]! += hash32(token, 0x9747b28c) & 1 ? 1 : -1;
  }
  return v;
}
