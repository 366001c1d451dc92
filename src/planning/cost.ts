import type { PlannerWeights } from './types.js';

/**
 * Target cost of placing a shard on a node (DESIGN §5): lower is better; each term is in [0, 1]
 * (bytes: per GiB) and weighted by the settings.
 * - load: the target's peak predicted utilisation with the shard, over the target utilisation; plus
 *   the move's own cost, the copy load of a hot shard as a share of its source's capacity;
 * - bytes: GiB to transfer (the same for every target of one shard: it ranks shards, not targets);
 * - locality: the share of the shard's accesses from regions other than the target's;
 * - alignment: how far the shard's daily peak stacks on the target's (peakStacking).
 */

export interface CostTerms {
  load: number;
  bytes: number;
  locality: number;
  alignment: number;
}

export function targetCost(terms: CostTerms, w: PlannerWeights): number {
  return w.load * terms.load + w.bytes * terms.bytes + w.locality * terms.locality + w.alignment * terms.alignment;
}

/** Share of accesses from outside `region`; 0 (neutral) when the shard has no recorded shares. */
export function localityCost(shares: Readonly<Record<string, number>>, region: string | null): number {
  const total = Object.values(shares).reduce((a, b) => a + b, 0);
  if (total <= 0) return 0;
  return 1 - (region === null ? 0 : (shares[region] ?? 0) / total);
}

/**
 * How much two time-of-day profiles' peaks stack: max(a + b) / (max a + max b), mapped from
 * [0.5, 1] to [0, 1]. 1 when both peak in the same bucket, 0 when a's peak meets b's trough and the
 * two are mirror images; 0 when either is empty or all zero.
 */
export function peakStacking(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  if (n === 0) return 0;
  let maxA = 0;
  let maxB = 0;
  let maxSum = 0;
  for (let i = 0; i < n; i++) {
    maxA = Math.max(maxA, a[i]!);
    maxB = Math.max(maxB, b[i]!);
    maxSum = Math.max(maxSum, a[i]! + b[i]!);
  }
  if (maxA <= 0 || maxB <= 0) return 0;
  return Math.max(0, Math.min(1, (maxSum / (maxA + maxB) - 0.5) * 2));
}
