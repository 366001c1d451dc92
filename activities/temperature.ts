import type pg from 'pg';
import { refreshTemperatures } from '../src/profiling/temperature.js';
import { run } from './failures.js';

export interface TemperatureDeps {
  catalog: pg.Pool;
}

export function createTemperatureActivities(deps: TemperatureDeps) {
  return {
    /** Hot, warm and cold shards of every table with accesses in the last 24 h, stored as of `asOf` (once, however often retried). */
    async refreshTemperatures(input: { asOf: string }): Promise<Array<{ table: string; hot: number; warm: number; cold: number }>> {
      return run(() => refreshTemperatures(deps.catalog, { asOf: new Date(input.asOf) }));
    },
  };
}
