import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { buildNetwork, featureCount, forward, lstmFactory, restoreLstm, robustScaling, type LstmLayout, type LstmModel } from '../../../src/forecasting/lstm.js';
import { BackendUnavailableError, initBackend } from '../../../src/forecasting/tf-backend.js';
import { normals } from './synthetic.js';

const AMPLITUDE = 5;
/** 10 + 5·sin(2πt/24) + N(0, 0.1²), t = 0 … n − 1. */
function sine(n: number): number[] {
  const noise = normals(7);
  return Array.from({ length: n }, (_, t) => 10 + AMPLITUDE * Math.sin((2 * Math.PI * t) / 24) + 0.1 * noise());
}

const mae = (a: readonly number[], b: readonly number[]) => a.reduce((sum, v, i) => sum + Math.abs(v - b[i]!), 0) / a.length;

describe('backend', () => {
  it('wasm and cpu work', async () => {
    expect(await initBackend('cpu')).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    const model = await lstmFactory.fit(sine(200), { dailyPeriod: 24, budgetMs: 500 });
    expect(model.forecast(12).every(Number.isFinite)).toBe(true);
    expect(await initBackend('wasm')).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
  });

  it('tensorflow, not installed here, fails naming the packages and leaves the backend', async () => {
    const failure = initBackend('tensorflow');
    await expect(failure).rejects.toBeInstanceOf(BackendUnavailableError);
    await expect(failure).rejects.toThrow(/@tensorflow\/tfjs-node.*@tensorflow\/tfjs-node-gpu/);
    expect(tf.getBackend()).toBe('wasm');
  });

  it('an invalid choice is rejected', async () => {
    await expect(initBackend('gpu' as 'auto')).rejects.toBeInstanceOf(InvalidInputError);
  });
});

