import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { localUrl, parseConfig } from '../../src/config.js';
import { appPasswordFile, embeddedPasswordFile, ensureAppPassword, ensureEmbeddedPassword, readEmbeddedPassword } from '../../src/fleet/embedded-password.js';

const base = mkdtempSync(path.join(tmpdir(), 'shardcast-pw-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const newDir = () => path.join(base, `data-${n++}`);
const mode = (file: string) => statSync(file).mode & 0o777;

describe('the embedded PostgreSQL password', () => {
  it('is random at the first start, kept with mode 0600, and the same at the next', () => {
    const dir = newDir();
    expect(readEmbeddedPassword(dir)).toBeUndefined();
    const first = ensureEmbeddedPassword(dir, false);
    expect(first).toMatchObject({ created: true, legacy: false });
    expect(first.password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(first.password).not.toBe('shardcast');
    expect(mode(embeddedPasswordFile(dir))).toBe(0o600);
    expect(readFileSync(embeddedPasswordFile(dir), 'utf8')).toBe(`${first.password}\n`);
    expect(ensureEmbeddedPassword(dir, true)).toEqual({ password: first.password, created: false, legacy: false });
    expect(ensureEmbeddedPassword(newDir(), false).password, 'two data directories, two passwords').not.toBe(first.password);
  });

  it('makes a kept file that others could read private again', () => {
    const dir = newDir();
    ensureEmbeddedPassword(dir, false);
    chmodSync(embeddedPasswordFile(dir), 0o644);
    expect(readEmbeddedPassword(dir)).toBeDefined();
    expect(mode(embeddedPasswordFile(dir))).toBe(0o600);
  });

  it('keeps the old default for servers initialised before it existed, and says so', () => {
    expect(ensureEmbeddedPassword(newDir(), true)).toEqual({ password: 'shardcast', created: true, legacy: true });
  });

  it('is what localUrl uses unless postgres.password is set; without either it says where the password comes from', () => {
    const dir = newDir();
    const cfg = parseConfig({ dataDir: dir });
    expect(() => localUrl(cfg, 5440, 'shardcast')).toThrow(
      `config: postgres.password: not set, and there is no ${embeddedPasswordFile(dir)}: \`shardcast up\` generates it at its first start`,
    );
    const { password } = ensureEmbeddedPassword(dir, false);
    expect(localUrl(cfg, 5440, 'shardcast')).toBe(`postgres://postgres:${password}@127.0.0.1:5440/shardcast`);
    expect(localUrl(parseConfig({ dataDir: dir, postgres: { password: 'p@ss' } }), 5440, 'db')).toBe('postgres://postgres:p%40ss@127.0.0.1:5440/db');
    writeFileSync(embeddedPasswordFile(dir), '\n', { mode: 0o600 });
    expect(readEmbeddedPassword(dir)).toBeUndefined();
  });
});

describe('the application role password', () => {
  it('is random at the first use, kept with mode 0600 beside the servers\' one, and the same at the next', () => {
    const dir = newDir();
    const first = ensureAppPassword(dir);
    expect(first.created).toBe(true);
    expect(first.password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(mode(appPasswordFile(dir))).toBe(0o600);
    expect(ensureAppPassword(dir)).toEqual({ password: first.password, created: false });
    expect(ensureEmbeddedPassword(dir, false).password, 'not the servers\' password').not.toBe(first.password);
  });
});
