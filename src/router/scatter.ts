import { compareKeys } from '../catalog/keys.js';
import { ShardcastError } from '../errors.js';
import type { RoutedTable, ShardRoute } from './shard-map.js';

/**
 * A shard's key range, half-open [lo, hi): hash shards as hash values (hashMax + 1), range shards
 * as keys. Ranges of the same colocation group compare with one comparator.
 */
export interface KeyInterval {
  lo: bigint | string;
  hi: bigint | string;
}

export type KeyComparator = (a: bigint | string, b: bigint | string) => number;

export function keyComparator(table: RoutedTable): KeyComparator {
  return table.method === 'hash' ? (a, b) => (a < b ? -1 : a > b ? 1 : 0) : (a, b) => compareKeys(table.keyType, a, b);
}

export function shardInterval(route: ShardRoute): KeyInterval {
  return route.hashMin !== undefined ? { lo: route.hashMin, hi: route.hashMax! + 1n } : { lo: route.rangeMin!, hi: route.rangeMax! };
}

function overlaps(a: KeyInterval, b: KeyInterval, cmp: KeyComparator): boolean {
  return cmp(a.lo, b.hi) < 0 && cmp(b.lo, a.hi) < 0;
}

/** Whether the union of `parts` contains all of `range`. */
export function coveredBy(range: KeyInterval, parts: readonly KeyInterval[], cmp: KeyComparator): boolean {
  const relevant = parts.filter((p) => overlaps(p, range, cmp)).sort((a, b) => cmp(a.lo, b.lo));
  let reached = range.lo;
  for (const part of relevant) {
    if (cmp(part.lo, reached) > 0) return false;
    if (cmp(part.hi, reached) > 0) reached = part.hi;
  }
  return cmp(reached, range.hi) >= 0;
}

export interface Rescatter {
  /** Shards of the current map to run the statement on: together exactly the ranges still owed. */
  run: ShardRoute[];
  /** Shards holding owed rows beside rows the statement already ran on (a merge that raced it). */
  mixed: ShardRoute[];
}

/**
 * Where a scatter statement still has to run after shards it was sent to were split or merged away
 * (`owed`), given the key ranges it already ran on (`done`): the successors holding owed rows. A
 * successor that also holds rows the statement already changed cannot take it again without
 * changing those twice: it is reported in `mixed`.
 */
export function planRescatter(routes: readonly ShardRoute[], done: readonly KeyInterval[], owed: readonly KeyInterval[], cmp: KeyComparator): Rescatter {
  const run: ShardRoute[] = [];
  const mixed: ShardRoute[] = [];
  for (const route of routes) {
    const range = shardInterval(route);
    if (!owed.some((o) => overlaps(o, range, cmp))) continue;
    if (done.some((d) => overlaps(d, range, cmp))) mixed.push(route);
    else run.push(route);
  }
  return { run, mixed };
}

/** A scatter write met a shard merged into one it had already partly changed: it was not re-run there. */
export class ScatterInterruptedError extends ShardcastError {
  constructor(
    readonly unchangedShardIds: number[],
    readonly mergedIntoShardIds: number[],
  ) {
    super(
      'SCATTER_INTERRUPTED',
      `all: a merge retired shard ${unchangedShardIds.join(', ')} while this statement ran, into shard ${mergedIntoShardIds.join(', ')}, ` +
        `which also holds rows the statement had already changed; it was not re-run there, so that no row changes twice: ` +
        `the rows that came from shard ${unchangedShardIds.join(', ')} are unchanged, every other row was changed once`,
    );
  }
}
