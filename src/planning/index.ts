/** Planning (DESIGN §5): pure functions from forecasts and placements to a plan. No I/O. */
export * from './types.js';
export { planRebalance, atBound } from './planner.js';
export { calibrateCapacity, type CapacityEstimate, type CapacityOptions, type CapacitySample } from './capacity.js';
export { learnMoveDuration, moveSeconds, DEFAULT_MOVE_DURATION, type PastMovement } from './duration.js';
export { DEFAULT_SETTINGS, resolveSettings } from './settings.js';
export { localityCost, peakStacking, targetCost } from './cost.js';
export { validatePlanInput } from './validate.js';
