export { createDistributedTable } from './create-table.js';
