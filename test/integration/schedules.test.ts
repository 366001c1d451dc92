import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSchedules, janitorScheduleId, replanScheduleId, retentionScheduleId, scheduleId } from '../../client/index.js';
import { parseConfig } from '../../src/config.js';
import { fleet, uniqueName } from '../helpers/fleet.js';

let connection: Connection;
let client: Client;

beforeAll(async () => {
  connection = await Connection.connect({ address: fleet().temporalAddress });
  client = new Client({ connection, namespace: 'default' });
});

afterAll(async () => {
  await connection?.close();
});

describe('ensureSchedules', () => {
  it('two workers starting at once both succeed: one creates each schedule, the other finds it', async () => {
    const taskQueue = uniqueName('sched-tq');
    const options = { client, taskQueue, workflowIdPrefix: `${taskQueue}-` };
    const config = parseConfig({ janitor: { intervalMinutes: 10 } });
    const ids = [scheduleId('retrain', options.workflowIdPrefix), scheduleId('forecast', options.workflowIdPrefix), janitorScheduleId(options.workflowIdPrefix), retentionScheduleId(options.workflowIdPrefix), replanScheduleId(options.workflowIdPrefix)];
    try {
      const [a, b] = await Promise.all([ensureSchedules(options, config), ensureSchedules(options, config)]);
      for (const [i, id] of ids.entries()) {
        expect([a[i], b[i]].map((s) => s!.scheduleId)).toEqual([id, id]);
        expect([a[i]!.outcome, b[i]!.outcome].sort()).toEqual(['created', 'unchanged']);
      }
    } finally {
      for (const id of ids) await client.schedule.getHandle(id).delete().catch(() => undefined);
    }
  });
});
