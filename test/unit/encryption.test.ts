import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { afterAll, describe, expect, it } from 'vitest';
import { AesGcmPayloadCodec, ENCODING_ENCRYPTED, EncryptionError, loadKeyRing, parseKeys, type KeyRing } from '../../client/encryption.js';
import { dataConverterOf, payloadCodecOf } from '../../client/connection.js';
import { parseConfig } from '../../src/config.js';

const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Keys are made here, at test time: none is committed. */
function newKey(): string {
  return randomBytes(32).toString('base64');
}

function ring(current: string, ...ids: string[]): KeyRing {
  return loadKeyRing({ keysFromEnv: ids.map((id) => `${id}=${keys[id]}`).join('\n'), currentKeyId: current })!;
}

const keys: Record<string, string> = { k1: newKey(), k2: newKey(), other: newKey() };
const input = { spec: { name: 'orders', columns: 'secret_marker_column bigint' } };

function text(payload: Payload): string {
  return Buffer.from(payload.data ?? new Uint8Array()).toString('latin1') + JSON.stringify(payload.metadata ?? {});
}

describe('the AES-GCM payload codec', () => {
  it('round-trips payloads, and leaves no plaintext in what it encodes', async () => {
    const codec = new AesGcmPayloadCodec(ring('k1', 'k1'));
    const plain = [defaultPayloadConverter.toPayload(input), defaultPayloadConverter.toPayload(null), defaultPayloadConverter.toPayload('')];
    const encoded = await codec.encode(plain);
    expect(encoded).toHaveLength(3);
    for (const p of encoded) {
      expect(Buffer.from(p.metadata!.encoding!).toString()).toBe(ENCODING_ENCRYPTED);
      expect(Buffer.from(p.metadata!['encryption-key-id']!).toString()).toBe('k1');
      expect(text(p)).not.toContain('secret_marker');
      expect(text(p)).not.toContain('json/plain');
    }
    const decoded = await codec.decode(encoded);
    expect(decoded.map((p) => defaultPayloadConverter.fromPayload(p))).toEqual([input, null, '']);
    // Two encodings of one payload differ (a fresh IV each time).
    const [again] = await codec.encode([plain[0]!]);
    expect(Buffer.from(again!.data!).equals(Buffer.from(encoded[0]!.data!))).toBe(false);
  });

  it('passes through payloads that were never encrypted', async () => {
    const codec = new AesGcmPayloadCodec(ring('k1', 'k1'));
    const plain = defaultPayloadConverter.toPayload(input);
    expect(await codec.decode([plain])).toEqual([plain]);
  });

  it('rotates: encodes with the current key, decodes with any configured key', async () => {
    const old = new AesGcmPayloadCodec(ring('k1', 'k1'));
    const written = await old.encode([defaultPayloadConverter.toPayload(input)]);
    const rotated = new AesGcmPayloadCodec(ring('k2', 'k1', 'k2'));
    expect(defaultPayloadConverter.fromPayload((await rotated.decode(written))[0]!)).toEqual(input);
    const fresh = await rotated.encode([defaultPayloadConverter.toPayload(input)]);
    expect(Buffer.from(fresh[0]!.metadata!['encryption-key-id']!).toString()).toBe('k2');
    expect(defaultPayloadConverter.fromPayload((await rotated.decode(fresh))[0]!)).toEqual(input);
  });

  it('names the key id of a payload encrypted with a key it does not have', async () => {
    const written = await new AesGcmPayloadCodec(ring('k2', 'k2')).encode([defaultPayloadConverter.toPayload(input)]);
    const codec = new AesGcmPayloadCodec(ring('k1', 'k1'));
    await expect(codec.decode(written)).rejects.toThrow(EncryptionError);
    await expect(codec.decode(written)).rejects.toThrow(/payload encrypted with key "k2", which is not configured \(configured: k1\)/);
  });

  it('refuses a tampered ciphertext, a relabelled key id and a wrong key of the same id', async () => {
    const codec = new AesGcmPayloadCodec(ring('k1', 'k1', 'k2'));
    const [p] = await codec.encode([defaultPayloadConverter.toPayload(input)]);
    const flipped = Buffer.from(p!.data!);
    flipped[20]! ^= 1;
    await expect(codec.decode([{ ...p, data: flipped }])).rejects.toThrow(/payload encrypted with key "k1" fails authentication/);
    const relabelled = { ...p, metadata: { ...p!.metadata, 'encryption-key-id': Buffer.from('k2') } };
    await expect(codec.decode([relabelled])).rejects.toThrow(/key "k2" fails authentication/);
    const sameIdOtherKey = new AesGcmPayloadCodec(loadKeyRing({ keysFromEnv: `k1=${keys.other}` })!);
    await expect(sameIdOtherKey.decode([p!])).rejects.toThrow(/key "k1" fails authentication/);
    await expect(codec.decode([{ ...p, data: Buffer.alloc(5) }])).rejects.toThrow(/truncated/);
  });
});

