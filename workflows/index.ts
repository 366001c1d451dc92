export { createDistributedTable } from './create-table.js';
export { dropFencedCopy, moveShard } from './move-shard.js';
export { collectStats } from './collect-stats.js';
export { retrainModels } from './retrain.js';
export { forecastLoad } from './forecast.js';
export { janitor } from './janitor.js';
export { rebalance } from './rebalance.js';
export { scaleOut } from './scale-out.js';
export { dropDistributedTable } from './drop-table.js';
