/** The simulator's rebalancing policies (see simulate.ts), apart from it so that the CLI's help can name them without loading TensorFlow.js. */
export const POLICIES = ['static', 'reactive', 'predictive', 'oracle'] as const;
export type Policy = (typeof POLICIES)[number];
