/**
 * The words of `sql` outside string literals, comments and dollar-quoted bodies: bare words
 * lowercased, quoted identifiers as written (`quoted`). Enough to find table names and keywords.
 */
export function* sqlWords(sql: string): Generator<{ word: string; quoted: boolean }> {
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i]!;
    if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === "'") {
      // '' inside a literal is an escaped quote: the scan just continues past it.
      i++;
      while (i < n && !(sql[i] === "'" && sql[i + 1] !== "'")) i += sql[i] === "'" ? 2 : 1;
      i++;
    } else if (c === '"') {
      let name = '';
      i++;
      while (i < n) {
        if (sql[i] === '"') {
          if (sql[i + 1] === '"') {
            name += '"';
            i += 2;
            continue;
          }
          break;
        }
        name += sql[i++];
      }
      i++;
      yield { word: name, quoted: true };
    } else if (c === '$' && /^\$[A-Za-z_][A-Za-z0-9_]*\$|^\$\$/.test(sql.slice(i, i + 64))) {
      const tag = /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 64))![0];
      const end = sql.indexOf(tag, i + tag.length);
      i = end < 0 ? n : end + tag.length;
    } else if (/[A-Za-z_]/.test(c)) {
      const start = i;
      while (i < n && /[A-Za-z0-9_$]/.test(sql[i]!)) i++;
      yield { word: sql.slice(start, i).toLowerCase(), quoted: false };
    } else {
      i++;
    }
  }
}

const READ_STATEMENTS = new Set(['select', 'with', 'values', 'table']);
/** Words that make a statement change something (or lock rows) when they appear anywhere in it. */
const CHANGING_WORDS = new Set([
  'insert', 'update', 'delete', 'merge', 'into', 'truncate', 'copy', 'call', 'do', 'create', 'drop', 'alter', 'grant', 'revoke',
  'nextval', 'setval', 'lock', 'vacuum', 'analyze', 'cluster', 'reindex', 'refresh', 'comment', 'notify', 'prepare', 'execute',
]);

/**
 * Whether `sql` plainly only reads: a SELECT, WITH, VALUES or TABLE statement with no word that
 * writes anywhere in it. Conservative: a function with side effects called from a SELECT is not seen.
 */
export function isReadOnlyStatement(sql: string): boolean {
  let first = true;
  for (const { word, quoted } of sqlWords(sql)) {
    if (quoted) continue;
    if (first && !READ_STATEMENTS.has(word)) return false;
    first = false;
    if (CHANGING_WORDS.has(word)) return false;
  }
  return !first;
}
