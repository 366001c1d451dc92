/**
 * The PostgreSQL TLS settings (postgres.sslmode, …; src/catalog/pg-tls.ts applies them). Imports
 * nothing, so that the configuration (src/config.ts), which every command loads, does not load pg
 * with them.
 */

export const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

export interface PgTlsSettings {
  sslmode?: SslMode;
  /** PEM file of the CA(s) that signed the servers' certificates (verify-ca, verify-full). */
  sslrootcert?: string;
  /** PEM files of a client certificate and its key, for servers that ask for one. */
  sslcert?: string;
  sslkey?: string;
  /**
   * The CA file's path as the nodes' PostgreSQL servers see it, for the subscriptions they open to
   * each other (default: sslrootcert, right when the worker and the nodes share the file system).
   */
  nodeSslrootcert?: string;
}
