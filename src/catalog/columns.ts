import { loadModule, parseSync } from 'libpg-query';
import { InvalidInputError } from '../errors.js';
import { shardTableDdl } from './tables.js';

/**
 * A table's column definitions (`--columns`, TableSpec.columns) are text that every node runs inside
 * `create table … ( … )`. They are parsed here with PostgreSQL's own parser (libpg-query), exactly
 * as the nodes will run them, and only column definitions and table constraints are accepted:
 *
 * - refused clauses: INHERITS, LIKE, PARTITION BY, WITH (…) storage options, TABLESPACE, USING
 *   (access method), ON COMMIT, OF type; foreign keys (REFERENCES: the referenced name would resolve
 *   outside the shard's schema); EXCLUDE constraints; a second statement.
 * - defaults, CHECK and generated-column expressions: constants, the column's own and other columns
 *   (CHECK, GENERATED), operators, CASE, COALESCE/NULLIF/GREATEST/LEAST, IS [NOT] NULL, casts to
 *   types other than the reg* types (which look names up), and calls of the functions in
 *   ALLOWED_FUNCTIONS (built-ins that read no table: e.g. now(), gen_random_uuid(), lower()).
 *   CURRENT_TIMESTAMP, CURRENT_DATE, LOCALTIMESTAMP and friends are allowed; CURRENT_USER and the
 *   like are not. Subqueries, parameters and other functions (nextval: use identity or serial
 *   columns, which make their sequence in the shard's schema) are refused.
 *
 * The error names the clause: `table "t": --columns: INHERITS is not allowed (…)`.
 */

/** Built-in functions a default, CHECK or generated column may call: none reads a table or looks a name up. */
export const ALLOWED_FUNCTIONS = new Set([
  // time
  'now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp', 'date_trunc', 'date_part', 'extract', 'make_interval', 'make_date', 'timezone', 'to_timestamp', 'age',
  // identity
  'gen_random_uuid', 'uuidv4', 'uuidv7', 'random',
  // text
  'lower', 'upper', 'length', 'char_length', 'character_length', 'octet_length', 'btrim', 'ltrim', 'rtrim', 'trim', 'substr', 'substring', 'left', 'right', 'md5', 'concat', 'concat_ws', 'replace', 'starts_with', 'position', 'strpos', 'lpad', 'rpad', 'regexp_like', 'regexp_replace',
  // numbers
  'abs', 'round', 'floor', 'ceil', 'ceiling', 'trunc', 'mod', 'power', 'sqrt', 'sign', 'div', 'greatest', 'least',
  // arrays and json
  'array_length', 'cardinality', 'jsonb_typeof', 'json_typeof', 'jsonb_build_object', 'jsonb_build_array', 'to_jsonb', 'jsonb_array_length',
]);

/** SQL value functions without arguments that are times (CURRENT_USER and the like are not allowed). */
const TIME_VALUE_FUNCTIONS = new Set([
  'SVFOP_CURRENT_DATE', 'SVFOP_CURRENT_TIME', 'SVFOP_CURRENT_TIME_N', 'SVFOP_CURRENT_TIMESTAMP', 'SVFOP_CURRENT_TIMESTAMP_N',
  'SVFOP_LOCALTIME', 'SVFOP_LOCALTIME_N', 'SVFOP_LOCALTIMESTAMP', 'SVFOP_LOCALTIMESTAMP_N',
]);

/** Casts to these look a name up in the database at run time. */
const NAME_LOOKUP_TYPES = new Set(['regclass', 'regproc', 'regprocedure', 'regoper', 'regoperator', 'regtype', 'regnamespace', 'regrole', 'regconfig', 'regdictionary', 'regcollation']);

const CLAUSES: Record<string, string> = {
  inhRelations: 'INHERITS',
  partspec: 'PARTITION BY',
  partbound: 'PARTITION OF',
  ofTypename: 'OF type',
  options: 'WITH (storage options)',
  tablespacename: 'TABLESPACE',
  accessMethod: 'USING (table access method)',
  constraints: 'a constraint outside the column list',
};

