/** The rebalancing simulator (DESIGN §5): traces through the real planner and forecasting engine. */
export { SimFleet, type SimMetrics, type SimMove, type SimNode, type SimNodeState } from './fleet.js';
export { ShardForecaster, EPOCH_MS, type ForecasterOptions } from './forecaster.js';
export { DEFAULT_REACTIVE, reactiveMemory, reactiveRound, type ReactiveAction, type ReactiveSettings } from './reactive.js';
export { defaultOptions, describe, firstFitDecreasing, POLICIES, resultLine, simulate, SIMULATION_PLANNER, type ForecastSource, type Policy, type SimulationOptions, type SimulationResult } from './simulate.js';
export { DEFAULT_GROUP_OPTIONS, loadTrace, shardGroups, SIM_STEP_SECONDS, toSimSteps, type ShardGroupOptions, type SimShard, type Trace } from './trace.js';
