import { defineConfig } from 'vitest/config';
import base, { LONG_TESTS } from './vitest.config.js';

/**
 * The long suite: integration tests whose faults take minutes to play out (a stalled worker's lost
 * attempts, each waiting out a heartbeat timeout). `.ci/run` runs it after `npm test`.
 */
export default defineConfig({ test: { ...base.test, include: [LONG_TESTS], exclude: ['**/node_modules/**'] } });
