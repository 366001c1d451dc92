import { clockCompression, clockSeconds, stepMs } from '../clock.js';
import { InvalidInputError } from '../errors.js';
import type { PlanInput, PlannerSettings } from './types.js';

export const DEFAULT_SETTINGS: PlannerSettings = {
  stepSeconds: 300,
  horizonSteps: 12,
  bound: 'upper95',
  targetUtilisation: 0.7,
  weights: { load: 1, bytes: 0.05, locality: 0.5, alignment: 0.5 },
  hysteresisSeconds: 2 * 3600,
  maxConcurrentMovesPerNode: 2,
  minBenefitPerGiB: 0.5,
  copyLoadFactor: 0.3,
  bulkCopyShare: 0.03,
  sourceCeiling: 0.9,
  scaleIn: { lowUtilisation: 0.3, sustainedRounds: 6, minActiveNodes: 1, lookaheadSteps: 12, consolidateFill: 0.9 },
  activationSeconds: 120,
  activationLeadSeconds: 7200,
  coldShare: 0.1,
  splitFill: 0.6,
};

/**
 * The settings on a compressed load clock (clock.compression N > 1, src/clock.ts): the planner's step
 * and the windows the configuration gives in load-clock seconds (hysteresis, the activation lead)
 * become real seconds, N times shorter; unchanged at N = 1. Move durations and a node's activation
 * time are real time either way.
 */
export function onLoadClock(given: PlanInput['settings'] = {}): PlanInput['settings'] {
  if (clockCompression() === 1) return given;
  return {
    ...given,
    stepSeconds: stepMs() / 1000,
    hysteresisSeconds: clockSeconds(given.hysteresisSeconds ?? DEFAULT_SETTINGS.hysteresisSeconds),
    activationLeadSeconds: clockSeconds(given.activationLeadSeconds ?? DEFAULT_SETTINGS.activationLeadSeconds),
  };
}

/** The defaults overlaid with the input's settings, each checked: a bad value names its key. */
export function resolveSettings(given: PlanInput['settings'] = {}): PlannerSettings {
  const s: PlannerSettings = {
    ...DEFAULT_SETTINGS,
    ...given,
    weights: { ...DEFAULT_SETTINGS.weights, ...given.weights },
    scaleIn: { ...DEFAULT_SETTINGS.scaleIn, ...given.scaleIn },
  };
  const check = (key: string, value: number, ok: (v: number) => boolean, expected: string) => {
    if (!(Number.isFinite(value) && ok(value))) throw new InvalidInputError(`planner settings: ${key} must be ${expected}, got ${value}`);
  };
  check('stepSeconds', s.stepSeconds, (v) => v > 0, 'a positive number of seconds');
  check('horizonSteps', s.horizonSteps, (v) => Number.isInteger(v) && v > 0, 'a positive integer');
  check('targetUtilisation', s.targetUtilisation, (v) => v > 0 && v <= 1, 'in (0, 1]');
  for (const [k, v] of Object.entries(s.weights)) check(`weights.${k}`, v, (x) => x >= 0, 'a number ≥ 0');
  check('activationLeadSeconds', s.activationLeadSeconds, (v) => v >= 0, 'a number of seconds ≥ 0');
  check('hysteresisSeconds', s.hysteresisSeconds, (v) => v >= 0, 'a number of seconds ≥ 0');
  check('maxConcurrentMovesPerNode', s.maxConcurrentMovesPerNode, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
  check('minBenefitPerGiB', s.minBenefitPerGiB, (v) => v >= 0, 'a number ≥ 0');
  check('copyLoadFactor', s.copyLoadFactor, (v) => v >= 0, 'a number ≥ 0');
  check('bulkCopyShare', s.bulkCopyShare, (v) => v >= 0 && v < 1, 'in [0, 1)');
  check('sourceCeiling', s.sourceCeiling, (v) => v >= s.targetUtilisation && v <= 1, 'in [targetUtilisation, 1]');
  check('scaleIn.lowUtilisation', s.scaleIn.lowUtilisation, (v) => v >= 0 && v < s.targetUtilisation, 'in [0, targetUtilisation)');
  check('scaleIn.sustainedRounds', s.scaleIn.sustainedRounds, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
  check('scaleIn.minActiveNodes', s.scaleIn.minActiveNodes, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
  check('scaleIn.consolidateFill', s.scaleIn.consolidateFill, (v) => v >= 0 && v <= 1, 'in [0, 1] (0: no consolidation)');
  check('scaleIn.lookaheadSteps', s.scaleIn.lookaheadSteps, (v) => Number.isInteger(v) && v >= 1, 'an integer ≥ 1');
  check('activationSeconds', s.activationSeconds, (v) => v >= 0, 'a number of seconds ≥ 0');
  check('coldShare', s.coldShare, (v) => v >= 0 && v < 1, 'in [0, 1)');
  check('splitFill', s.splitFill, (v) => v > 0 && v <= 1, 'in (0, 1]');
  if (!['point', 'upper80', 'upper95'].includes(s.bound)) {
    throw new InvalidInputError(`planner settings: bound must be "point", "upper80" or "upper95", got ${JSON.stringify(s.bound)}`);
  }
  return s;
}
