/**
 * A small LSTM forecaster: one LSTM layer over the last hours, a dense layer out.
 *
 * Inputs. The series is standardised robustly on the training window (median, IQR/1.349). The
 * network reads the last `window` steps in patches of `patch` steps (LSTM_DEFAULTS: 36 steps in 12
 * patches of 3; `tune` searches them). Each LSTM step gets the values of its patch; the values one
 * day before the steps HORIZON ahead of them, so that the last patches carry the value one day
 * before every target (when a day is at least HORIZON steps and the series long enough to train
 * without its first day); and sin/cos of the position of its last step in the day and, when
 * `ctx.weeklyPeriod` is set, in the week. Positions count from the start of the series: the models
 * see no timestamps. Patches need fewer sequential LSTM steps than one value a step, and those
 * steps are what training time goes on.
 *
 * Relative values. Every value the network reads, and every value it predicts, is taken relative to
 * the window's last value: it learns the changes ahead, not the level. A level the training data
 * never reached then looks like any other, as it does to the naive forecast. Measured on the traces
 * (`npm run bench -- forecast`, LSTM alone, defaults, 40 s per trace): with absolute values a
 * CPU trace whose level doubled in its last days scored MASE 4.10 (naive 2.76); relative, 0.90.
 * Three other traces went from 2.37 to 0.55, 0.73 to 0.52 and 3.35 to 2.58.
 *
 * Output. Direct multi-step: the dense layer predicts the next HORIZON = 12 steps (the hourly
 * forecast) at once, trained on all 12, so errors do not compound as they do when a one-step model
 * is fed its own forecasts. Longer horizons chain blocks of 12, each fed the ones before.
 *
 * Training runs TensorFlow.js on the process backend (tf-backend.ts): Adam on the loss `loss` (MSE
 * by default; MAE or Huber), epochs of at most SAMPLES_PER_EPOCH windows drawn in a seeded order,
 * early stopping on the validation tail (the last windows, whose targets no training window sees;
 * by MAE, as the back-tests score), keeping the best epoch's weights, and stopping wherever
 * `ctx.budgetMs` runs out. Initial weights and sample order follow `ctx.seed`.
 *
 * Inference is plain TypeScript over the extracted weights (a forward pass is ~70k multiply-adds),
 * so a fitted model holds no tensors (the contract has no dispose), forecasts synchronously and
 * restores without a backend. Its outputs are a dense layer over tanh-bounded states, finite for
 * finite weights. A series too short for enough windows, a budget spent before the first batch, or
 * training without a finite validation loss gives the seasonal naive forecast instead, as the
 * description says.
 *
 * The same seed gives the same model on the same backend when training ends by early stopping or
 * the epoch limit; where the budget cuts it short, where it stops depends on the machine's speed.
 * Choose the backend with `initBackend` before fitting; otherwise the first fit resolves `auto`.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type * as tfjs from '@tensorflow/tfjs';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { uniforms } from './random.js';
import { minimize, validatePoint, type Param, type Point } from './tpe.js';
import { backendTf, type Tf } from './tf-backend.js';
import type { FitContext, FittedModel, Hyperparameters, ModelFactory, Tuning } from './types.js';

/** Steps the network predicts at once. */
const HORIZON = 12;
const BATCH = 128;
const SAMPLES_PER_EPOCH = 1024;
const MAX_EPOCHS = 20;
/** Early stopping: epochs without a validation MAE MIN_IMPROVEMENT below the best so far. */
const PATIENCE = 3;
const MIN_IMPROVEMENT = 0.01;
/** Validation windows: this fraction of all, between the bounds. */
const VALIDATION_FRACTION = 0.15;
const MIN_VALIDATION = 16;
const MAX_VALIDATION = 512;
const MIN_TRAINING = 64;
/** Validation MAE (scaled) below which further epochs cannot matter. */
const GOOD_ENOUGH_LOSS = 1e-4;
const DEFAULT_BUDGET_MS = 20_000;

