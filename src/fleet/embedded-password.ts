import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The embedded PostgreSQLs' password, generated at the first start, in the data directory (mode 0600). */
export const EMBEDDED_PASSWORD_FILE = 'postgres-password';

/** What data directories made before the password was generated were initialised with. */
const LEGACY_PASSWORD = 'shardcast';

export function embeddedPasswordFile(dataDir: string): string {
  return path.join(path.resolve(dataDir), EMBEDDED_PASSWORD_FILE);
}

/** The password kept in `dataDir`, or undefined when there is none yet; a file others could read is made private first. */
export function readEmbeddedPassword(dataDir: string): string | undefined {
  return readSecret(embeddedPasswordFile(dataDir));
}

/**
 * The password of the embedded servers in `dataDir`: the kept one, or a new random one (24 bytes,
 * base64url, so it needs no escaping in a URL) written with mode 0600 before any server is
 * initialised. A directory whose servers were initialised before this existed keeps their old
 * password (`legacy`), so they still answer; the caller warns.
 */
export function ensureEmbeddedPassword(dataDir: string, initialised: boolean): { password: string; created: boolean; legacy: boolean } {
  const kept = readEmbeddedPassword(dataDir);
  if (kept) return { password: kept, created: false, legacy: kept === LEGACY_PASSWORD };
  const password = initialised ? LEGACY_PASSWORD : randomPassword();
  writeSecret(embeddedPasswordFile(dataDir), password);
  return { password, created: true, legacy: initialised };
}

/** The application role's password (src/catalog/app-role.ts), generated like the servers' own. */
export const APP_PASSWORD_FILE = 'app-password';

export function appPasswordFile(dataDir: string): string {
  return path.join(path.resolve(dataDir), APP_PASSWORD_FILE);
}

/** The application role's password kept in `dataDir`, generated (mode 0600) when there is none. */
export function ensureAppPassword(dataDir: string): { password: string; created: boolean } {
  const file = appPasswordFile(dataDir);
  const kept = readSecret(file);
  if (kept) return { password: kept, created: false };
  const password = randomPassword();
  writeSecret(file, password);
  return { password, created: true };
}

function randomPassword(): string {
  return randomBytes(24).toString('base64url');
}

function readSecret(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  const secret = readFileSync(file, 'utf8').trim();
  return secret === '' ? undefined : secret;
}

function writeSecret(file: string, secret: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
}