type Node = Record<string, unknown>;

const END_MARK = 'sc_columns_end';

let loaded: Promise<void> | undefined;

/** Checks a table's column definitions (see the module's comment); throws InvalidInputError naming the clause. */
export async function checkColumnDefinitions(table: string, columns: string): Promise<{ columns: string[] }> {
  loaded ??= loadModule();
  await loaded;
  const refuse = (why: string): never => {
    throw new InvalidInputError(`table "${table}": --columns: ${why}`);
  };
  let stmts: Array<{ stmt?: Node }>;
  try {
    // The very text the nodes run (schema aside), and a clause after it that must survive: a comment
    // running to the end of the text would swallow what other statements put after the columns.
    stmts = (parseSync(`${shardTableDdl('s', table, columns)} tablespace ${END_MARK}`) as { stmts?: Array<{ stmt?: Node }> }).stmts ?? [];
  } catch (err) {
    return refuse(`invalid column definitions: ${(err as Error).message}`);
  }
  if (stmts.length !== 1) refuse('invalid column definitions: one list of column definitions, not several statements');
  const create = stmts[0]!.stmt?.CreateStmt as Node | undefined;
  if (!create) return refuse('not a list of column definitions');
  if (create.tablespacename !== END_MARK) refuse('a comment running to the end of the text is not allowed');
  delete create.tablespacename;
  for (const [key, clause] of Object.entries(CLAUSES)) {
    const v = create[key];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0)) refuse(`${clause} is not allowed (only column definitions and table constraints)`);
  }
  if (create.oncommit !== undefined && create.oncommit !== 'ONCOMMIT_NOOP') refuse('ON COMMIT is not allowed (only column definitions and table constraints)');
  const relation = create.relation as { relpersistence?: string } | undefined;
  if (relation?.relpersistence && relation.relpersistence !== 'p') refuse('TEMPORARY/UNLOGGED is not allowed');
  const names: string[] = [];
  for (const element of (create.tableElts as Node[] | undefined) ?? []) {
    const [kind, body] = Object.entries(element)[0] as [string, Node];
    if (kind === 'ColumnDef') {
      const name = String(body.colname);
      names.push(name);
      checkColumn(name, body, refuse);
    } else if (kind === 'Constraint') {
      checkConstraint(body, 'a table constraint', refuse);
    } else if (kind === 'TableLikeClause') {
      refuse('LIKE is not allowed (only column definitions and table constraints)');
    } else {
      refuse(`${kind} is not allowed (only column definitions and table constraints)`);
    }
  }
  if (names.length === 0) refuse('no column is defined');
  return { columns: names };
}

function checkColumn(name: string, column: Node, refuse: (why: string) => never): void {
  const type = column.typeName as Node | undefined;
  if (type?.pct_type) refuse(`column ${name}: %TYPE is not allowed`);
  if (type?.setof) refuse(`column ${name}: SETOF is not allowed`);
  if (column.raw_default !== undefined || column.cooked_default !== undefined) refuse(`column ${name}: a default outside DEFAULT is not allowed`);
  for (const c of (column.constraints as Node[] | undefined) ?? []) checkConstraint((c as { Constraint: Node }).Constraint, `column ${name}`, refuse);
}

