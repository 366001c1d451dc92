import { defineConfig } from 'vitest/config';

/** Pure unit tests: no PostgreSQL, no Temporal (`npx vitest run --config vitest.unit.config.ts`). */
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 60_000,
  },
});
