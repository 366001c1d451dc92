export { createDistributedTable } from './create-table.js';
export { moveShard } from './move-shard.js';
export { collectStats } from './collect-stats.js';