/** What `tune` searches and `fit` takes as `ctx.params`. */
export interface LstmHyperparameters {
  units: number;
  /** Steps per patch, and steps the window covers (rounded to whole patches). */
  patch: number;
  window: number;
  learningRate: number;
  /** Whether patches carry the values one day before their targets (where the series allows). */
  dailyLag: boolean;
  /** Training loss; validation is always by MAE, as the back-tests score. */
  loss: 'mse' | 'mae' | 'huber';
}

export const LSTM_DEFAULTS: Readonly<LstmHyperparameters> = { units: 32, patch: 3, window: 36, learningRate: 0.01, dailyLag: true, loss: 'mse' };

/** The search space of `tune`: 3 numbers and 3 choices, far more than a grid could cover. */
export const LSTM_SPACE: readonly Param[] = [
  { kind: 'int', name: 'units', low: 8, high: 64, log: true },
  { kind: 'choice', name: 'patch', values: [1, 2, 3, 4, 6] },
  { kind: 'int', name: 'window', low: 12, high: 144, log: true },
  { kind: 'float', name: 'learningRate', low: 1e-3, high: 5e-2, log: true },
  { kind: 'choice', name: 'dailyLag', values: [true, false] },
  { kind: 'choice', name: 'loss', values: ['mse', 'mae', 'huber'] },
];

/** The training loss in TensorFlow.js (Huber with δ = 1 scaled unit: squared near the target, linear beyond). */
function lossFunction(tf: Tf, loss: LstmHyperparameters['loss']): string | ((yTrue: tfjs.Tensor, yPred: tfjs.Tensor) => tfjs.Tensor) {
  if (loss === 'mse') return 'meanSquaredError';
  if (loss === 'mae') return 'meanAbsoluteError';
  return (yTrue, yPred) => tf.losses.huberLoss(yTrue, yPred);
}
/** A trial trains at most this many epochs, and for at most its share of the search budget. */
const TRIAL_EPOCHS = 6;
const TRIALS_PER_BUDGET = 8;

/** `ctx.params` as hyperparameters, the defaults filling what is missing; throws InvalidInputError on a bad value. */
export function lstmHyperparameters(params: FitContext['params']): LstmHyperparameters {
  const hp = { ...LSTM_DEFAULTS, ...(params ?? {}) } as Record<string, unknown>;
  validatePoint(LSTM_SPACE, hp as Point);
  return hp as unknown as LstmHyperparameters;
}

/** What the network reads, fixed at fit. */
export interface LstmLayout {
  units: number;
  /** Steps per patch and patches per window. */
  patch: number;
  patches: number;
  horizon: number;
  /** Season lengths of the calendar features; 0 without. */
  dailyPeriod: number;
  weeklyPeriod: number;
  /** Whether each patch carries the values one day before the steps `horizon` ahead of its own. */
  dailyLag: boolean;
  /**
   * Whether values are read and predicted relative to the window's last value (its changes), so
   * that a level the training data never reached (a level shift) looks like any other to the
   * network, as it does to the naive forecast. Absent in models stored before it existed: false.
   */
  relative?: boolean;
}

/** Robust standardisation: scaled = (y − center) / scale. */
export interface Scaling {
  center: number;
  scale: number;
}

/** Weights in TensorFlow.js' layouts: LSTM kernels [inputs, 4·units] and [units, 4·units] with gates i, f, c, o; dense kernel [units, horizon]. */
export interface LstmWeights {
  kernel: Float32Array;
  recurrentKernel: Float32Array;
  bias: Float32Array;
  denseKernel: Float32Array;
  denseBias: Float32Array;
}

export interface LstmNetwork {
  layout: LstmLayout;
  scaling: Scaling;
  weights: LstmWeights;
  epochs: number;
  /** Validation MAE of the kept weights, in scaled units. */
  validationLoss: number;
}

