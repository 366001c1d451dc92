import { defineConfig } from 'vitest/config';
import base, { LONG_TESTS } from './vitest.config.js';

/**
 * The long suite: integration tests whose faults take minutes to play out (a stalled worker's lost
 * attempts, each waiting out a heartbeat timeout). `.ci/run` runs it after `npm test`. One file at a
 * time: each times real processes (a stalled worker's lost attempts, a forecast that must come before
 * a peak) and on two cores the others' load would be part of what it measures.
 */
export default defineConfig({ test: { ...base.test, include: [LONG_TESTS], exclude: ['**/node_modules/**'], fileParallelism: false } });
