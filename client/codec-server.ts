import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { InvalidInputError, errorMessage } from '../src/errors.js';

/** Largest request body read (Temporal's own limit on a payload is 2 MB, on a request 4 MB). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** A payload as Temporal's remote codec protocol sends it: proto3 JSON, bytes in base64. */
interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

export interface CodecServerOptions {
  codec: PayloadCodec;
  host: string;
  port: number;
  /** Browser origins allowed to call it (the Temporal UI's); others get no CORS headers. */
  corsOrigins: readonly string[];
}

/**
 * Temporal's remote codec protocol: `POST …/encode` and `POST …/decode` with `{"payloads": [...]}`,
 * answered in kind. The Temporal UI (Settings → Codec Server, or TEMPORAL_CODEC_ENDPOINT) and the
 * `temporal` CLI (`--codec-endpoint`) call it to show encrypted payloads; the namespace arrives in
 * the `X-Namespace` header.
 */
export async function startCodecServer(options: CodecServerOptions): Promise<Server> {
  const allowed = new Set(options.corsOrigins);
  const server = createServer((req, res) => {
    const origin = req.headers.origin;
    if (origin && allowed.has(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', 'Content-Type, X-Namespace, Authorization');
      res.setHeader('Vary', 'Origin');
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(origin && allowed.has(origin) ? 204 : 403);
      res.end();
      return;
    }
    const action = /\/(encode|decode)\/?$/.exec((req.url ?? '').split('?')[0]!)?.[1] as 'encode' | 'decode' | undefined;
    if (!action || req.method !== 'POST') {
      reply(res, 404, { message: 'not found: POST /encode or /decode' });
      return;
    }
    handle(options.codec, action, req).then(
      (payloads) => reply(res, 200, { payloads }),
      (err: unknown) => reply(res, err instanceof InvalidInputError ? 400 : 422, { message: errorMessage(err) }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

async function handle(codec: PayloadCodec, action: 'encode' | 'decode', req: IncomingMessage): Promise<JsonPayload[]> {
  const body = await readBody(req);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new InvalidInputError('the request body is not JSON');
  }
  const list = (parsed as { payloads?: unknown } | null)?.payloads;
  if (!Array.isArray(list)) throw new InvalidInputError('the request body must be {"payloads": [...]}');
  const payloads = list.map(fromJson);
  return (action === 'encode' ? await codec.encode(payloads) : await codec.decode(payloads)).map(toJson);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new InvalidInputError(`the request body is over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function fromJson(value: unknown, index: number): Payload {
  const p = value as JsonPayload | null;
  const bad = (): never => {
    throw new InvalidInputError(`payloads[${index}] must be {"metadata": {name: base64}, "data": base64}`);
  };
  if (p === null || typeof p !== 'object') return bad();
  if (p.data !== undefined && typeof p.data !== 'string') return bad();
  if (p.metadata !== undefined && (typeof p.metadata !== 'object' || p.metadata === null)) return bad();
  const metadata: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(p.metadata ?? {})) {
    if (typeof v !== 'string') return bad();
    metadata[k] = Buffer.from(v, 'base64');
  }
  return { metadata, data: Buffer.from(p.data ?? '', 'base64') };
}

function toJson(payload: Payload): JsonPayload {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(payload.metadata ?? {})) metadata[k] = Buffer.from(v).toString('base64');
  return { metadata, data: Buffer.from(payload.data ?? new Uint8Array()).toString('base64') };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