// ---------------------------------------------------------------------------------------------
// Inputs

/** Inputs per LSTM step. */
export function featureCount(layout: LstmLayout): number {
  return layout.patch * (layout.dailyLag ? 2 : 1) + (layout.dailyPeriod > 0 ? 2 : 0) + (layout.weeklyPeriod > 0 ? 2 : 0);
}

/** Steps before the window that one window's inputs reach back. */
function lagReach(layout: LstmLayout): number {
  return layout.dailyLag ? layout.dailyPeriod - layout.horizon : 0;
}

/** Scaled values the last window of a series needs, ending with the last. */
function inputSpan(layout: LstmLayout): number {
  return layout.patch * layout.patches + lagReach(layout);
}

/** Writes the inputs of the window ending at step `end` (scaled values by absolute step) to `out` at `offset`. */
function writeWindow(value: (t: number) => number, end: number, layout: LstmLayout, out: Float32Array | Float64Array, offset: number): void {
  const { patch, patches, horizon, dailyPeriod, weeklyPeriod, dailyLag } = layout;
  const base = layout.relative ? value(end) : 0;
  let o = offset;
  for (let p = 0; p < patches; p++) {
    const last = end - (patches - 1 - p) * patch;
    for (let i = patch - 1; i >= 0; i--) out[o++] = value(last - i) - base;
    if (dailyLag) for (let i = patch - 1; i >= 0; i--) out[o++] = value(last - i + horizon - dailyPeriod) - base;
    for (const period of [dailyPeriod, weeklyPeriod]) {
      if (period === 0) continue;
      const angle = (2 * Math.PI * (last % period)) / period;
      out[o++] = Math.sin(angle);
      out[o++] = Math.cos(angle);
    }
  }
}

function median(sorted: Float64Array, from = 0, to = sorted.length): number {
  const mid = (from + to - 1) / 2;
  return (sorted[Math.floor(mid)]! + sorted[Math.ceil(mid)]!) / 2;
}

/**
 * Median and IQR/1.349 (the SD of a normal sample), at least a tenth of the SD so that a nearly
 * constant series with rare bursts does not scale the bursts into overflow; 1 for a constant series.
 */
export function robustScaling(y: readonly number[]): Scaling {
  const sorted = Float64Array.from(y).sort();
  const n = sorted.length;
  const center = median(sorted);
  const half = Math.floor(n / 2);
  const iqr = n > 1 ? median(sorted, n - half, n) - median(sorted, 0, half) : 0;
  const mean = y.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(y.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  const scale = Math.max(iqr / 1.349, sd / 10);
  return { center, scale: scale > 1e-9 * Math.max(1, Math.abs(center)) ? scale : 1 };
}

// ---------------------------------------------------------------------------------------------
// The network

/** The network in TensorFlow.js, for training (initial weights from `seed`). */
export function buildNetwork(tf: Tf, layout: LstmLayout, seed: number): tfjs.Sequential {
  const net = tf.sequential();
  // Under tidy: the unitForgetBias initialiser leaks its intermediate tensors (tfjs-layers 4.22); the weights are variables, which tidy keeps.
  tf.tidy(() => {
    net.add(
      tf.layers.lstm({
        units: layout.units,
        inputShape: [layout.patches, featureCount(layout)],
        recurrentActivation: 'sigmoid',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
        // Orthogonal initialisation warns above 2000 weights; the window is short enough for Glorot.
        recurrentInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
        unitForgetBias: true,
      }),
    );
    net.add(tf.layers.dense({ units: layout.horizon, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }) }));
  });
  return net;
}