describe('lstm', () => {
  const train = sine(24 * 40);
  const future = sine(24 * 40 + 24).slice(-24);
  let model: LstmModel;

  beforeAll(async () => {
    await initBackend('wasm');
    model = await lstmFactory.fit(train, { dailyPeriod: 24, budgetMs: 5000, seed: 1 });
  });

  it('the forward pass in TypeScript is the TensorFlow.js network', () => {
    const layout: LstmLayout = { units: 8, patch: 3, patches: 4, horizon: 12, dailyPeriod: 24, weeklyPeriod: 168, dailyLag: true };
    const features = featureCount(layout);
    const net = buildNetwork(tf, layout, 3);
    const [kernel, recurrentKernel, bias, denseKernel, denseBias] = net.getWeights().map((w) => Float32Array.from(w.dataSync()));
    const noise = normals(11);
    const input = Float64Array.from({ length: layout.patches * features }, () => noise());
    const expected = tf.tidy(() => Array.from((net.predict(tf.tensor3d(Float32Array.from(input), [1, layout.patches, features])) as tf.Tensor).dataSync()));
    net.dispose();
    const actual = forward(layout, { kernel: kernel!, recurrentKernel: recurrentKernel!, bias: bias!, denseKernel: denseKernel!, denseBias: denseBias! }, input);
    expect(Math.max(...Array.from(actual, (v, i) => Math.abs(v - expected[i]!)))).toBeLessThan(1e-5);
  });

  it('forecasts a noisy sine of period 24 within 10% of its amplitude, 12 steps direct and 24 chained', () => {
    expect(model.network).toBeDefined();
    expect(model.description).toMatch(/^LSTM\(32\) 36 lags, daily lag, relative to the last value, calendar 24, 12 steps direct/);
    const forecast = model.forecast(24);
    expect(mae(forecast.slice(0, 12), future.slice(0, 12))).toBeLessThan(0.1 * AMPLITUDE);
    expect(mae(forecast, future)).toBeLessThan(0.1 * AMPLITUDE);
    expect(model.forecast(0)).toEqual([]);
  });

  it('update applies the same weights to a longer series', () => {
    const longer = [...train, ...future.slice(0, 12)];
    const updated = model.update(longer);
    expect(updated.network).toBe(model.network);
    expect(updated.n).toBe(longer.length);
    expect(mae(updated.forecast(12), future.slice(12))).toBeLessThan(0.1 * AMPLITUDE);
    expect(model.update(train).forecast(24)).toEqual(model.forecast(24));
  });

  it('follows a level shift to a level the training data never reached (it reads and predicts changes)', () => {
    expect(model.network?.layout.relative).toBe(true);
    const shifted = [...train.slice(0, -48), ...train.slice(-48).map((v) => v + 50)];
    const next = sine(24 * 40 + 12).slice(-12).map((v) => v + 50);
    expect(mae(model.update(shifted).forecast(12), next)).toBeLessThan(0.2 * AMPLITUDE);
  });

  it('toJSON and restoreLstm give identical forecasts', () => {
    const json = JSON.parse(JSON.stringify(model.toJSON())) as Record<string, unknown>;
    expect(json).toMatchObject({ model: 'lstm', version: 1, n: train.length });
    const weights = (json.network as { weights: Array<{ name: string; shape: number[]; data: string }> }).weights;
    expect(weights.map((w) => [w.name, w.shape])).toEqual([
      ['kernel', [8, 128]],
      ['recurrentKernel', [32, 128]],
      ['bias', [128]],
      ['denseKernel', [32, 12]],
      ['denseBias', [12]],
    ]);
    expect(Buffer.from(weights[0]!.data, 'base64').byteLength).toBe(8 * 128 * 4);
    const restored = restoreLstm(json);
    expect(restored.description).toBe(model.description);
    expect(restored.forecast(30)).toEqual(model.forecast(30));
    const longer = [...train, ...future];
    expect(restored.update(longer).forecast(12)).toEqual(model.update(longer).forecast(12));
    expect(() => restoreLstm({ ...json, version: 2 })).toThrow(InvalidInputError);
    // A model stored before relative values existed has no such field: it restores, reading levels.
    const older = structuredClone(json) as { network: { layout: Record<string, unknown> } };
    delete older.network.layout.relative;
    const absolute = restoreLstm(older as unknown as Record<string, unknown>);
    expect(absolute.network?.layout.relative).toBeUndefined();
    expect(absolute.forecast(12).every(Number.isFinite)).toBe(true);
    expect(absolute.forecast(12)).not.toEqual(model.forecast(12));
  });

  it('the same seed gives the same model when training stops before the budget', async () => {
    const y = sine(200);
    const [a, b] = [await lstmFactory.fit(y, { dailyPeriod: 24, seed: 5 }), await lstmFactory.fit(y, { dailyPeriod: 24, seed: 5 })];
    expect(a.description).toBe(b.description);
    expect(a.forecast(12)).toEqual(b.forecast(12));
  });

  it('constant and all-zero series give their constant, without training a network', async () => {
    for (const level of [0, 250]) {
      const fitted = await lstmFactory.fit(new Array<number>(400).fill(level), { dailyPeriod: 24, budgetMs: 1500 });
      const forecast = fitted.forecast(24);
      expect(forecast.every(Number.isFinite)).toBe(true);
      expect(forecast).toEqual(new Array<number>(24).fill(level));
      expect(fitted.description).toMatch(/fallback .*constant series/);
    }
  });

  it('without enough data or budget to train it falls back to seasonal naive, also after a round trip', async () => {
    const short = sine(60);
    const fitted = await lstmFactory.fit(short, { dailyPeriod: 24 });
    expect(fitted.network).toBeUndefined();
    expect(fitted.description).toBe('LSTM fallback to seasonal naive (period 24): series too short (60 steps)');
    expect(fitted.forecast(30)).toEqual(Array.from({ length: 30 }, (_, i) => short[36 + (i % 24)]));
    expect(restoreLstm(fitted.toJSON()).forecast(30)).toEqual(fitted.forecast(30));
    expect((await lstmFactory.fit(train, { dailyPeriod: 24, budgetMs: 0 })).description).toBe('LSTM fallback to seasonal naive (period 24): no budget left to train');
    await expect(lstmFactory.fit([], { dailyPeriod: 24 })).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('fits keep to the budget and leave no tensors behind', async () => {
    const before = tf.memory().numTensors;
    for (const seed of [1, 2]) {
      const started = performance.now();
      await lstmFactory.fit(train, { dailyPeriod: 24, weeklyPeriod: 168, budgetMs: 800, seed });
      // One batch and one validation pass may run past the deadline.
      expect(performance.now() - started).toBeLessThan(800 + 1500);
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('fits with the hyperparameters it is given, and refuses one out of its space naming it', async () => {
    const fitted = await lstmFactory.fit(train, { dailyPeriod: 24, budgetMs: 1500, seed: 1, params: { units: 12, patch: 2, window: 20, learningRate: 0.02, dailyLag: false, loss: 'huber' } });
    expect(fitted.network?.layout).toMatchObject({ units: 12, patch: 2, patches: 10, dailyLag: false });
    expect(fitted.description).toMatch(/^LSTM\(12\) 20 lags, relative to the last value, calendar 24,/);
    expect(restoreLstm(JSON.parse(JSON.stringify(fitted.toJSON())) as Record<string, unknown>).forecast(12)).toEqual(fitted.forecast(12));
    await expect(lstmFactory.fit(train, { dailyPeriod: 24, params: { units: 1000 } })).rejects.toThrow(/1000 is not a valid value of units/);
    await expect(lstmFactory.fit(train, { dailyPeriod: 24, params: { patch: 5 } })).rejects.toThrow(/5 is not a valid value of patch/);
  });

  it('tune searches by TPE within its budget, from the defaults and any given starting point, and leaves no tensors', async () => {
    const before = tf.memory().numTensors;
    const start = { units: 16, patch: 4, window: 48, learningRate: 0.005, dailyLag: false, loss: 'mae' };
    const started = performance.now();
    const tuning = await lstmFactory.tune(train, { dailyPeriod: 24, budgetMs: 4000, seed: 1 }, { initial: [start, { units: 'many' }] });
    const elapsed = performance.now() - started;
    // One trial may run past the deadline by a batch and a validation pass.
    expect(elapsed).toBeLessThan(4000 + 1500);
    expect(tuning).toMatchObject({ method: 'tpe', failedTrials: 0 });
    expect(tuning.trials).toBeGreaterThanOrEqual(3);
    expect(Number.isFinite(tuning.defaultScore)).toBe(true);
    expect(tuning.score).toBeLessThanOrEqual(tuning.defaultScore);
    const chosen = await lstmFactory.fit(train, { dailyPeriod: 24, budgetMs: 2000, seed: 1, params: tuning.params });
    expect(chosen.network?.layout.units).toBe(tuning.params.units);
    expect(mae(chosen.forecast(12), future.slice(0, 12))).toBeLessThan(0.2 * AMPLITUDE);
    expect(tf.memory().numTensors).toBe(before);
    await expect(lstmFactory.tune([], { dailyPeriod: 24, budgetMs: 100 })).rejects.toBeInstanceOf(InvalidInputError);
  });

  it('robust scaling: median and IQR/1.349, 1 for a constant series', () => {
    expect(robustScaling([1, 2, 3, 4, 5, 6, 7, 8])).toEqual({ center: 4.5, scale: 4 / 1.349 });
    expect(robustScaling([3, 3, 3])).toEqual({ center: 3, scale: 1 });
  });
});
