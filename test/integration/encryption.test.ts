import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCodecServer } from '../../client/codec-server.js';
import { AesGcmPayloadCodec, loadKeyRing } from '../../client/encryption.js';
import { createDistributedTable, createTableWorkflowId } from '../../client/index.js';
import { createTestCatalog, fleet, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let plain: Client;
let codecServer: Server;
let codecUrl: string;
// A key made for this run only: nothing secret is committed.
const KEYS = `test-${randomBytes(3).toString('hex')}=${randomBytes(32).toString('base64')}`;
const codec = new AesGcmPayloadCodec(loadKeyRing({ keysFromEnv: KEYS })!);
const UI_ORIGIN = 'http://127.0.0.1:8233';

beforeAll(async () => {
  catalog = await createTestCatalog('enc');
  worker = await startTestWorker(catalog.catalogUrl, undefined, undefined, { payloadCodecs: [codec] });
  // A client without the codec sees what Temporal stores.
  plain = new Client({ connection: await Connection.connect({ address: fleet().temporalAddress }), namespace: 'default' });
  codecServer = await startCodecServer({ codec, host: '127.0.0.1', port: 0, corsOrigins: [UI_ORIGIN] });
  codecUrl = `http://127.0.0.1:${(codecServer.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => codecServer?.close(resolve));
  await plain?.connection.close();
  await worker?.close();
  await catalog?.close();
});

describe('payload encryption against a real Temporal server', () => {
  it('stores no plaintext of a workflow input in its history, and the codec server decodes it', async () => {
    const marker = `marker_${randomBytes(6).toString('hex')}`;
    const table = `enc_${randomBytes(3).toString('hex')}`;
    const result = await createDistributedTable(worker.options, { name: table, columns: `id bigint primary key, ${marker} text`, shardKey: 'id', shardCount: 2 });
    expect(result).toMatchObject({ table, shards: 2 });

    const workflowId = createTableWorkflowId(table, worker.options.workflowIdPrefix);
    const history = await plain.workflow.getHandle(workflowId).fetchHistory();
    const raw = Buffer.from(temporal.api.history.v1.History.encode(history).finish());
    expect(raw.includes('binary/encrypted'), 'the history holds encrypted payloads').toBe(true);
    expect(raw.includes(marker), 'the column name (workflow input) appears in plaintext in the stored history').toBe(false);
    expect(raw.includes('bigint primary key'), 'the column definitions appear in plaintext').toBe(false);

    // The stored input, as the Temporal UI would send it to the codec server.
    const started = history.events!.find((e) => e.workflowExecutionStartedEventAttributes)!.workflowExecutionStartedEventAttributes!;
    const stored = started.input!.payloads![0]!;
    const body = { payloads: [{ metadata: Object.fromEntries(Object.entries(stored.metadata!).map(([k, v]) => [k, Buffer.from(v).toString('base64')])), data: Buffer.from(stored.data!).toString('base64') }] };
    const response = await fetch(`${codecUrl}/decode`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-namespace': 'default', origin: UI_ORIGIN }, body: JSON.stringify(body) });
    expect(response.status).toBe(200);
    expect(response.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    const decoded = ((await response.json()) as { payloads: { metadata: Record<string, string>; data: string }[] }).payloads[0]!;
    const input = defaultPayloadConverter.fromPayload<{ spec: { columns: string } }>({
      metadata: Object.fromEntries(Object.entries(decoded.metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
      data: Buffer.from(decoded.data, 'base64'),
    });
    expect(input.spec.columns).toBe(`id bigint primary key, ${marker} text`);

    // The temporal CLI reads the same history through the codec server.
    const { stdout } = await promisify(execFile)(fleet().temporalCliPath, [
      'workflow', 'show', '--workflow-id', workflowId, '--address', fleet().temporalAddress, '--namespace', 'default', '--codec-endpoint', codecUrl, '--output', 'json',
    ]);
    const shown = JSON.parse(stdout) as { events: { workflowExecutionStartedEventAttributes?: { input: { payloads: { metadata: Record<string, string>; data: string }[] } } }[] };
    const cliInput = shown.events.find((e) => e.workflowExecutionStartedEventAttributes)!.workflowExecutionStartedEventAttributes!.input.payloads[0]!;
    expect(Buffer.from(cliInput.metadata.encoding!, 'base64').toString()).toBe('json/plain');
    expect(Buffer.from(cliInput.data, 'base64').toString()).toContain(marker);
  });

  it('the CLI encrypts what it starts when $SHARDCAST_TEMPORAL_ENCRYPTION_KEYS is set', async () => {
    const marker = `marker_${randomBytes(6).toString('hex')}`;
    const table = `cli_${randomBytes(3).toString('hex')}`;
    const env: NodeJS.ProcessEnv = { ...process.env, SHARDCAST_TEMPORAL_ENCRYPTION_KEYS: KEYS, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue };
    const run = await promisify(execFile)(
      process.execPath,
      ['bin/shardcast.js', '--catalog-url', catalog.catalogUrl, '--temporal-address', fleet().temporalAddress, 'tables', 'create', table, '--columns', `id bigint primary key, ${marker} text`, '--key', 'id', '--shards', '2'],
      { cwd: path.resolve(import.meta.dirname, '../..'), env },
    );
    expect(run.stdout).toContain(`created ${table}: 2 shard(s)`);
    const raw = Buffer.from(temporal.api.history.v1.History.encode(await plain.workflow.getHandle(createTableWorkflowId(table)).fetchHistory()).finish());
    expect(raw.includes('binary/encrypted')).toBe(true);
    expect(raw.includes(marker), 'the CLI sent the column definitions in plaintext').toBe(false);
  });

  it('answers the Temporal UI’s preflight for its origin only, and refuses bad requests with a reason', async () => {
    const preflight = (origin: string) =>
      fetch(`${codecUrl}/decode`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' } });
    const ok = await preflight(UI_ORIGIN);
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-headers')).toMatch(/X-Namespace/i);
    const other = await preflight('http://evil.example');
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();

    const notJson = await fetch(`${codecUrl}/decode`, { method: 'POST', body: 'nope' });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toEqual({ message: 'the request body is not JSON' });
    const unknownKey = await fetch(`${codecUrl}/decode`, {
      method: 'POST',
      body: JSON.stringify({ payloads: [{ metadata: { encoding: Buffer.from('binary/encrypted').toString('base64'), 'encryption-key-id': Buffer.from('gone').toString('base64') }, data: 'AAAA' }] }),
    });
    expect(unknownKey.status).toBe(422);
    expect(((await unknownKey.json()) as { message: string }).message).toMatch(/payload encrypted with key "gone", which is not configured/);
    expect((await fetch(`${codecUrl}/other`, { method: 'POST', body: '{}' })).status).toBe(404);
  });
});
