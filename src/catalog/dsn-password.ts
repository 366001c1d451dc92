import { readFileSync, statSync } from 'node:fs';
import { InvalidInputError } from '../errors.js';

/**
 * A node DSN may leave its password out of the catalog and name where it is instead, as a query
 * parameter: `passfile=/path` (libpq's parameter and file format, `host:port:database:user:password`
 * lines with `*` wildcards, readable by its owner only) or `passwordenv=NAME` (an environment variable of
 * the worker, as PGPASSWORD is libpq's). The catalog then stores only the reference; the password is
 * read where a connection is made: the worker's own, and the conninfo of the subscriptions it creates.
 */
export const PASSWORD_SOURCE_PARAMS = ['passfile', 'passwordenv'] as const;

/** True when the DSN names a password file or variable. */
export function namesPasswordSource(dsn: string): boolean {
  const url = parse(dsn);
  return url !== undefined && PASSWORD_SOURCE_PARAMS.some((p) => url.searchParams.has(p));
}

/**
 * The DSN to connect with: the password read from the file or variable it names and written into
 * the URL, the two parameters removed. A DSN that names neither is returned as it is. Errors name
 * the DSN's host and what is wrong (never a password).
 */
export function resolveDsn(dsn: string, env: NodeJS.ProcessEnv = process.env): string {
  const url = parse(dsn);
  if (!url || !PASSWORD_SOURCE_PARAMS.some((p) => url.searchParams.has(p))) return dsn;
  const where = `the DSN of ${url.hostname}${url.port ? `:${url.port}` : ''}`;
  const passfile = url.searchParams.get('passfile');
  const variable = url.searchParams.get('passwordenv');
  if (url.password) throw new InvalidInputError(`${where} has a password and names a password ${passfile !== null ? 'file' : 'variable'}: give one`);
  if (passfile !== null && variable !== null) throw new InvalidInputError(`${where} names both passfile and passwordenv: give one`);
  let password: string;
  if (variable !== null) {
    const value = env[variable];
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable)) throw new InvalidInputError(`${where}: passwordenv ${JSON.stringify(variable)} is not a variable name`);
    if (value === undefined || value === '') throw new InvalidInputError(`${where}: the environment variable ${variable} (passwordenv) is not set`);
    password = value;
  } else {
    password = passwordFromFile(passfile!, url, where);
  }
  url.searchParams.delete('passfile');
  url.searchParams.delete('passwordenv');
  url.password = encodeURIComponent(password);
  return url.toString();
}

function parse(dsn: string): URL | undefined {
  try {
    return new URL(dsn);
  } catch {
    return undefined;
  }
}

/** libpq's password file lookup: the first line whose host, port, database and user match (`*` matches any). */
function passwordFromFile(file: string, url: URL, where: string): string {
  let text: string;
  try {
    if ((statSync(file).mode & 0o077) !== 0) {
      throw new InvalidInputError(`${where}: password file ${file} is readable by others: chmod 600 it (libpq ignores such a file too)`);
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    throw new InvalidInputError(`${where}: cannot read password file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const wanted = [url.hostname || 'localhost', url.port || '5432', decodeURIComponent(url.pathname.slice(1)) || decodeURIComponent(url.username), decodeURIComponent(url.username)];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const fields = splitPassLine(line);
    if (fields.length < 5) continue;
    if (wanted.every((value, i) => fields[i] === '*' || fields[i] === value)) return fields.slice(4).join(':');
  }
  throw new InvalidInputError(`${where}: password file ${file} has no line for ${wanted.join(':')} (host:port:database:user)`);
}

/** A pgpass line's fields: `:` separates, `\:` and `\\` escape. */
function splitPassLine(line: string): string[] {
  const fields: string[] = [];
  let field = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) field += line[++i];
    else if (c === ':' && fields.length < 4) {
      fields.push(field);
      field = '';
    } else field += c;
  }
  fields.push(field);
  return fields;
}