/** Copies of the network's current weights (reading them creates no tensors). */
function extractWeights(net: tfjs.Sequential): LstmWeights {
  const [kernel, recurrentKernel, bias, denseKernel, denseBias] = net.getWeights().map((w) => Float32Array.from(w.dataSync()));
  return { kernel: kernel!, recurrentKernel: recurrentKernel!, bias: bias!, denseKernel: denseKernel!, denseBias: denseBias! };
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** The network's output (scaled, `horizon` steps) for one window of inputs: the LSTM cell of TensorFlow.js, in plain arithmetic. */
export function forward(layout: LstmLayout, weights: LstmWeights, input: Float64Array): Float64Array {
  const { units: u, patches, horizon } = layout;
  const features = featureCount(layout);
  const { kernel, recurrentKernel, bias, denseKernel, denseBias } = weights;
  const gates = 4 * u;
  const h = new Float64Array(u);
  const c = new Float64Array(u);
  const z = new Float64Array(gates);
  for (let s = 0; s < patches; s++) {
    z.set(bias);
    for (let f = 0; f < features; f++) {
      const x = input[s * features + f]!;
      const row = f * gates;
      for (let j = 0; j < gates; j++) z[j] = z[j]! + x * kernel[row + j]!;
    }
    for (let k = 0; k < u; k++) {
      const hk = h[k]!;
      const row = k * gates;
      for (let j = 0; j < gates; j++) z[j] = z[j]! + hk * recurrentKernel[row + j]!;
    }
    for (let k = 0; k < u; k++) {
      c[k] = sigmoid(z[u + k]!) * c[k]! + sigmoid(z[k]!) * Math.tanh(z[2 * u + k]!);
      h[k] = sigmoid(z[3 * u + k]!) * Math.tanh(c[k]!);
    }
  }
  const out = Float64Array.from(denseBias);
  for (let k = 0; k < u; k++) {
    const hk = h[k]!;
    for (let j = 0; j < horizon; j++) out[j] = out[j]! + hk * denseKernel[k * horizon + j]!;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The fitted model

/** The fitted LSTM, or its seasonal naive fallback when `network` is undefined. */
export class LstmModel implements FittedModel {
  readonly model = 'lstm';
  readonly description: string;

  constructor(
    readonly network: LstmNetwork | undefined,
    /** Season of the seasonal naive forecast (fallback, and guard against non-finite outputs); 1 for the plain naive. */
    readonly period: number,
    /** Length of the series. */
    readonly n: number,
    /** Its last values: as many as the last window needs, and at least one season. */
    readonly tail: readonly number[],
    /** Why there is no network. */
    readonly fallback?: string,
  ) {
    if (!network) {
      this.description = `LSTM fallback to ${period > 1 ? `seasonal naive (period ${period})` : 'naive'}: ${fallback ?? 'no network'}`;
      return;
    }
    const { layout, epochs, validationLoss } = network;
    const inputs = [`${layout.patch * layout.patches} lags`];
    if (layout.dailyLag) inputs.push('daily lag');
    if (layout.relative) inputs.push('relative to the last value');
    const periods = [layout.dailyPeriod, layout.weeklyPeriod].filter((p) => p > 0);
    if (periods.length > 0) inputs.push(`calendar ${periods.join('/')}`);
    this.description = `LSTM(${layout.units}) ${inputs.join(', ')}, ${layout.horizon} steps direct; ${epochs} epochs, validation MAE ${validationLoss.toPrecision(3)}`;
  }

  forecast(horizon: number): number[] {
    if (!Number.isInteger(horizon) || horizon < 0) throw new InvalidInputError(`lstm: horizon must be a non-negative integer, got ${horizon}`);
    const naive = Array.from({ length: horizon }, (_, i) => this.tail[this.tail.length - this.period + (i % this.period)]!);
    if (!this.network) return naive;
    const { layout, scaling, weights } = this.network;
    const first = this.n - this.tail.length;
    const scaled = this.tail.map((v) => (v - scaling.center) / scaling.scale);
    const input = new Float64Array(layout.patches * featureCount(layout));
    while (scaled.length < this.tail.length + horizon) {
      writeWindow((t) => scaled[t - first]!, first + scaled.length - 1, layout, input, 0);
      const base = layout.relative ? scaled[scaled.length - 1]! : 0;
      scaled.push(...Array.from(forward(layout, weights, input), (v) => v + base));
    }
    return naive.map((fallback, i) => {
      const value = scaled[this.tail.length + i]! * scaling.scale + scaling.center;
      return Number.isFinite(value) ? value : fallback;
    });
  }

  update(y: readonly number[]): LstmModel {
    const keep = tailLength(this.network?.layout, this.period);
    if (y.length < keep) throw new InvalidInputError(`lstm: update needs at least ${keep} values, got ${y.length}`);
    return new LstmModel(this.network, this.period, y.length, y.slice(-keep), this.fallback);
  }

  toJSON(): Record<string, unknown> {
    const { network } = this;
    const shapes = network && weightShapes(network.layout);
    const json = network && {
      layout: { ...network.layout },
      scaling: { ...network.scaling },
      weights: WEIGHT_NAMES.map((name) => {
        const data = network.weights[name];
        return { name, shape: shapes![name], data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
      }),
      epochs: network.epochs,
      validationLoss: network.validationLoss,
    };
    return { model: this.model, version: 1, network: json ?? null, period: this.period, n: this.n, tail: [...this.tail], fallback: this.fallback ?? null };
  }
}

const WEIGHT_NAMES = ['kernel', 'recurrentKernel', 'bias', 'denseKernel', 'denseBias'] as const;

function weightShapes(layout: LstmLayout): Record<keyof LstmWeights, number[]> {
  const gates = 4 * layout.units;
  return {
    kernel: [featureCount(layout), gates],
    recurrentKernel: [layout.units, gates],
    bias: [gates],
    denseKernel: [layout.units, layout.horizon],
    denseBias: [layout.horizon],
  };
}

/** Values a model keeps: the last window's inputs and one season for the naive forecast. */
function tailLength(layout: LstmLayout | undefined, period: number): number {
  return Math.max(layout ? inputSpan(layout) : 1, period);
}

/** The season of the naive forecast: a day, unless there is none or the series is shorter. */
function naivePeriod(n: number, dailyPeriod: number): number {
  return dailyPeriod > 1 && n >= dailyPeriod ? dailyPeriod : 1;
}

function fallbackModel(y: readonly number[], dailyPeriod: number, reason: string): LstmModel {
  const period = naivePeriod(y.length, dailyPeriod);
  return new LstmModel(undefined, period, y.length, y.slice(-period), reason);
}

// ---------------------------------------------------------------------------------------------
// Training

/** Training windows in an endless seeded order, reshuffled after each pass over them. */
function sampler(count: number, seed: number): (size: number) => number[] {
  const random = uniforms(seed);
  const order = Array.from({ length: count }, (_, i) => i);
  let cursor = count;
  return (size) => {
    if (cursor + size > count) {
      for (let i = count - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      cursor = 0;
    }
    cursor += size;
    return order.slice(cursor - size, cursor);
  };
}

/** Windows ending at `first`, `first + 1`, …: inputs [count, patches, features] and targets [count, horizon]. */
function windows(scaled: Float64Array, layout: LstmLayout, first: number, count: number): { x: Float32Array; y: Float32Array } {
  const size = layout.patches * featureCount(layout);
  const x = new Float32Array(count * size);
  const y = new Float32Array(count * layout.horizon);
  const value = (t: number) => scaled[t]!;
  for (let k = 0; k < count; k++) {
    const end = first + k;
    writeWindow(value, end, layout, x, k * size);
    const base = layout.relative ? scaled[end]! : 0;
    for (let h = 0; h < layout.horizon; h++) y[k * layout.horizon + h] = scaled[end + 1 + h]! - base;
  }
  return { x, y };
}

/** Windows a series of n steps yields for the layout. */
function windowCount(n: number, layout: LstmLayout): number {
  return n - (inputSpan(layout) - 1) - layout.horizon;
}

/** Training and validation windows: the validation ones last, none of their targets in a training target. */
function split(count: number): { training: number; validation: number } {
  const validation = Math.min(MAX_VALIDATION, Math.max(MIN_VALIDATION, Math.round(VALIDATION_FRACTION * count)));
  return { training: count - validation - HORIZON + 1, validation };
}

function layoutFor(n: number, ctx: FitContext, hp: LstmHyperparameters): LstmLayout {
  const dailyPeriod = Math.round(ctx.dailyPeriod) > 1 ? Math.round(ctx.dailyPeriod) : 0;
  const weekly = Math.round(ctx.weeklyPeriod ?? 0);
  const base = { units: hp.units, patch: hp.patch, patches: Math.max(1, Math.round(hp.window / hp.patch)), horizon: HORIZON, dailyPeriod, weeklyPeriod: weekly > 1 ? weekly : 0, dailyLag: false, relative: true };
  const lagged = { ...base, dailyLag: true };
  const dailyLag = hp.dailyLag && dailyPeriod >= HORIZON && split(windowCount(n, lagged)).training >= MIN_TRAINING;
  return dailyLag ? lagged : base;
}

/** Trains the network, or says why there is none. */
async function train(
  tf: Tf,
  scaled: Float64Array,
  layout: LstmLayout,
  options: { seed: number; deadline: number; learningRate: number; loss: LstmHyperparameters['loss']; maxEpochs?: number },
): Promise<Omit<LstmNetwork, 'scaling'> | { failure: string }> {
  const { seed, deadline } = options;
  const first = inputSpan(layout) - 1;
  const { training, validation } = split(windowCount(scaled.length, layout));
  const features = featureCount(layout);
  const trainSet = windows(scaled, layout, first, training);
  const valSet = windows(scaled, layout, first + training + HORIZON - 1, validation);
  const xTrain = tf.tensor3d(trainSet.x, [training, layout.patches, features]);
  const yTrain = tf.tensor2d(trainSet.y, [training, layout.horizon]);
  const xVal = tf.tensor3d(valSet.x, [validation, layout.patches, features]);
  const yVal = tf.tensor2d(valSet.y, [validation, layout.horizon]);
  const net = buildNetwork(tf, layout, seed);
  const optimizer = tf.train.adam(options.learningRate);
  net.compile({ optimizer, loss: lossFunction(tf, options.loss) });
  const next = sampler(training, seed);
  const batch = Math.min(BATCH, training);
  const batchesPerEpoch = Math.ceil(Math.min(SAMPLES_PER_EPOCH, training) / batch);
  let best: { weights: LstmWeights; loss: number; epochs: number } | undefined;
  let batches = 0;
  try {
    let stale = 0;
    for (let epoch = 1; epoch <= (options.maxEpochs ?? MAX_EPOCHS) && stale < PATIENCE; epoch++) {
      for (let b = 0; b < batchesPerEpoch && performance.now() < deadline; b++) {
        const [xb, yb] = tf.tidy(() => {
          const rows = tf.tensor1d(next(batch), 'int32');
          return [tf.gather(xTrain, rows), tf.gather(yTrain, rows)];
        });
        try {
          await net.trainOnBatch(xb, yb);
        } finally {
          xb.dispose();
          yb.dispose();
        }
        batches++;
        // Let timers and I/O (heartbeats) run between batches.
        await nextTurn();
      }
      if (batches === 0) break;
      const loss = tf.tidy(() => tf.losses.absoluteDifference(yVal, net.predict(xVal) as tfjs.Tensor).dataSync()[0]!);
      if (!Number.isFinite(loss)) break;
      if (!best || loss < best.loss * (1 - MIN_IMPROVEMENT)) {
        best = { weights: extractWeights(net), loss, epochs: epoch };
        stale = 0;
      } else stale++;
      if (loss < GOOD_ENOUGH_LOSS || performance.now() >= deadline) break;
    }
  } finally {
    net.dispose();
    optimizer.dispose();
    tf.dispose([xTrain, yTrain, xVal, yVal]);
  }
  if (batches === 0) return { failure: 'no budget left to train' };
  if (!best || !Object.values(best.weights).every((w: Float32Array) => w.every(Number.isFinite))) return { failure: 'training diverged' };
  return { layout, weights: best.weights, epochs: best.epochs, validationLoss: best.loss };
}

/** The series scaled, and the layout, or why the series is too short for it. */
function prepare(y: readonly number[], ctx: FitContext, hp: LstmHyperparameters): { layout: LstmLayout; scaling: Scaling; scaled: Float64Array } | { layout: LstmLayout; short: string } {
  const layout = layoutFor(y.length, ctx, hp);
  if (split(windowCount(y.length, layout)).training < MIN_TRAINING) return { layout, short: `series too short (${y.length} steps)` };
  const scaling = robustScaling(y);
  return { layout, scaling, scaled: Float64Array.from(y, (v) => (v - scaling.center) / scaling.scale) };
}

/** The LSTM of the module comment, trained within `ctx.budgetMs`, with `ctx.params` (LSTM_DEFAULTS without). */
export const lstmFactory = {
  model: 'lstm',
  async fit(y: readonly number[], ctx: FitContext): Promise<LstmModel> {
    if (y.length === 0) throw new InvalidInputError('lstm: cannot fit an empty series');
    const hp = lstmHyperparameters(ctx.params);
    const deadline = performance.now() + (ctx.budgetMs ?? DEFAULT_BUDGET_MS);
    const prepared = prepare(y, ctx, hp);
    if ('short' in prepared) return fallbackModel(y, prepared.layout.dailyPeriod, prepared.short);
    // A constant series has nothing to learn, and its naive forecast is exact: a network trained
    // for a budget only comes near it.
    if (y.every((v) => v === y[0])) return fallbackModel(y, prepared.layout.dailyPeriod, 'constant series');
    const { layout, scaling, scaled } = prepared;
    const trained = await train(await backendTf(), scaled, layout, { seed: ctx.seed ?? 0, deadline, learningRate: hp.learningRate, loss: hp.loss });
    if ('failure' in trained) return fallbackModel(y, layout.dailyPeriod, trained.failure);
    const period = naivePeriod(y.length, layout.dailyPeriod);
    return new LstmModel({ ...trained, scaling }, period, y.length, y.slice(-tailLength(layout, period)));
  },

  /**
   * TPE over LSTM_SPACE within `ctx.budgetMs`. Each trial trains at most TRIAL_EPOCHS epochs for at
   * most 1/TRIALS_PER_BUDGET of the budget, and scores the validation MAE of its best epoch: the
   * last windows of `y`, whose targets no training window sees. The first trial is the defaults
   * (or `options.initial`, e.g. the last search's best). Every trial uses the same seed, so that
   * they differ by their hyperparameters only.
   */
  async tune(y: readonly number[], ctx: FitContext & { budgetMs: number }, options: { initial?: readonly Hyperparameters[] } = {}): Promise<Tuning> {
    if (y.length === 0) throw new InvalidInputError('lstm: cannot tune on an empty series');
    const tf = await backendTf();
    const started = performance.now();
    const deadline = started + ctx.budgetMs;
    const trialMs = ctx.budgetMs / TRIALS_PER_BUDGET;
    const objective = async (point: Point): Promise<number> => {
      const hp = lstmHyperparameters(point);
      const prepared = prepare(y, ctx, hp);
      if ('short' in prepared) throw new InvalidInputError(prepared.short);
      const trialDeadline = Math.min(deadline, performance.now() + trialMs);
      const trained = await train(tf, prepared.scaled, prepared.layout, { seed: ctx.seed ?? 0, deadline: trialDeadline, learningRate: hp.learningRate, loss: hp.loss, maxEpochs: TRIAL_EPOCHS });
      if ('failure' in trained) throw new Error(trained.failure);
      return trained.validationLoss;
    };
    // Points from an earlier search that no longer fit the space are skipped, not an error.
    const initial = [...(options.initial ?? []), { ...LSTM_DEFAULTS }].flatMap((p) => {
      try {
        return [lstmHyperparameters(p) as unknown as Point];
      } catch {
        return [];
      }
    });
    const result = await minimize(objective, LSTM_SPACE, { seed: ctx.seed ?? 1, deadline, initial, startup: initial.length + 2 });
    const defaults = result.trials.find((t) => LSTM_SPACE.every((p) => t.point[p.name] === (LSTM_DEFAULTS as unknown as Point)[p.name]));
    return {
      params: result.best.point,
      score: result.best.value,
      objective: 'validation MAE (scaled) of the last windows',
      method: 'tpe',
      trials: result.trials.length,
      failedTrials: result.trials.filter((t) => !Number.isFinite(t.value)).length,
      seconds: result.seconds,
      defaultScore: defaults?.value ?? NaN,
    };
  },
} satisfies ModelFactory;

// ---------------------------------------------------------------------------------------------
// Serialisation

const layoutSchema = z.object({
  units: z.number().int().min(1),
  patch: z.number().int().min(1),
  patches: z.number().int().min(1),
  horizon: z.number().int().min(1),
  dailyPeriod: z.number().int().min(0),
  weeklyPeriod: z.number().int().min(0),
  dailyLag: z.boolean(),
  relative: z.boolean().optional(),
});

const jsonSchema = z.object({
  model: z.literal('lstm'),
  version: z.literal(1),
  network: z
    .object({
      layout: layoutSchema,
      scaling: z.object({ center: z.number(), scale: z.number().positive() }),
      weights: z.array(z.object({ name: z.string(), shape: z.array(z.number().int().min(1)), data: z.base64() })),
      epochs: z.number().int().min(0),
      validationLoss: z.number(),
    })
    .nullable(),
  period: z.number().int().min(1),
  n: z.number().int().min(1),
  tail: z.array(z.number()).min(1),
  fallback: z.string().nullable(),
});

/** Float32 values of base64 text (little-endian, as toJSON wrote them on any common platform). */
function float32s(base64: string): Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.byteLength % 4 !== 0) throw new InvalidInputError('restoreLstm: weight data is not a whole number of float32 values');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** The model `toJSON` described, ready to forecast or update. */
export function restoreLstm(json: Record<string, unknown>): LstmModel {
  const parsed = jsonSchema.safeParse(json);
  if (!parsed.success) throw new InvalidInputError(`restoreLstm: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  const { network, period, n, tail, fallback } = parsed.data;
  if (tail.length < tailLength(network?.layout, period) || tail.length > n) throw new InvalidInputError('restoreLstm: tail does not match the layout');
  if (!network) return new LstmModel(undefined, period, n, tail, fallback ?? undefined);
  if (network.layout.dailyLag && network.layout.dailyPeriod < network.layout.horizon) throw new InvalidInputError('restoreLstm: a daily lag needs a day of at least horizon steps');
  const shapes = weightShapes(network.layout);
  const byName = new Map(network.weights.map((w) => [w.name, w]));
  const weights = {} as LstmWeights;
  for (const name of WEIGHT_NAMES) {
    const entry = byName.get(name);
    const data = entry && float32s(entry.data);
    const size = shapes[name].reduce((a, b) => a * b, 1);
    if (!entry || !data || entry.shape.join() !== shapes[name].join() || data.length !== size) {
      throw new InvalidInputError(`restoreLstm: weight ${name} must have shape [${shapes[name].join(', ')}]`);
    }
    weights[name] = data;
  }
  return new LstmModel({ ...network, weights }, period, n, tail, fallback ?? undefined);
}
