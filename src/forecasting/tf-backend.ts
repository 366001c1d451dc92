/**
 * The TensorFlow.js backend of the process. `initBackend` resolves a choice once and caches it
 * (a different choice later switches the backend); `backendTf` gives the models their `tf`.
 *
 * - `tensorflow`: native libtensorflow through `@tensorflow/tfjs-node-gpu`, else `@tensorflow/tfjs-node`.
 *   Neither is a dependency (their install downloads libtensorflow), so they are imported at run
 *   time only, when a user has installed one.
 * - `wasm`, `cpu`: tfjs' own backends, always available.
 * - `auto`: tensorflow when a native package is installed and loads, else wasm, else cpu.
 *
 * A native package registers its backend on the copy of `@tensorflow/tfjs` it imports itself, which
 * is not necessarily the copy this project depends on (npm nests it when the versions differ).
 * Model code therefore never imports `@tensorflow/tfjs` for values (types only) and always works
 * with the namespace `backendTf()` returns: the one the chosen backend was registered on.
 */
import * as tfjs from '@tensorflow/tfjs';
import { InvalidInputError, ShardcastError } from '../errors.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
/** The TensorFlow.js namespace, as `@tensorflow/tfjs` and the native packages export it. */
export type Tf = typeof tfjs;

/** Native packages, preferred first. */
export const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

/** The requested backend cannot be used in this process. */
export class BackendUnavailableError extends ShardcastError {
  readonly backend: BackendChoice;
  constructor(backend: BackendChoice, message: string, options?: { cause?: unknown }) {
    super('BACKEND_UNAVAILABLE', `tfjs backend "${backend}": ${message}`, options);
    this.backend = backend;
  }
}

interface Resolved {
  name: string;
  tf: Tf;
}

let active: { choice: BackendChoice; resolved: Promise<Resolved> } | undefined;

/** Makes `choice` the active backend, resolving it unless it already is; returns the backend's name. */
export async function initBackend(choice: BackendChoice): Promise<string> {
  return (await activate(choice)).name;
}

/** The `tf` namespace of the active backend, resolving `auto` first when no backend was chosen yet. */
export async function backendTf(): Promise<Tf> {
  return (await (active?.resolved ?? activate('auto'))).tf;
}

function activate(choice: BackendChoice): Promise<Resolved> {
  if (!(BACKEND_CHOICES as readonly unknown[]).includes(choice)) {
    throw new InvalidInputError(`tfjs backend: ${JSON.stringify(choice)} is not one of ${BACKEND_CHOICES.join(', ')}`);
  }
  if (active?.choice === choice) return active.resolved;
  const previous = active;
  const resolved = resolve(choice);
  active = { choice, resolved };
  // A choice that failed leaves the backend as it was.
  resolved.catch(() => {
    if (active?.resolved === resolved) active = previous;
  });
  return resolved;
}

async function resolve(choice: BackendChoice): Promise<Resolved> {
  if (choice === 'tensorflow' || choice === 'auto') {
    const native = await importNative();
    if (native.tf) {
      if (await native.tf.setBackend('tensorflow')) return { name: 'tensorflow', tf: native.tf };
      if (choice === 'tensorflow') throw new BackendUnavailableError(choice, 'the native backend failed to initialise');
    } else if (choice === 'tensorflow') {
      const detail = native.failure ? ` (loading failed: ${native.failure.message})` : '';
      throw new BackendUnavailableError(
        choice,
        `install ${NATIVE_PACKAGES[1]}, or ${NATIVE_PACKAGES[0]} for CUDA, next to shardcast, or choose wasm or cpu${detail}`,
        { cause: native.failure },
      );
    }
  }
  if (choice === 'wasm' || choice === 'auto') {
    await import('@tensorflow/tfjs-backend-wasm');
    if (await tfjs.setBackend('wasm')) return { name: 'wasm', tf: tfjs };
    if (choice === 'wasm') throw new BackendUnavailableError(choice, 'the WebAssembly backend failed to initialise');
  }
  if (await tfjs.setBackend('cpu')) return { name: 'cpu', tf: tfjs };
  throw new BackendUnavailableError(choice, 'the cpu backend failed to initialise');
}

/** The first native package that loads; `failure` is why an installed one did not. */
async function importNative(): Promise<{ tf?: Tf; failure?: Error }> {
  let failure: Error | undefined;
  for (const name of NATIVE_PACKAGES) {
    try {
      const module = (await import(name)) as { default?: Tf } & Tf;
      // CommonJS packages: module.exports, re-exports included, is the default export.
      return { tf: module.default ?? module };
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (err as Error).message.includes(`'${name}'`);
      if (!missing) failure ??= err as Error;
    }
  }
  return { failure };
}
