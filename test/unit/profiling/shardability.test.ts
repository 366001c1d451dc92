import { describe, expect, it } from 'vitest';
import { shardability, shardFacts } from '../../../src/profiling/shardability.js';

describe('shardability', () => {
  const base = { predictedLoad: 300, bytes: 0, nodeCapacity: 1000, nodeUtilisation: 0.84, targetUtilisation: 0.7 };

  it('is the share of its node the entity frees, times its node\'s pressure over the target, per (1 + GiB) copied', () => {
    expect(shardability(base)).toEqual({ score: 0.36, relief: 0.3, pressure: 1.2, gib: 0 });
    expect(shardability({ ...base, bytes: 2 ** 30 }).score).toBeCloseTo(0.18, 4);
    // The same entity on a node under its target is worth less; an idle node's, nothing.
    expect(shardability({ ...base, nodeUtilisation: 0.35 }).score).toBeCloseTo(0.15, 4);
    expect(shardability({ ...base, nodeUtilisation: 0 }).score).toBe(0);
    // Nothing predicted, or no capacity known: nothing to gain.
    expect(shardability({ ...base, predictedLoad: 0 }).score).toBe(0);
    expect(shardability({ ...base, nodeCapacity: 0 }).score).toBe(0);
  });

  it('ranks a hot, cheap entity on an overloaded node above a hotter one that is costly to copy or sits on an idle node', () => {
    const hotCheap = shardability({ ...base, predictedLoad: 250, bytes: 50 * 2 ** 20 });
    const hotterBig = shardability({ ...base, predictedLoad: 400, bytes: 20 * 2 ** 30 });
    const hotterIdle = shardability({ ...base, predictedLoad: 400, nodeUtilisation: 0.45 });
    expect(hotCheap.score).toBeGreaterThan(hotterBig.score);
    expect(hotCheap.score).toBeGreaterThan(hotterIdle.score);
  });
});

describe('shardFacts', () => {
  const step = (y: number) => ({ point: y, hi80: y * 1.03, hi95: y * 1.05 });
  it('takes each shard\'s peak at the bound over the horizon, and its node\'s peak of the summed forecasts over capacity', () => {
    const facts = shardFacts(
      {
        nodes: [
          { id: 1, name: 'node-1', capacity: 1000 },
          { id: 2, name: 'node-2', capacity: 500 },
        ],
        placements: [
          { shardId: 10, nodeId: 1, bytes: 100 },
          { shardId: 11, nodeId: 1, bytes: 200 },
          { shardId: 12, nodeId: 2, bytes: 300 },
        ],
        shardForecasts: [
          { shardId: 10, steps: [step(100), step(400), step(900)] },
          { shardId: 11, steps: [step(300), step(300), step(0)] },
          { shardId: 12, steps: [step(50), step(60), step(70)] },
        ],
      },
      'point',
      2,
    );
    // Horizon 2: shard 10 peaks at 400; node-1 at step 2 (400 + 300).
    expect(facts.get(10)).toEqual({ shardId: 10, node: 'node-1', predictedLoad: 400, bytes: 100, nodeCapacity: 1000, nodeUtilisation: 0.7 });
    expect(facts.get(11)!.nodeUtilisation).toBe(0.7);
    expect(facts.get(12)).toEqual({ shardId: 12, node: 'node-2', predictedLoad: 60, bytes: 300, nodeCapacity: 500, nodeUtilisation: 0.12 });
    expect(shardFacts({ nodes: [{ id: 1, name: 'node-1', capacity: 1000 }], placements: [{ shardId: 10, nodeId: 1, bytes: 1 }], shardForecasts: [{ shardId: 10, steps: [step(100)] }] }, 'upper95', 12).get(10)!.predictedLoad).toBe(105);
  });
});
