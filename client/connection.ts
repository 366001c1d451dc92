import { Client, Connection } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import type { Config } from '../src/config.js';
import { ShardcastError } from '../src/errors.js';
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

/** A Temporal client as the configuration says: address, namespace, payload encryption. */
export async function connectTemporalClient(config: Config, address: string, env: NodeJS.ProcessEnv = process.env): Promise<Client> {
  const dataConverter = dataConverterOf(config, env);
  const connection = await Connection.connect({ address, connectTimeout: 5000 }).catch((err: unknown) => {
    throw new ShardcastError('TEMPORAL_UNAVAILABLE', `cannot reach Temporal at ${address}: ${(err as Error).message}`, { cause: err });
  });
  return new Client({ connection, namespace: config.temporal.namespace, ...(dataConverter ? { dataConverter } : {}) });
}
