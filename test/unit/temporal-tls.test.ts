import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { temporalSecurityOptions } from '../../client/connection.js';
import { loadConfig, parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

// Certificates are made here, at test time, by openssl: none is committed.
const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-tls-'));
const file = (name: string) => path.join(dir, name);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A certificate signed by the test CA, with `extensions` (subjectAltName, extendedKeyUsage). */
function issue(name: string, subject: string, extensions: string): void {
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-subj', subject, '-out', `${name}.csr`);
  writeFileSync(file(`${name}.ext`), extensions);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
}

beforeAll(() => {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-subj', '/CN=shardcast test CA', '-days', '1', '-out', 'ca.crt');
  issue('server', '/CN=temporal.test', 'subjectAltName=DNS:temporal.test\nextendedKeyUsage=serverAuth\n');
  issue('client', '/CN=shardcast-worker', 'extendedKeyUsage=clientAuth\n');
  writeFileSync(file('api-key'), 'test-api-key-123\n');
  writeFileSync(file('not-pem'), 'hello');
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const address = '127.0.0.1:7233';
const mtls = () => ({ caFile: file('ca.crt'), certFile: file('client.crt'), keyFile: file('client.key'), serverName: 'temporal.test' });

describe('Temporal TLS and API key options', () => {
  it('gives the dev server (no temporal.address) and a plain address neither', () => {
    expect(temporalSecurityOptions(parseConfig({ temporal: { tls: mtls(), apiKey: 'k' } }))).toEqual({});
    expect(temporalSecurityOptions(parseConfig({ temporal: { address } }))).toEqual({});
  });

  it('reads the CA, client certificate and key, and the server name', () => {
    const options = temporalSecurityOptions(parseConfig({ temporal: { address, tls: mtls() } }));
    expect(options.apiKey).toBeUndefined();
    expect(Buffer.from(options.tls!.serverRootCACertificate!).equals(readFileSync(file('ca.crt')))).toBe(true);
    expect(Buffer.from(options.tls!.clientCertPair!.crt).equals(readFileSync(file('client.crt')))).toBe(true);
    expect(Buffer.from(options.tls!.clientCertPair!.key).equals(readFileSync(file('client.key')))).toBe(true);
    expect(options.tls!.serverNameOverride).toBe('temporal.test');
    expect(temporalSecurityOptions(parseConfig({ temporal: { address, tls: { enabled: true } } }))).toEqual({ tls: {} });
  });

  it('turns TLS on with an API key (Temporal Cloud), from the config, a file or the environment', () => {
    expect(temporalSecurityOptions(parseConfig({ temporal: { address, apiKey: 'k1' } }))).toEqual({ tls: {}, apiKey: 'k1' });
    expect(temporalSecurityOptions(parseConfig({ temporal: { address, apiKeyFile: file('api-key') } }))).toEqual({ tls: {}, apiKey: 'test-api-key-123' });
    const env = {
      SHARDCAST_TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233',
      SHARDCAST_TEMPORAL_API_KEY_FILE: file('api-key'),
      SHARDCAST_TEMPORAL_TLS_ENABLED: 'true',
      SHARDCAST_TEMPORAL_TLS_CA_FILE: file('ca.crt'),
      SHARDCAST_TEMPORAL_TLS_SERVER_NAME: 'temporal.test',
    };
    const cfg = loadConfig({ cwd: dir, env });
    expect(cfg.temporal.tls).toEqual({ enabled: true, caFile: file('ca.crt'), serverName: 'temporal.test' });
    expect(temporalSecurityOptions(cfg).apiKey).toBe('test-api-key-123');
    expect(loadConfig({ cwd: dir, env: { SHARDCAST_TEMPORAL_TLS_ENABLED: '0' } }).temporal.tls.enabled).toBe(false);
    expect(() => loadConfig({ cwd: dir, env: { SHARDCAST_TEMPORAL_TLS_ENABLED: 'maybe' } })).toThrow('config: temporal.tls.enabled: expected a boolean, got a string');
  });

  it('says which key names an unreadable, empty or non-PEM file, and which setting is missing', () => {
    const at = (temporal: object) => expect(() => temporalSecurityOptions(parseConfig({ temporal: { address, ...temporal } })));
    at({ tls: { ...mtls(), caFile: file('missing.crt') } }).toThrow(ConfigError);
    at({ tls: { ...mtls(), caFile: file('missing.crt') } }).toThrow(`config: temporal.tls.caFile: cannot read ${file('missing.crt')}: ENOENT`);
    at({ tls: { ...mtls(), keyFile: dir } }).toThrow(`config: temporal.tls.keyFile: cannot read ${dir}: EISDIR`);
    at({ tls: { ...mtls(), certFile: file('not-pem') } }).toThrow(`config: temporal.tls.certFile: ${file('not-pem')} is not a PEM file with a certificate (-----BEGIN CERTIFICATE-----)`);
    at({ tls: { ...mtls(), keyFile: file('client.crt') } }).toThrow(/temporal\.tls\.keyFile: .* is not a PEM file with a private key/);
    writeFileSync(file('empty-key'), '\n');
    at({ apiKeyFile: file('empty-key') }).toThrow(`config: temporal.apiKeyFile: ${file('empty-key')} is empty`);
    expect(() => parseConfig({ temporal: { tls: { certFile: file('client.crt') } } })).toThrow(
      'config: temporal.tls.keyFile: the client certificate (certFile) and its key (keyFile) go together',
    );
    expect(() => parseConfig({ temporal: { apiKey: 'a', apiKeyFile: file('api-key') } })).toThrow(
      'config: temporal.apiKeyFile: give the API key once: apiKey or apiKeyFile, not both',
    );
  });
});

describe('the options on the wire', () => {
  let server: http2.Http2SecureServer;
  let port: number;
  const seen: { servername?: string; clientCN?: string }[] = [];
  const authorizations: (string | undefined)[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();

  beforeAll(async () => {
    server = http2.createSecureServer({
      key: readFileSync(file('server.key')),
      cert: readFileSync(file('server.crt')),
      ca: readFileSync(file('ca.crt')),
      requestCert: true,
      rejectUnauthorized: true,
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      seen.push({ servername: (socket as TLSSocket & { servername?: string }).servername || undefined, clientCN: String(socket.getPeerCertificate().subject?.CN ?? '') });
    });
    server.on('session', (session) => {
      sessions.add(session);
      session.on('close', () => sessions.delete(session));
    });
    server.on('stream', (stream, headers) => {
      authorizations.push(headers.authorization as string | undefined);
      // Not a Temporal server: every call is refused as unavailable.
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'test server' }, { endStream: true });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('client and worker connections verify the server by the CA and name, present the client certificate and send the API key', async () => {
    const options = temporalSecurityOptions(parseConfig({ temporal: { address: `127.0.0.1:${port}`, tls: mtls(), apiKey: 'test-api-key-123' } }));
    seen.length = 0;
    await Connection.connect({ address: `127.0.0.1:${port}`, connectTimeout: 3000, ...options }).then((c) => c.close(), () => undefined);
    expect(seen.length, 'the client connection completed no mTLS handshake').toBeGreaterThan(0);
    expect(seen[0]).toEqual({ servername: 'temporal.test', clientCN: 'shardcast-worker' });
    expect(authorizations[0]).toBe('Bearer test-api-key-123');

    seen.length = 0;
    await NativeConnection.connect({ address: `127.0.0.1:${port}`, ...options }).then((c) => c.close(), () => undefined);
    expect(seen.length, 'the worker connection completed no mTLS handshake').toBeGreaterThan(0);
    expect(seen[0]).toEqual({ servername: 'temporal.test', clientCN: 'shardcast-worker' });
    expect(authorizations.at(-1)).toBe('Bearer test-api-key-123');
  }, 30_000);

  it('a wrong CA fails the handshake', async () => {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-subj', '/CN=other CA', '-days', '1', '-out', 'other.crt');
    const options = temporalSecurityOptions(parseConfig({ temporal: { address: `127.0.0.1:${port}`, tls: { ...mtls(), caFile: file('other.crt') } } }));
    seen.length = 0;
    await expect(Connection.connect({ address: `127.0.0.1:${port}`, connectTimeout: 3000, ...options })).rejects.toThrow();
    expect(seen).toEqual([]);
  }, 30_000);
});
