/** The library applications import: the router, the errors it raises, and the hash functions. */
export { CatalogUnavailableError, createRouter, MapTooStaleError, Router, tableNamedIn, type RouterOptions, type RoutedQueryable, type ScatterResult, type ShardHandle } from './router/router.js';
export type { RoutedTable, ShardMap, ShardRoute } from './router/shard-map.js';
export * from './errors.js';
export { hashBytesExtended, hashInt4Extended, hashInt8Extended, hashTextExtended, hashUuidExtended } from './hashing.js';
export { hashKey, KEY_TYPES, type KeyType } from './catalog/keys.js';
export { loadConfig, parseConfig, type Config } from './config.js';
export type { TableSpec } from './catalog/tables.js';
