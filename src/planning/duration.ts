import { InvalidInputError } from '../errors.js';
import type { MoveDurationModel } from './types.js';
import { quantile, theilSen } from './robust.js';

/**
 * How long a movement takes (DESIGN §5): seconds = (fixed + bytes / throughput) × safety factor.
 *
 * Learned from past movements (bytes, seconds from start to cutover): the fixed part (prepare, catch
 * up, verify, cutover) is the Theil–Sen intercept of seconds against bytes, floored at 0; the
 * throughput is the 20th percentile of the movements' own throughputs bytes / (seconds − fixed), a
 * slow but typical movement rather than the mean; the safety factor (1.25) covers what history has
 * not seen. With fewer than `minMovements` movements the defaults hold: 16 MiB/s, 30 s fixed, and a
 * safety factor of 1.5, being a guess.
 */

export interface PastMovement {
  bytes: number;
  seconds: number;
}

export const DEFAULT_MOVE_DURATION: MoveDurationModel = {
  bytesPerSecond: 16 * 2 ** 20,
  fixedSeconds: 30,
  safetyFactor: 1.5,
  basis: 'default (no movement history)',
};

export function learnMoveDuration(history: readonly PastMovement[], options: { minMovements?: number; safetyFactor?: number } = {}): MoveDurationModel {
  const minMovements = options.minMovements ?? 3;
  const safetyFactor = options.safetyFactor ?? 1.25;
  const usable = history.filter((m) => Number.isFinite(m.bytes) && Number.isFinite(m.seconds) && m.bytes > 0 && m.seconds > 0);
  if (usable.length < minMovements) {
    return { ...DEFAULT_MOVE_DURATION, basis: `${DEFAULT_MOVE_DURATION.basis}: ${usable.length} usable movements, ${minMovements} needed` };
  }
  const line = theilSen(usable.map((m) => m.bytes), usable.map((m) => m.seconds));
  const fixed = Math.max(0, Math.min(line?.intercept ?? 0, ...usable.map((m) => m.seconds)) * 0.999);
  const rates = usable.map((m) => m.bytes / Math.max(m.seconds - fixed, 1e-3));
  return {
    bytesPerSecond: quantile(rates, 0.2),
    fixedSeconds: fixed,
    safetyFactor,
    basis: `learned from ${usable.length} movements (20th percentile throughput, ×${safetyFactor} margin)`,
  };
}

export function moveSeconds(model: MoveDurationModel, bytes: number): number {
  if (!(model.bytesPerSecond > 0) || !(model.fixedSeconds >= 0) || !(model.safetyFactor >= 1)) {
    throw new InvalidInputError(
      `move-duration model: bytesPerSecond must be > 0, fixedSeconds ≥ 0 and safetyFactor ≥ 1, got ${model.bytesPerSecond}, ${model.fixedSeconds}, ${model.safetyFactor}`,
    );
  }
  return (model.fixedSeconds + Math.max(0, bytes) / model.bytesPerSecond) * model.safetyFactor;
}
