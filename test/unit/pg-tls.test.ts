import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { appCatalogUrl, scramVerifier } from '../../src/catalog/app-role.js';
import { explainTlsError, libpqConninfo, pgConnection, pgTlsFromEnv, PgTlsError } from '../../src/catalog/pg-tls.js';
import { ConfigError } from '../../src/errors.js';
import { loadConfig, parseConfig, pgTlsOf } from '../../src/config.js';
import { withCredentials } from '../../src/router/shard-map.js';

const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-pgtls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const ca = path.join(dir, 'ca.pem');
writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n');
const DSN = 'postgres://u:p@db.example:5432/shardcast';

describe('pgConnection: the ssl option node-postgres gets', () => {
  it('verify-full: the CA, the host name checked, the URL without ssl parameters', () => {
    const c = pgConnection(DSN, { sslmode: 'verify-full', sslrootcert: ca });
    expect(c.connectionString).toBe(DSN);
    expect(c.ssl).toMatchObject({ ca: expect.stringContaining('TEST'), rejectUnauthorized: true, servername: 'db.example' });
    expect((c.ssl as { checkServerIdentity?: unknown }).checkServerIdentity).toBeUndefined();
    expect(c.Client).toBeDefined();
  });

  it('verify-ca: the chain only; require: encryption only, or the chain when a CA is given (as libpq)', () => {
    const vca = pgConnection(DSN, { sslmode: 'verify-ca', sslrootcert: ca }).ssl as { checkServerIdentity: () => unknown; rejectUnauthorized: boolean };
    expect(vca.rejectUnauthorized).toBe(true);
    expect(vca.checkServerIdentity()).toBeUndefined();
    expect(pgConnection(DSN, { sslmode: 'require' }).ssl).toEqual({ rejectUnauthorized: false });
    expect(pgConnection(DSN, { sslmode: 'require', sslrootcert: ca }).ssl).toMatchObject({ rejectUnauthorized: true });
    expect(pgConnection(DSN, { sslmode: 'disable' }).ssl).toBe(false);
    expect(pgConnection(DSN, {}).ssl).toBeUndefined();
  });

  it("a DSN's own sslmode wins (with the default CA when it names none), and its ssl parameters leave the URL", () => {
    const c = pgConnection(`${DSN}?sslmode=disable&application_name=x`, { sslmode: 'verify-full', sslrootcert: ca });
    expect(c.ssl).toBe(false);
    expect(c.connectionString).toBe(`${DSN}?application_name=x`);
    const own = pgConnection(`${DSN}?sslmode=verify-ca`, { sslmode: 'verify-full', sslrootcert: ca });
    expect(own.ssl).toMatchObject({ ca: expect.stringContaining('TEST'), rejectUnauthorized: true });
    expect(() => pgConnection(`${DSN}?sslmode=bogus`, {})).toThrow('the DSN of db.example:5432: sslmode=bogus is not one of disable, prefer, require, verify-ca, verify-full');
  });

  it('an IP address gets no SNI name; a missing CA file is one line naming it and the host', () => {
    expect(pgConnection('postgres://u@10.0.0.1/x', { sslmode: 'verify-full', sslrootcert: ca }).ssl).not.toHaveProperty('servername');
    expect(() => pgConnection(DSN, { sslmode: 'verify-full', sslrootcert: '/nonexistent/ca.pem' })).toThrow(
      'TLS to the PostgreSQL server at db.example:5432: cannot read the CA file (sslrootcert) /nonexistent/ca.pem: ENOENT',
    );
  });
});

