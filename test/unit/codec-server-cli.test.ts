import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');

/** The environment without SHARDCAST_* variables, plus `extra`. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean: NodeJS.ProcessEnv = { NO_COLOR: '1', ...extra };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHARDCAST_')) clean[k] = v;
  return clean;
}

describe('shardcast codec-server', () => {
  it('refuses to start without a key, and with a bad address, saying why', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) =>
        execFile(process.execPath, ['bin/shardcast.js', ...args], { cwd: root, env: env(), encoding: 'utf8' }, (err, _out, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code) : 0, stderr }),
        ),
      );
    const noKey = await run(['codec-server']);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toContain('shardcast: error: no encryption key is configured: set temporal.encryption.keyFile (or $SHARDCAST_TEMPORAL_ENCRYPTION_KEYS)');
    const badListen = await run(['codec-server', '--listen', 'everywhere']);
    expect(badListen.code).toBe(1);
    expect(badListen.stderr).toContain("option '--listen <host:port>' argument 'everywhere' is invalid. expected host:port");
  });

  it('serves /encode and /decode with the keys of $SHARDCAST_TEMPORAL_ENCRYPTION_KEYS until SIGTERM', async () => {
    const child = spawn(process.execPath, ['bin/shardcast.js', 'codec-server', '--listen', '127.0.0.1:0', '--cors-origin', 'http://127.0.0.1:8233'], {
      cwd: root,
      env: env({ SHARDCAST_TEMPORAL_ENCRYPTION_KEYS: `k1=${randomBytes(32).toString('base64')}` }),
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /codec server (http:\/\/\S+) \(keys k1; encrypting with k1; CORS http:\/\/127\.0\.0\.1:8233\)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
      });
      const payload = defaultPayloadConverter.toPayload({ hello: 'world' });
      const json = { payloads: [{ metadata: { encoding: Buffer.from(payload.metadata!.encoding!).toString('base64') }, data: Buffer.from(payload.data!).toString('base64') }] };
      const post = async (action: string, body: unknown) => (await (await fetch(`${url}/${action}`, { method: 'POST', body: JSON.stringify(body) })).json()) as typeof json;
      const encoded = await post('encode', json);
      expect(Buffer.from(encoded.payloads[0]!.metadata.encoding!, 'base64').toString()).toBe('binary/encrypted');
      expect(Buffer.from(encoded.payloads[0]!.data, 'base64').toString('latin1')).not.toContain('world');
      expect(await post('decode', encoded)).toEqual(json);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', resolve)));
    expect(code).toBe(0);
  });
});