describe('encryption keys', () => {
  it('reads KEY_ID=BASE64 lines, comments and comma-separated lists', () => {
    const found = parseKeys(`# keys\nk1=${keys.k1}\n\n k2 = ${keys.k2} # newest\n`, 'keys.txt');
    expect([...found.keys()]).toEqual(['k1', 'k2']);
    expect(found.get('k1')!.length).toBe(32);
    expect([...parseKeys(`k1=${keys.k1},k2=${keys.k2}`, 'env').keys()]).toEqual(['k1', 'k2']);
  });

  it('names the source and line of a bad key, never the key', () => {
    const short = randomBytes(16).toString('base64');
    expect(() => parseKeys(`k1=${keys.k1}\nk2=${short}`, 'keys.txt')).toThrow('keys.txt, line 2: key "k2" must be 32 bytes in base64 (e.g. `openssl rand -base64 32`), got 16 bytes');
    expect(() => parseKeys(`k1=${keys.k1}\nk2=${short}`, 'keys.txt')).not.toThrow(short);
    expect(() => parseKeys('just-a-key', 'keys.txt')).toThrow('keys.txt, line 1: expected KEY_ID=BASE64_KEY');
    expect(() => parseKeys(`bad id=${keys.k1}`, 'env')).toThrow(/key id "bad id" must be/);
    expect(() => parseKeys(`k1=${keys.k1}\nk1=${keys.k2}`, 'f')).toThrow('f, line 2: key "k1" is given twice');
    expect(() => parseKeys('k1=not*base64', 'f')).toThrow(/key "k1" must be 32 bytes/);
  });

  it('loads from a file and the environment; the current key must be clear', () => {
    const file = path.join(dir, 'keys');
    writeFileSync(file, `k1=${keys.k1}\n`, { mode: 0o600 });
    expect(loadKeyRing({})).toBeUndefined();
    expect(loadKeyRing({ keyFile: file })!.currentKeyId).toBe('k1');
    const both = loadKeyRing({ keyFile: file, keysFromEnv: `k2=${keys.k2}`, currentKeyId: 'k2' })!;
    expect([...both.keys.keys()]).toEqual(['k1', 'k2']);
    expect(() => loadKeyRing({ keyFile: file, keysFromEnv: `k2=${keys.k2}` })).toThrow('2 encryption keys are configured (k1, k2): set temporal.encryption.keyId');
    expect(() => loadKeyRing({ keyFile: file, currentKeyId: 'k9' })).toThrow('temporal.encryption.keyId: no key "k9" is configured (configured: k1)');
    expect(() => loadKeyRing({ currentKeyId: 'k1' })).toThrow(/no key is configured/);
    expect(() => loadKeyRing({ keyFile: file, keysFromEnv: `k1=${keys.k2}` })).toThrow(/key "k1" differs/);
    expect(() => loadKeyRing({ keyFile: path.join(dir, 'missing') })).toThrow(`temporal.encryption.keyFile: cannot read ${path.join(dir, 'missing')}: ENOENT`);
    const empty = path.join(dir, 'empty');
    writeFileSync(empty, '# nothing yet\n');
    expect(() => loadKeyRing({ keyFile: empty })).toThrow('holds no key');
    if (process.getuid?.() !== 0) {
      const unreadable = path.join(dir, 'unreadable');
      writeFileSync(unreadable, `k1=${keys.k1}\n`);
      chmodSync(unreadable, 0);
      expect(() => loadKeyRing({ keyFile: unreadable })).toThrow(/cannot read .*unreadable: EACCES/);
    }
  });

  it('is off without keys and on with them, from the config and $SHARDCAST_TEMPORAL_ENCRYPTION_KEYS', async () => {
    expect(dataConverterOf(parseConfig({}), {})).toBeUndefined();
    const codec = payloadCodecOf(parseConfig({ temporal: { encryption: { keyId: 'k2' } } }), { SHARDCAST_TEMPORAL_ENCRYPTION_KEYS: `k1=${keys.k1},k2=${keys.k2}` })!;
    expect(codec.currentKeyId).toBe('k2');
    expect(dataConverterOf(parseConfig({}), { SHARDCAST_TEMPORAL_ENCRYPTION_KEYS: `k1=${keys.k1}` })!.payloadCodecs).toHaveLength(1);
    expect(() => parseConfig({ temporal: { encryption: { keyId: 'a b' } } })).toThrow('config: temporal.encryption.keyId: 1-64 letters');
  });
});