describe('libpqConninfo: the subscription connection', () => {
  it('adds sslmode and the CA as the nodes see it, unless the DSN has its own sslmode', () => {
    expect(libpqConninfo(DSN, { sslmode: 'verify-full', sslrootcert: ca })).toBe(`${DSN}?sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`);
    expect(libpqConninfo(DSN, { sslmode: 'verify-full', sslrootcert: ca, nodeSslrootcert: '/etc/pg/ca.pem' })).toContain('sslrootcert=%2Fetc%2Fpg%2Fca.pem');
    expect(libpqConninfo(`${DSN}?sslmode=require`, { sslmode: 'verify-full', sslrootcert: ca })).toBe(`${DSN}?sslmode=require`);
    expect(libpqConninfo(DSN, {})).toBe(DSN);
  });
});

describe('TLS errors', () => {
  it('a certificate error names TLS, the host and the settings; others pass through', () => {
    const err = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    const explained = explainTlsError(err, 'db.example:5432', { sslmode: 'verify-full', sslrootcert: ca }) as Error;
    expect(explained).toBeInstanceOf(PgTlsError);
    expect(explained.message).toBe(`TLS certificate verification of the PostgreSQL server at db.example:5432 failed (sslmode=verify-full, CA file ${ca}): self-signed certificate in certificate chain`);
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(explainTlsError(refused, 'db.example:5432', {})).toBe(refused);
  });
});

describe('configuration', () => {
  it('postgres.sslmode and friends, from the file or SHARDCAST_POSTGRES_SSL*', () => {
    const cfg = loadConfig({ cwd: dir, env: { SHARDCAST_POSTGRES_SSLMODE: 'verify-full', SHARDCAST_POSTGRES_SSLROOTCERT: ca } });
    expect(pgTlsOf(cfg)).toEqual({ sslmode: 'verify-full', sslrootcert: ca });
    expect(pgTlsFromEnv({ SHARDCAST_POSTGRES_SSLMODE: 'verify-ca', SHARDCAST_POSTGRES_NODE_SSLROOTCERT: '/x' })).toEqual({ sslmode: 'verify-ca', nodeSslrootcert: '/x' });
    expect(() => pgTlsFromEnv({ SHARDCAST_POSTGRES_SSLMODE: 'on' })).toThrow(ConfigError);
    expect(() => parseConfig({ postgres: { sslmode: 'on' } })).toThrow(/postgres\.sslmode/);
    expect(() => parseConfig({ postgres: { sslcert: '/c.pem' } })).toThrow('config: postgres.sslkey: the client certificate (sslcert) and its key (sslkey) go together');
  });

  it('app.user defaults to shardcast_app, provisioned unless turned off', () => {
    expect(parseConfig({}).app).toEqual({ provision: true, user: 'shardcast_app' });
    expect(loadConfig({ cwd: dir, env: { SHARDCAST_APP_PROVISION: 'false', SHARDCAST_APP_USER: 'web' } }).app).toEqual({ provision: false, user: 'web' });
  });
});

describe('application role helpers', () => {
  it("SCRAM-SHA-256 verifier in PostgreSQL's format, salted anew each time (that the server accepts it: test/integration/app-role.test.ts)", () => {
    const salt = Buffer.alloc(16, 7);
    const verifier = scramVerifier('pencil', salt, 4096);
    expect(verifier).toMatch(/^SCRAM-SHA-256\$4096:BwcHBwcHBwcHBwcHBwcHBw==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
    expect(scramVerifier('pencil', salt, 4096)).toBe(verifier);
    expect(scramVerifier('pencil')).not.toBe(scramVerifier('pencil'));
    expect(verifier).not.toContain('pencil');
  });

  it('router URLs: the application role written in, password sources dropped', () => {
    expect(appCatalogUrl('postgres://admin:secret@h:5440/shardcast?passfile=/x&application_name=a', { user: 'shardcast_app', password: 'pw' })).toBe(
      'postgres://shardcast_app:pw@h:5440/shardcast?application_name=a',
    );
    expect(withCredentials('postgres://h:5441/shardcast?sslmode=verify-full', { user: 'app', password: 'p@ss' })).toBe('postgres://app:p%40ss@h:5441/shardcast?sslmode=verify-full');
  });
});
