/**
 * The copy governor's settings and defaults (src/movement/governor.ts runs it). Imports nothing, so
 * that the configuration (src/config.ts), which every command loads, does not load pg with them.
 */

export interface GovernorSettings {
  /** Off: copy and apply at full speed (the probe does not run). */
  enabled: boolean;
  /** The copy slows down while the probe's recent p90 exceeds this many times its baseline. */
  latencyRatio: number;
  /** Milliseconds between two probes of a node. */
  probeIntervalMs: number;
  /** The apply is paced only while its lag is at most this (beyond, it runs at full speed). */
  maxLagBytes: number;
  /** Floor of the baseline in ms: below it, a probe's jitter would count as harm. */
  minBaselineMs: number;
  /** Longest pause between two chunks (also the longest hold of the apply at a time). */
  maxPauseMs: number;
  /** Rows per copy chunk (each chunk is one COPY out of the source and into the target). */
  chunkRows: number;
}

export const DEFAULT_GOVERNOR: GovernorSettings = {
  enabled: true,
  latencyRatio: 1.5,
  probeIntervalMs: 25,
  maxLagBytes: 64 * 1024 * 1024,
  minBaselineMs: 0.5,
  maxPauseMs: 500,
  chunkRows: 10_000,
};
