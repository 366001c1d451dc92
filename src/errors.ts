/** Base of every error Shardcast raises on purpose; `code` is stable and machine-readable. */
export class ShardcastError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad input from a user or caller: never retried, nothing was changed. */
export class InvalidInputError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_INPUT', message, options);
  }
}

export class ConfigError extends ShardcastError {
  readonly key: string;
  constructor(key: string, message: string, options?: { cause?: unknown }) {
    super('INVALID_CONFIG', `config: ${key}: ${message}`, options);
    this.key = key;
  }
}

export class UnknownTableError extends ShardcastError {
  readonly table: string;
  constructor(table: string) {
    super('UNKNOWN_TABLE', `unknown distributed table "${table}"`);
    this.table = table;
  }
}

export class InvalidShardKeyError extends ShardcastError {
  readonly table: string;
  constructor(table: string, message: string, options?: { cause?: unknown }) {
    super('INVALID_SHARD_KEY', `table "${table}": ${message}`, options);
    this.table = table;
  }
}

export class KeyOutOfRangeError extends ShardcastError {
  readonly table: string;
  constructor(table: string, key: unknown) {
    super('KEY_OUT_OF_RANGE', `table "${table}": key ${JSON.stringify(String(key))} is outside every shard range`);
    this.table = table;
  }
}

export class NodeUnavailableError extends ShardcastError {
  readonly node: string;
  constructor(node: string, message: string, options?: { cause?: unknown }) {
    super('NODE_UNAVAILABLE', `node "${node}": ${message}`, options);
    this.node = node;
  }
}

export class AlreadyExistsError extends ShardcastError {
  constructor(message: string) {
    super('ALREADY_EXISTS', message);
  }
}

/** The catalog failed a read or write that was not to blame on the request: retrying can help. */
export class CatalogError extends ShardcastError {
  constructor(cause: unknown) {
    super('CATALOG', `catalog: ${errorMessage(cause)}`, { cause });
  }
}

export class NotFoundError extends ShardcastError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/**
 * A compensation would drop a schema in a database where the catalog places the shard it belongs
 * to (e.g. two node names for one database): refused, nothing dropped.
 */
export class UnsafeDropError extends ShardcastError {
  readonly node: string;
  readonly schema: string;
  constructor(node: string, schema: string, message: string) {
    super('UNSAFE_DROP', `refusing to drop schema ${schema} on node "${node}": ${message}`);
    this.node = node;
    this.schema = schema;
  }
}

/**
 * Errors that retrying cannot help (bad input, a refused lease, a failed verification), by class
 * name: activities mark them non-retryable and workflows list them as nonRetryableErrorTypes.
 */
export const BUSINESS_ERROR_TYPES = [
  'InvalidInputError',
  'AlreadyExistsError',
  'NotFoundError',
  'MovementInProgressError',
  'VerificationError',
  'UnsafeDropError',
  'BackupInvalidError',
  'RestoreVerificationError',
  'KeyOutOfRangeError',
] as const;

/**
 * SQLSTATE a fenced shard raises (DESIGN §3 cutover): the shard has left this node. The router
 * refreshes its map and retries on the new placement when it sees it.
 */
export const SHARD_FENCED_SQLSTATE = 'SCF01';
/** PostgreSQL's undefined_table: a shard schema that is gone makes the application's names unresolvable. */
export const UNDEFINED_TABLE_SQLSTATE = '42P01';
export const UNDEFINED_SCHEMA_SQLSTATE = '3F000';

export function sqlState(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}

/**
 * An error's message. The Temporal client's ServiceError says only what it was doing ("Failed to
 * describe schedule"); the gRPC error it wraps says what went wrong, so that is added.
 */
export function errorMessage(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'ServiceError' && err.cause instanceof Error && !err.message.includes(err.cause.message)) return `${err.message}: ${err.cause.message}`;
  return err.message;
}
