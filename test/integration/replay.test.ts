import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { createDistributedTable, createTableWorkflowId } from '../../client/index.js';
import { createTestCatalog, expectNoCredentials, HISTORIES, recordHistory, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;

beforeAll(async () => {
  catalog = await createTestCatalog('replay');
  worker = await startTestWorker(catalog.catalogUrl);
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

const replay = (history: unknown, id: string): Promise<void> =>
  Worker.runReplayHistory({ workflowBundle: { code: inject('workflowBundleCode') } }, history, id);

describe('workflow determinism (replay)', () => {
  it('replays this run’s histories: a table created, and one refused', async () => {
    await createDistributedTable(worker.options, { name: 'replayed', columns: 'id bigint primary key', shardKey: 'id', shardCount: 3 });
    await expect(createDistributedTable(worker.options, { name: 'refused', columns: 'id jsonb', shardKey: 'id' })).rejects.toThrow(/jsonb/);
    for (const table of ['replayed', 'refused']) {
      const id = createTableWorkflowId(table, worker.options.workflowIdPrefix);
      const history = await worker.client.workflow.getHandle(id).fetchHistory();
      await replay(history, id);
      // SHARDCAST_RECORD_HISTORIES=1 npm test: saves this run's histories as the new fixtures (so do the move, split, merge, collection and forecasting tests).
      await recordHistory(worker.client, id, `create-table-${table}`);
    }
  });

  it('replays the saved histories of earlier workflow code', async () => {
    // Binary protobuf: the SDK's JSON reader trips over two copies of protobufjs in this install.
    const files = readdirSync(HISTORIES).filter((f) => f.endsWith('.binpb'));
    expect(files.length).toBeGreaterThanOrEqual(8);
    for (const file of files) {
      expectNoCredentials(readFileSync(path.join(HISTORIES, file)), `fixture ${file}`);
      const history = temporal.api.history.v1.History.decode(readFileSync(path.join(HISTORIES, file)));
      expect(history.events.length).toBeGreaterThan(5);
      await replay(history, file.replace(/\.binpb$/, ''));
    }
  });
});
