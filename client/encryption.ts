import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Payload, PayloadCodec } from '@temporalio/common';
import proto from '@temporalio/proto';
import { ShardcastError } from '../src/errors.js';

/** The environment variable that may hold encryption keys, in the key file's format. */
export const ENCRYPTION_KEYS_ENV = 'SHARDCAST_TEMPORAL_ENCRYPTION_KEYS';

export const ENCODING_ENCRYPTED = 'binary/encrypted';
export const METADATA_ENCODING = 'encoding';
export const METADATA_KEY_ID = 'encryption-key-id';

// A CommonJS module: its named exports are not visible to Node's ESM loader.
const PayloadMessage = proto.temporal.api.common.v1.Payload;

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;

export class EncryptionError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ENCRYPTION', message, options);
  }
}

/** AES-256 keys by id, and the id new payloads are encrypted with. */
export interface KeyRing {
  currentKeyId: string;
  keys: ReadonlyMap<string, Buffer>;
}

/**
 * Keys in the key file's format: one `KEY_ID=BASE64` per line (or separated by commas, handy in an
 * environment variable), `#` starts a comment. Each key is 32 random bytes (`openssl rand -base64 32`).
 * Errors name the source and the line, never the key material.
 */
export function parseKeys(text: string, source: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const entries = text.split(/\r?\n/).flatMap((line, i) => line.replace(/#.*/, '').split(',').map((entry) => ({ entry: entry.trim(), line: i + 1 })));
  for (const { entry, line } of entries) {
    if (entry === '') continue;
    const at = `${source}, line ${line}`;
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new EncryptionError(`${at}: expected KEY_ID=BASE64_KEY`);
    const id = entry.slice(0, eq).trim();
    const material = entry.slice(eq + 1).trim();
    if (!KEY_ID.test(id)) throw new EncryptionError(`${at}: key id ${JSON.stringify(id)} must be 1-64 letters, digits, ".", "_" or "-"`);
    const key = /^[A-Za-z0-9+/_-]+={0,2}$/.test(material) ? Buffer.from(material, 'base64') : Buffer.alloc(0);
    if (key.length !== KEY_BYTES) throw new EncryptionError(`${at}: key "${id}" must be ${KEY_BYTES} bytes in base64 (e.g. \`openssl rand -base64 32\`), got ${key.length} bytes`);
    if (keys.has(id)) throw new EncryptionError(`${at}: key "${id}" is given twice`);
    keys.set(id, key);
  }
  return keys;
}

export interface KeyRingSources {
  /** A file of keys (temporal.encryption.keyFile). */
  keyFile?: string;
  /** Keys from the environment ($SHARDCAST_TEMPORAL_ENCRYPTION_KEYS). */
  keysFromEnv?: string;
  /** The id new payloads are encrypted with; optional when exactly one key is configured. */
  currentKeyId?: string;
}

/** The configured key ring, or undefined when no key is configured (encryption off). */
export function loadKeyRing(sources: KeyRingSources): KeyRing | undefined {
  const keys = new Map<string, Buffer>();
  const add = (found: Map<string, Buffer>, source: string): void => {
    for (const [id, key] of found) {
      const existing = keys.get(id);
      if (existing && !existing.equals(key)) throw new EncryptionError(`${source}: key "${id}" differs from the key of that id given elsewhere`);
      keys.set(id, key);
    }
  };
  if (sources.keyFile) {
    let text: string;
    try {
      text = readFileSync(sources.keyFile, 'utf8');
    } catch (err) {
      throw new EncryptionError(`temporal.encryption.keyFile: cannot read ${sources.keyFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    const found = parseKeys(text, sources.keyFile);
    if (found.size === 0) throw new EncryptionError(`temporal.encryption.keyFile: ${sources.keyFile} holds no key`);
    add(found, sources.keyFile);
  }
  if (sources.keysFromEnv) add(parseKeys(sources.keysFromEnv, `$${ENCRYPTION_KEYS_ENV}`), `$${ENCRYPTION_KEYS_ENV}`);
  if (keys.size === 0) {
    if (sources.currentKeyId) throw new EncryptionError(`temporal.encryption.keyId is "${sources.currentKeyId}" but no key is configured (temporal.encryption.keyFile or $${ENCRYPTION_KEYS_ENV})`);
    return undefined;
  }
  const ids = [...keys.keys()];
  if (!sources.currentKeyId && ids.length > 1) {
    throw new EncryptionError(`${ids.length} encryption keys are configured (${ids.join(', ')}): set temporal.encryption.keyId to the one new payloads are encrypted with`);
  }
  const currentKeyId = sources.currentKeyId ?? ids[0]!;
  if (!keys.has(currentKeyId)) throw new EncryptionError(`temporal.encryption.keyId: no key "${currentKeyId}" is configured (configured: ${ids.join(', ')})`);
  return { currentKeyId, keys };
}

/**
 * Encrypts every payload with AES-256-GCM under the ring's current key: the whole payload (its
 * metadata and data) becomes the ciphertext, and only the encoding and key id stay readable. The key id
 * is authenticated as well, so a payload cannot be relabelled. Decoding takes any configured key, and
 * passes through payloads that were never encrypted (history from before encryption was turned on).
 */
export class AesGcmPayloadCodec implements PayloadCodec {
  constructor(private readonly ring: KeyRing) {}

  get currentKeyId(): string {
    return this.ring.currentKeyId;
  }

  get keyIds(): string[] {
    return [...this.ring.keys.keys()];
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const keyId = this.ring.currentKeyId;
    const key = this.ring.keys.get(keyId)!;
    return payloads.map((payload) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(keyId));
      const plain = PayloadMessage.encode(payload).finish();
      const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { [METADATA_ENCODING]: Buffer.from(ENCODING_ENCRYPTED), [METADATA_KEY_ID]: Buffer.from(keyId) },
        data: new Uint8Array(sealed),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const encoding = payload.metadata?.[METADATA_ENCODING];
      if (!encoding || Buffer.from(encoding).toString() !== ENCODING_ENCRYPTED) return payload;
      const idBytes = payload.metadata?.[METADATA_KEY_ID];
      if (!idBytes) throw new EncryptionError('an encrypted payload carries no key id (metadata "encryption-key-id")');
      const keyId = Buffer.from(idBytes).toString();
      const key = this.ring.keys.get(keyId);
      if (!key) {
        throw new EncryptionError(
          `payload encrypted with key "${keyId}", which is not configured (configured: ${[...this.ring.keys.keys()].join(', ')}): add it to temporal.encryption.keyFile or $${ENCRYPTION_KEYS_ENV}`,
        );
      }
      const sealed = Buffer.from(payload.data ?? new Uint8Array());
      if (sealed.length < IV_BYTES + TAG_BYTES) throw new EncryptionError(`payload encrypted with key "${keyId}" is truncated (${sealed.length} bytes)`);
      let plain: Buffer;
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
        decipher.setAAD(Buffer.from(keyId));
        decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
        plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
      } catch (err) {
        throw new EncryptionError(`payload encrypted with key "${keyId}" fails authentication: it was altered, or key "${keyId}" is not the key it was encrypted with`, { cause: err });
      }
      return PayloadMessage.decode(plain);
    });
  }
}
