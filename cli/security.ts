import type { Command } from 'commander';
import { parseListenAddress } from '../src/listen-address.js';
import { ShardcastError } from '../src/errors.js';
import { listenAddress } from './args.js';
import { configOf } from './program-config.js';

/** `shardcast codec-server`: the encryption keys, served to the Temporal UI and CLI. */
export function registerSecurityCommands(program: Command): void {
  program
    .command('codec-server')
    .description("serve Temporal's remote codec protocol (POST /encode, /decode) with the configured encryption keys, so the Temporal UI and the temporal CLI show encrypted payloads")
    .option('--listen <host:port>', 'address to listen on (default: codecServer.listen, 127.0.0.1:8888)', listenAddress)
    .option('--cors-origin <origin...>', 'browser origin(s) allowed to call it: the Temporal UI, e.g. http://127.0.0.1:8233 (default: codecServer.corsOrigins)')
    .action(async (opts: { listen?: string; corsOrigin?: string[] }) => {
      const cfg = await configOf(program, { 'codecServer.listen': opts.listen, 'codecServer.corsOrigins': opts.corsOrigin });
      const [{ startCodecServer }, { payloadCodecOf }, { ENCRYPTION_KEYS_ENV }] = await Promise.all([
        import('../client/codec-server.js'),
        import('../client/connection.js'),
        import('../client/encryption.js'),
      ]);
      const codec = payloadCodecOf(cfg);
      if (!codec) {
        throw new ShardcastError('CONFIG', `no encryption key is configured: set temporal.encryption.keyFile (or $${ENCRYPTION_KEYS_ENV})`);
      }
      const { host, port } = parseListenAddress(cfg.codecServer.listen)!;
      const server = await startCodecServer({ codec, host, port, corsOrigins: cfg.codecServer.corsOrigins });
      const address = server.address();
      const shown = typeof address === 'object' && address ? `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}` : cfg.codecServer.listen;
      console.log(`codec server http://${shown} (keys ${codec.keyIds.join(', ')}; encrypting with ${codec.currentKeyId}; CORS ${cfg.codecServer.corsOrigins.join(', ') || 'none'})`);
      await new Promise((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
}
