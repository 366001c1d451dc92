import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { namesPasswordSource, resolveDsn } from '../../src/catalog/dsn-password.js';
import { redactDsn, validateNewNode } from '../../src/catalog/nodes.js';
import { InvalidInputError } from '../../src/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-pgpass-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function passfile(name: string, text: string, mode = 0o600): string {
  const file = path.join(dir, name);
  writeFileSync(file, text, { mode });
  return file;
}

describe('a DSN naming its password file or variable', () => {
  it('leaves a DSN that names neither as it is', () => {
    expect(resolveDsn('postgres://u:p@h:5432/db')).toBe('postgres://u:p@h:5432/db');
    expect(namesPasswordSource('postgres://u:p@h:5432/db')).toBe(false);
  });

  it('reads passwordenv from the environment', () => {
    const dsn = 'postgres://app@db.example:5433/shardcast?passwordenv=NODE1_PASSWORD&sslmode=require';
    expect(namesPasswordSource(dsn)).toBe(true);
    expect(resolveDsn(dsn, { NODE1_PASSWORD: 's3cr/t@:' })).toBe('postgres://app:s3cr%2Ft%40%3A@db.example:5433/shardcast?sslmode=require');
    expect(() => resolveDsn(dsn, {})).toThrow('the DSN of db.example:5433: the environment variable NODE1_PASSWORD (passwordenv) is not set');
    expect(() => resolveDsn('postgres://app@h/db?passwordenv=bad-name', {})).toThrow(/passwordenv "bad-name" is not a variable name/);
  });

  it('finds the first matching line of a libpq password file, with wildcards and escapes', () => {
    const file = passfile(
      'pgpass',
      ['# host:port:database:user:password', 'other:5432:*:app:nope', 'db.example:5433:shardcast:app:first\\:one', 'db.example:*:*:app:second', '*:*:*:*:fallback'].join('\n'),
    );
    const at = (where: string) => new URL(resolveDsn(`postgres://app@${where}?passfile=${file}`)).password;
    expect(decodeURIComponent(at('db.example:5433/shardcast'))).toBe('first:one');
    expect(at('db.example:6000/other')).toBe('second');
    expect(new URL(resolveDsn(`postgres://root@else/x?passfile=${file}`)).password).toBe('fallback');
    expect(resolveDsn(`postgres://app@db.example:5433/shardcast?passfile=${file}`)).not.toContain('passfile');
  });

  it('refuses, naming the problem, a file others can read, a missing file or line, and a DSN with two sources', () => {
    const open = passfile('open', '*:*:*:*:pw', 0o644);
    expect(() => resolveDsn(`postgres://app@h/db?passfile=${open}`)).toThrow(`the DSN of h: password file ${open} is readable by others: chmod 600 it`);
    expect(() => resolveDsn(`postgres://app@h/db?passfile=${dir}/missing`)).toThrow(`the DSN of h: cannot read password file ${dir}/missing: ENOENT`);
    const narrow = passfile('narrow', 'x:1:y:z:pw');
    expect(() => resolveDsn(`postgres://app@h:5440/db?passfile=${narrow}`)).toThrow(`password file ${narrow} has no line for h:5440:db:app (host:port:database:user)`);
    expect(() => resolveDsn(`postgres://app:pw@h/db?passfile=${narrow}`)).toThrow(InvalidInputError);
    expect(() => resolveDsn(`postgres://app@h/db?passfile=${narrow}&passwordenv=X`)).toThrow(/names both passfile and passwordenv/);
    expect(() => validateNewNode({ name: 'n1', dsn: 'postgres://app:pw@h/db?passwordenv=X' })).toThrow('node "n1": the dsn has a password and names a password file or variable: give one');
  });

  it('is stored and shown without a password', () => {
    const dsn = `postgres://app@h:5432/db?passfile=${dir}/pgpass`;
    expect(redactDsn(dsn)).toBe(dsn);
    expect(redactDsn(resolveDsn(dsn))).toBe('postgres://app:***@h:5432/db');
  });
});
