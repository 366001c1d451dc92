/** Listen addresses (`host:port`), without the configuration's dependencies: the CLI parses its options with it before loading anything. */
const LISTEN = /^(\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

/** A listen address, `host:port` (IPv6 in brackets: `[::1]:9464`); undefined when it is not one. */
export function parseListenAddress(text: string): { host: string; port: number } | undefined {
  const m = LISTEN.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}