function checkConstraint(c: Node, where: string, refuse: (why: string) => never): void {
  const type = String(c.contype);
  const clause = type.replace(/^CONSTR_/, '').replace(/_/g, ' ');
  switch (type) {
    case 'CONSTR_NULL':
    case 'CONSTR_NOTNULL':
    case 'CONSTR_IDENTITY':
    case 'CONSTR_ATTR_DEFERRABLE':
    case 'CONSTR_ATTR_NOT_DEFERRABLE':
    case 'CONSTR_ATTR_DEFERRED':
    case 'CONSTR_ATTR_IMMEDIATE':
      return;
    case 'CONSTR_PRIMARY':
    case 'CONSTR_UNIQUE':
      if (c.indexspace) refuse(`${where}: USING INDEX TABLESPACE is not allowed`);
      if (Array.isArray(c.options) && c.options.length) refuse(`${where}: WITH (index storage options) is not allowed`);
      if (c.indexname) refuse(`${where}: USING INDEX is not allowed`);
      return;
    case 'CONSTR_DEFAULT':
      return checkExpression(c.raw_expr as Node, `${where}: DEFAULT`, refuse);
    case 'CONSTR_CHECK':
      return checkExpression(c.raw_expr as Node, `${where}: CHECK`, refuse);
    case 'CONSTR_GENERATED':
      return checkExpression(c.raw_expr as Node, `${where}: GENERATED`, refuse);
    case 'CONSTR_FOREIGN':
      return refuse(`${where}: REFERENCES (a foreign key) is not allowed: the referenced table's name would not resolve to the shard's own schema`);
    case 'CONSTR_EXCLUSION':
      return refuse(`${where}: EXCLUDE is not allowed`);
    default:
      return refuse(`${where}: ${clause} is not allowed`);
  }
}

/** Walks an expression of the raw parse tree: only the node kinds and functions listed are allowed. */
function checkExpression(node: Node | undefined, where: string, refuse: (why: string) => never): void {
  if (node === undefined || node === null) return;
  const [kind, body] = Object.entries(node)[0] as [string, Node];
  const children = (...keys: string[]) => {
    for (const key of keys) {
      const v = body[key];
      for (const child of Array.isArray(v) ? v : v === undefined ? [] : [v]) checkExpression(child as Node, where, refuse);
    }
  };
  switch (kind) {
    case 'A_Const':
    case 'ColumnRef':
    case 'String':
    case 'Integer':
    case 'Float':
    case 'Boolean':
      return;
    case 'TypeCast': {
      const names = ((body.typeName as Node).names as Array<{ String: { sval: string } }>).map((n) => n.String.sval);
      if (NAME_LOOKUP_TYPES.has(names.at(-1)!)) refuse(`${where}: a cast to ${names.at(-1)} is not allowed (it looks a name up)`);
      return children('arg');
    }
    case 'A_Expr': {
      const op = ((body.name as Array<{ String?: { sval: string } }> | undefined) ?? []).map((n) => n.String?.sval ?? '');
      if (op.length > 1 && op[0] !== 'pg_catalog') refuse(`${where}: operator ${op.join('.')} is not allowed`);
      return children('lexpr', 'rexpr');
    }
    case 'List':
      return children('items');
    case 'BoolExpr':
    case 'CoalesceExpr':
    case 'MinMaxExpr':
      return children('args');
    case 'NullTest':
    case 'BooleanTest':
    case 'CollateClause':
      return children('arg');
    case 'CaseExpr':
      return children('arg', 'args', 'defresult');
    case 'CaseWhen':
      return children('expr', 'result');
    case 'A_ArrayExpr':
      return children('elements');
    case 'SQLValueFunction':
      if (!TIME_VALUE_FUNCTIONS.has(String(body.op))) refuse(`${where}: ${String(body.op).replace(/^SVFOP_/, '')} is not allowed`);
      return;
    case 'FuncCall': {
      const names = (body.funcname as Array<{ String: { sval: string } }>).map((n) => n.String.sval);
      const name = names.at(-1)!;
      if ((names.length > 1 && names[0] !== 'pg_catalog') || !ALLOWED_FUNCTIONS.has(name)) {
        refuse(`${where}: function ${names.join('.')}() is not allowed (allowed: ${[...ALLOWED_FUNCTIONS].slice(0, 6).join(', ')}, … see the documentation)`);
      }
      if (body.over || body.agg_filter || body.agg_order || body.agg_star) refuse(`${where}: ${name}() as an aggregate or window function is not allowed`);
      return children('args');
    }
    case 'SubLink':
      return refuse(`${where}: a subquery is not allowed`);
    default:
      return refuse(`${where}: ${kind} is not allowed`);
  }
}
