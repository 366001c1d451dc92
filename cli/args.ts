/** Parsers of numeric command-line arguments, shared by the commands: a bad value is commander's one-line error. */
import { InvalidArgumentError } from 'commander';
import { parseListenAddress } from '../src/listen-address.js';

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number of seconds, 0 or more');
  return n;
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number of seconds, 0 or more');
  return n;
}

/** `host:port` to listen on; kept as text, the config checks it again. */
export function listenAddress(value: string): string {
  if (!parseListenAddress(value)) throw new InvalidArgumentError('expected host:port (e.g. 127.0.0.1:9464, or [::1]:9464)');
  return value;
}

/** A comma-separated list, blanks dropped. */
export function list(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
}

export function shardId(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a shard id (a positive integer)');
  return n;
}
