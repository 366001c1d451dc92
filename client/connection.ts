import { readFileSync } from 'node:fs';
import { Client, Connection, type TLSConfig } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import type { Config } from '../src/config.js';
import { ConfigError, ShardcastError } from '../src/errors.js';
import { AesGcmPayloadCodec, ENCRYPTION_KEYS_ENV, loadKeyRing } from './encryption.js';

/** The payload codec of the configuration (temporal.encryption), or undefined when encryption is off. */
export function payloadCodecOf(config: Config, env: NodeJS.ProcessEnv = process.env): AesGcmPayloadCodec | undefined {
  const ring = loadKeyRing({ keyFile: config.temporal.encryption.keyFile, keysFromEnv: env[ENCRYPTION_KEYS_ENV], currentKeyId: config.temporal.encryption.keyId });
  return ring ? new AesGcmPayloadCodec(ring) : undefined;
}

/** The data converter every client and worker of this configuration uses: the same codec on both sides. */
export function dataConverterOf(config: Config, env: NodeJS.ProcessEnv = process.env): DataConverter | undefined {
  const codec = payloadCodecOf(config, env);
  return codec ? { payloadCodecs: [codec] } : undefined;
}

/** What Connection.connect and NativeConnection.connect take beside the address: TLS and the API key. */
export interface TemporalSecurityOptions {
  tls?: TLSConfig;
  apiKey?: string;
}

/**
 * TLS (server CA, client certificate and key for mTLS, server name) and the API key of an existing
 * Temporal frontend (temporal.address), read from their files now: an unreadable or non-PEM file is a
 * ConfigError naming its key. The embedded dev server (no temporal.address) speaks plain gRPC on
 * loopback, so it gets neither. An API key implies TLS (Temporal Cloud).
 */
export function temporalSecurityOptions(config: Config): TemporalSecurityOptions {
  const { address, tls, apiKey, apiKeyFile } = config.temporal;
  if (!address) return {};
  const key = apiKey ?? (apiKeyFile ? readSecretFile('temporal.apiKeyFile', apiKeyFile) : undefined);
  const wanted = tls.enabled || tls.caFile || tls.certFile || tls.serverName || key;
  if (!wanted) return {};
  const options: TLSConfig = {};
  if (tls.caFile) options.serverRootCACertificate = readPem('temporal.tls.caFile', tls.caFile, 'CERTIFICATE');
  if (tls.certFile && tls.keyFile) {
    options.clientCertPair = { crt: readPem('temporal.tls.certFile', tls.certFile, 'CERTIFICATE'), key: readPem('temporal.tls.keyFile', tls.keyFile, 'PRIVATE KEY') };
  }
  if (tls.serverName) options.serverNameOverride = tls.serverName;
  return { tls: options, ...(key ? { apiKey: key } : {}) };
}

function readFile(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(key, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** A PEM file holding at least one block of `kind` (CERTIFICATE; PRIVATE KEY also matches RSA/EC PRIVATE KEY). */
function readPem(key: string, file: string, kind: string): Buffer {
  const pem = readFile(key, file);
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(pem.toString('latin1'))) {
    throw new ConfigError(key, `${file} is not a PEM file with a ${kind.toLowerCase()} (-----BEGIN ${kind}-----)`);
  }
  return pem;
}

function readSecretFile(key: string, file: string): string {
  const value = readFile(key, file).toString('utf8').trim();
  if (value === '') throw new ConfigError(key, `${file} is empty`);
  return value;
}

/** A Temporal client as the configuration says: address, namespace, TLS and API key, payload encryption. */
export async function connectTemporalClient(config: Config, address: string, env: NodeJS.ProcessEnv = process.env): Promise<Client> {
  const dataConverter = dataConverterOf(config, env);
  const security = temporalSecurityOptions(config);
  const connection = await Connection.connect({ address, connectTimeout: 5000, ...security }).catch((err: unknown) => {
    throw new ShardcastError('TEMPORAL_UNAVAILABLE', `cannot reach Temporal at ${address}: ${(err as Error).message}`, { cause: err });
  });
  return new Client({ connection, namespace: config.temporal.namespace, ...(dataConverter ? { dataConverter } : {}) });
}
