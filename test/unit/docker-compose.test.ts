import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import type pg from 'pg';
import { ENV_OVERRIDES, loadConfig, parseConfig } from '../../src/config.js';
import { createMetricsRegistry } from '../../src/metrics/metrics.js';

const root = path.resolve(import.meta.dirname, '../..');
const composeFile = path.join(root, 'docker-compose.yml');
const productionFile = path.join(root, 'deploy/compose.production.yml');

type Service = Record<string, unknown>;
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown> | null;
}
interface Mount {
  type: string;
  source?: string;
  target: string;
}
interface PortMapping {
  host?: string;
  hostIp?: string;
  container: string;
  raw: string;
}

const REQUIRED_SERVICES = [
  'temporal-postgresql',
  'temporal',
  'temporal-admin-tools',
  'temporal-ui',
  'catalog',
  'node-1',
  'node-2',
  'node-3',
  'worker',
  'prometheus',
  'grafana',
];
const NODE_SERVICES = ['node-1', 'node-2', 'node-3'];
const SEARCH_ATTRIBUTES: Record<string, string> = {
  ShardcastTable: 'Keyword',
  ShardcastGroup: 'Keyword',
  ShardcastOperation: 'Keyword',
  ShardcastPhase: 'Keyword',
  ShardcastSourceNode: 'Keyword',
  ShardcastTargetNode: 'Keyword',
  ShardcastShard: 'Int',
};
/** The metrics the worker exports; alerts and panels may use these (and Prometheus' own `up`). */
const WORKER_METRICS = [
  'shardcast_map_version',
  'shardcast_nodes',
  'shardcast_shards',
  'shardcast_catalog_up',
  'shardcast_node_predicted_utilisation',
  'shardcast_node_capacity',
  'shardcast_plan_feasible',
  'shardcast_plan_actions',
  'shardcast_plan_timestamp_seconds',
  'shardcast_movements_last_day',
];
/** The janitor's metrics: alerted on, not (yet) on a dashboard panel. */
const JANITOR_METRICS = ['shardcast_leftovers', 'shardcast_janitor_last_run_timestamp_seconds', 'shardcast_janitor_fix_failures'];
/** Every metric the worker's registry has (its gauges read the catalog only when scraped: none is here). */
const EXPORTED = createMetricsRegistry({} as pg.Pool)
  .getMetricsAsArray()
  .map((m) => m.name);
const POSTGRES_PORT = '5432';

function readYaml(file: string): unknown {
  // Docker Compose honours YAML merge keys (`<<: *anchor`); the yaml package needs them switched on.
  return parse(readFileSync(file, 'utf8'), { merge: true });
}

const compose = readYaml(composeFile) as Compose;
const services = compose.services ?? {};
const serviceNames = Object.keys(services);

function service(name: string): Service {
  const found = services[name];
  if (!found) throw new Error(`docker-compose.yml has no service "${name}"`);
  return found;
}

/** Compose variable interpolation with every variable unset: `${X:-d}` → d, `$$` → `$`. */
function interpolate(value: string): string {
  return value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (match: string, _braced?: string, operator?: string, argument?: string) => {
      if (match === '$$') return '$';
      if (operator === '-') return argument ?? '';
      if (operator === '?') throw new Error(`${match} requires a variable to be set`);
      return '';
    },
  );
}

function environment(name: string): Record<string, string> {
  const env = service(name).environment;
  const result: Record<string, string> = {};
  if (Array.isArray(env)) {
    for (const entry of env as string[]) {
      const [key, ...rest] = String(entry).split('=');
      result[key!] = interpolate(rest.join('='));
    }
  } else if (env && typeof env === 'object') {
    for (const [key, value] of Object.entries(env)) result[key] = interpolate(String(value ?? ''));
  }
  return result;
}

function dependsOn(name: string): Record<string, string> {
  const deps = service(name).depends_on;
  if (Array.isArray(deps)) return Object.fromEntries((deps as string[]).map((d) => [d, 'service_started']));
  if (deps && typeof deps === 'object') {
    return Object.fromEntries(
      Object.entries(deps as Record<string, { condition?: string } | null>).map(([d, spec]) => [d, spec?.condition ?? 'service_started']),
    );
  }
  return {};
}

function mounts(name: string): Mount[] {
  const volumes = (service(name).volumes ?? []) as unknown[];
  return volumes.map((entry): Mount => {
    if (typeof entry === 'string') {
      const parts = interpolate(entry).split(':');
      if (parts.length === 1) return { type: 'volume', target: parts[0]! };
      const source = parts[0]!;
      const type = /^[./~]/.test(source) ? 'bind' : 'volume';
      return { type, source, target: parts[1]! };
    }
    const long = entry as { type: string; source?: string; target: string };
    return { type: long.type, source: long.source, target: long.target };
  });
}

function ports(name: string): PortMapping[] {
  const list = (service(name).ports ?? []) as unknown[];
  return list.map((entry): PortMapping => {
    if (typeof entry === 'object' && entry !== null) {
      const long = entry as { published?: string | number; target: string | number; host_ip?: string };
      return {
        host: long.published === undefined ? undefined : String(long.published),
        hostIp: long.host_ip,
        container: String(long.target),
        raw: JSON.stringify(entry),
      };
    }
    const raw = interpolate(String(entry));
    const parts = raw.replace(/\/(tcp|udp)$/, '').split(':');
    const container = parts.pop()!;
    const host = parts.pop();
    return { host, hostIp: parts.join(':') || undefined, container, raw };
  });
}

function commandText(name: string): string {
  const { command, entrypoint } = service(name);
  return [entrypoint, command]
    .flat()
    .filter((part) => part !== undefined && part !== null)
    .map(String)
    .join(' ');
}

/** The repository file a container path of the worker image stands for (the Dockerfile copies the repo to /app). */
function repoPathOfWorkerFile(containerPath: string): string {
  expect(containerPath, 'SHARDCAST_CONFIG must be an absolute path inside /app').toMatch(/^\/app\//);
  return path.join(root, containerPath.slice('/app/'.length));
}

/** The repository file or directory bind-mounted at `target` in `serviceName`. */
function boundSource(serviceName: string, target: string): string {
  const mount = mounts(serviceName).find((m) => m.type === 'bind' && path.posix.normalize(m.target) === path.posix.normalize(target));
  expect(mount, `${serviceName} bind-mounts nothing at ${target}`).toBeDefined();
  return path.resolve(root, mount!.source!);
}

function splitHostPort(address: string): { host: string; port: string } {
  const match = /^([^:/\s]+):(\d+)$/.exec(address);
  expect(match, `"${address}" is not host:port`).not.toBeNull();
  return { host: match![1]!, port: match![2]! };
}

function containerPorts(name: string): string[] {
  return ports(name).map((p) => p.container);
}

/** Metric names a PromQL expression selects (not functions, keywords, label names or durations). */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, '{}')
    .replace(/\[[^\]]*\]/g, '[]')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const keywords = new Set(['and', 'or', 'unless', 'by', 'without', 'bool', 'offset']);
  const names = [...stripped.matchAll(/(?<![\w:.])[a-zA-Z_:][\w:]*/g)]
    .filter((m) => !/^\s*\(/.test(stripped.slice(m.index + m[0].length)))
    .map((m) => m[0])
    .filter((w) => !keywords.has(w));
  return [...new Set(names)];
}

const hasComposeV1 = spawnSync('docker-compose', ['version'], { encoding: 'utf8', timeout: 30_000 }).status === 0;
const hasDockerCompose = (() => {
  const result = spawnSync('docker', ['compose', 'version'], { stdio: 'ignore', timeout: 15_000 });
  return result.status === 0;
})();

describe('docker-compose.yml', () => {
  it('defines every service the deployment needs', () => {
    for (const name of REQUIRED_SERVICES) {
      expect(serviceNames, `missing service "${name}"`).toContain(name);
    }
    for (const name of serviceNames) {
      const svc = service(name);
      expect(svc.image !== undefined || svc.build !== undefined, `service "${name}" has neither image nor build`).toBe(true);
    }
  });

  it('depends only on services that exist, with conditions they can satisfy', () => {
    const conditions = ['service_started', 'service_healthy', 'service_completed_successfully'];
    for (const name of serviceNames) {
      for (const [target, condition] of Object.entries(dependsOn(name))) {
        expect(serviceNames, `service "${name}" depends_on unknown service "${target}"`).toContain(target);
        expect(conditions, `service "${name}" → "${target}": unknown condition "${condition}"`).toContain(condition);
        if (condition === 'service_healthy') {
          expect(service(target).healthcheck, `"${name}" waits for "${target}" to be healthy, but "${target}" has no healthcheck`).toBeDefined();
        }
        expect(target, `service "${name}" depends on itself`).not.toBe(name);
      }
    }
    expect(dependsOn('temporal')['temporal-postgresql']).toBe('service_healthy');
    const workerDeps = dependsOn('worker');
    for (const name of ['catalog', ...NODE_SERVICES]) {
      expect(workerDeps[name], `worker must wait for "${name}" to be healthy`).toBe('service_healthy');
    }
    expect(Object.keys(workerDeps), 'worker must depend on temporal').toContain('temporal');
    expect(Object.keys(dependsOn('grafana')), 'grafana must depend on prometheus').toContain('prometheus');
  });

  it('declares every named volume it uses and uses every one it declares', () => {
    const declared = Object.keys(compose.volumes ?? {});
    const used = new Set<string>();
    for (const name of serviceNames) {
      for (const mount of mounts(name)) {
        if (mount.type !== 'volume' || mount.source === undefined) continue;
        used.add(mount.source);
        expect(declared, `service "${name}" uses volume "${mount.source}", which is not declared under top-level volumes`).toContain(mount.source);
      }
    }
    for (const volume of declared) {
      expect([...used], `top-level volume "${volume}" is declared but no service mounts it`).toContain(volume);
    }
  });

  it('publishes no host port twice', () => {
    const owners = new Map<string, string>();
    for (const name of serviceNames) {
      for (const mapping of ports(name)) {
        if (mapping.host === undefined) continue;
        const key = `${mapping.hostIp ?? '0.0.0.0'}:${mapping.host}`;
        expect(owners.get(key), `host port ${key} is published by both "${owners.get(key)}" and "${name}"`).toBeUndefined();
        owners.set(key, name);
      }
    }
    const published = (name: string) => ports(name).map((p) => `${p.host}:${p.container}`);
    expect(published('catalog')).toContain('5440:5432');
    expect(published('node-1')).toContain('5441:5432');
    expect(published('node-2')).toContain('5442:5432');
    expect(published('node-3')).toContain('5443:5432');
    expect(published('temporal')).toContain('7233:7233');
    expect(published('temporal-ui')).toContain('8233:8080');
  });

  it('bind-mounts and builds only paths that exist in the repository', () => {
    for (const name of serviceNames) {
      for (const mount of mounts(name)) {
        if (mount.type !== 'bind') continue;
        const source = path.resolve(root, mount.source!);
        expect(existsSync(source), `service "${name}" bind-mounts ${mount.source}, which does not exist`).toBe(true);
      }
      const build = service(name).build as string | { context?: string; dockerfile?: string } | undefined;
      if (build === undefined) continue;
      const context = path.resolve(root, typeof build === 'string' ? build : (build.context ?? '.'));
      expect(existsSync(context) && statSync(context).isDirectory(), `service "${name}": build context ${context} is not a directory`).toBe(true);
      const dockerfile = path.resolve(context, typeof build === 'string' ? 'Dockerfile' : (build.dockerfile ?? 'Dockerfile'));
      expect(existsSync(dockerfile), `service "${name}": Dockerfile ${dockerfile} does not exist`).toBe(true);
    }
  });

  it('builds the worker image from sources that exist and runs it as a non-root user', () => {
    const build = service('worker').build as { context: string; dockerfile: string };
    const context = path.resolve(root, build.context);
    const dockerfile = readFileSync(path.resolve(context, build.dockerfile), 'utf8');
    expect(dockerfile).toMatch(/^FROM node:20-bookworm-slim\b/m);
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev\b/m);
    // Every source directory the worker runs from is in the image.
    for (const dir of ['src', 'workflows', 'activities', 'workers', 'cli', 'client', 'bin', 'migrations']) {
      expect(dockerfile, `Dockerfile copies ${dir}/`).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    }
    const ignored = existsSync(path.join(context, '.dockerignore'))
      ? readFileSync(path.join(context, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
      : [];
    expect(ignored, '.dockerignore must keep node_modules out of the build context').toContain('node_modules');
    const copies = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].map((m) => m[1]!.trim().split(/\s+/).slice(0, -1));
    expect(copies.length, 'the Dockerfile copies nothing').toBeGreaterThan(0);
    for (const source of copies.flat()) {
      expect(existsSync(path.join(context, source)), `the Dockerfile copies ${source}, which does not exist`).toBe(true);
      expect(ignored, `${source} is copied by the Dockerfile but excluded by .dockerignore`).not.toContain(source);
    }
    const users = [...dockerfile.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    expect(users.length, 'the Dockerfile never switches to a non-root user').toBeGreaterThan(0);
    expect(['root', '0'], `the Dockerfile's last USER is ${users.at(-1)}`).not.toContain(users.at(-1));
    expect(service('worker').command).toEqual(['node', 'bin/shardcast.js', 'worker']);
  });

  it('publishes every port on 127.0.0.1 unless SHARDCAST_BIND_ADDRESS says otherwise', () => {
    let published = 0;
    for (const name of serviceNames) {
      for (const mapping of ports(name)) {
        published++;
        expect(mapping.hostIp, `service "${name}" publishes ${mapping.raw} on every interface`).toBe('127.0.0.1');
        const raw = ((service(name).ports ?? []) as unknown[]).map(String).find((p) => interpolate(p) === mapping.raw);
        expect(raw, `service "${name}" port ${mapping.raw}`).toMatch(/^\$\{SHARDCAST_BIND_ADDRESS:-127\.0\.0\.1\}:/);
      }
    }
    expect(published).toBeGreaterThan(0);
  });

  it('pins every image to an exact version', () => {
    for (const name of serviceNames) {
      const image = service(name).image as string | undefined;
      if (image === undefined) continue;
      expect(image, `service "${name}": ${image} is not pinned (a tag with at least major.minor, or a digest)`).toMatch(/(:[^:@]*\d+\.\d+[^:@]*|@sha256:[0-9a-f]{64})$/);
      expect(image, `service "${name}"`).not.toMatch(/:latest$/);
    }
  });

  it('has a production override without a default password', () => {
    const production = readYaml(productionFile) as Compose;
    const passwordKeys = /PASSWORD|PWD|_URL$/;
    // Every variable of the base file whose default is a password is required in production.
    let overridden = 0;
    for (const name of serviceNames) {
      const env = (service(name).environment ?? {}) as Record<string, unknown>;
      for (const [key, value] of Object.entries(env)) {
        const text = String(value ?? '');
        if (!passwordKeys.test(key) || !/\$\{[A-Z_]*PASSWORD:-/.test(text)) continue;
        const prod = String((production.services[name]?.environment as Record<string, unknown> | undefined)?.[key] ?? '');
        expect(prod, `production: ${name}.${key} keeps the default password of ${text}`).toMatch(/\$\{[A-Z_]*PASSWORD:\?[^}]+\}/);
        expect(() => interpolate(prod), `production: ${name}.${key} must fail while its variable is unset`).toThrow(/requires a variable/);
        expect(prod).not.toMatch(/:-/);
        overridden++;
      }
    }
    expect(overridden, 'no default password found in docker-compose.yml to override').toBeGreaterThanOrEqual(8);
    for (const [name, svc] of Object.entries(production.services)) {
      expect(serviceNames, `the production override names unknown service "${name}"`).toContain(name);
      for (const [key, value] of Object.entries((svc.environment ?? {}) as Record<string, unknown>)) {
        expect(String(value), `production: ${name}.${key} has a default`).not.toMatch(/\$\{[A-Z_]+:?-/);
      }
    }
    expect(String((production.services.grafana!.environment as Record<string, unknown>).GF_AUTH_ANONYMOUS_ENABLED)).toBe('false');

    // The worker's production config registers every node with a DSN that names the worker's password variable, never a password.
    const workerEnv = production.services.worker!.environment as Record<string, unknown>;
    const configFile = repoPathOfWorkerFile(String(workerEnv.SHARDCAST_CONFIG));
    expect(existsSync(configFile), `${configFile} does not exist`).toBe(true);
    const nodes = parseConfig(JSON.parse(readFileSync(configFile, 'utf8'))).nodes;
    expect(nodes.count).toBe(0);
    expect(nodes.register.map((n) => n.name).sort()).toEqual([...NODE_SERVICES].sort());
    for (const node of nodes.register) {
      const dsn = new URL(node.dsn);
      expect(dsn.password, `node "${node.name}": the production DSN holds a password`).toBe('');
      expect(NODE_SERVICES).toContain(dsn.hostname);
      const variable = dsn.searchParams.get('passwordenv');
      expect(variable, `node "${node.name}": the production DSN names no password variable`).toBeTruthy();
      expect(String(workerEnv[variable!]), `the worker does not set ${variable} to the nodes' password`).toBe(String((production.services[dsn.hostname]!.environment as Record<string, unknown>).POSTGRES_PASSWORD));
    }

    // The application role's password (app.password) is a variable of its own, required, never the superuser's.
    const appPassword = String(workerEnv.SHARDCAST_APP_PASSWORD ?? '');
    expect(ENV_OVERRIDES.SHARDCAST_APP_PASSWORD).toBe('app.password');
    expect(appPassword, 'production: the worker does not set SHARDCAST_APP_PASSWORD').toMatch(/^\$\{SHARDCAST_APP_PASSWORD:\?[^}]+\}$/);
    expect(() => interpolate(appPassword)).toThrow(/requires a variable/);
    const config = loadConfig({ cwd: root, env: { SHARDCAST_CONFIG: configFile, SHARDCAST_APP_PASSWORD: 'from-the-environment' } });
    expect(config.app.password, 'the worker reads its SHARDCAST_APP_PASSWORD as app.password').toBe('from-the-environment');
  });

  it.skipIf(!hasDockerCompose)('production: `docker compose config` names the missing password variable', () => {
    const args = ['compose', '--project-directory', root, '-f', composeFile, '-f', productionFile, 'config', '-q'];
    const env = { ...process.env };
    for (const v of ['SHARDCAST_POSTGRES_PASSWORD', 'SHARDCAST_APP_PASSWORD', 'TEMPORAL_POSTGRES_PASSWORD', 'GRAFANA_ADMIN_PASSWORD']) delete env[v];
    const missing = spawnSync('docker', args, { cwd: root, env, encoding: 'utf8', timeout: 60_000 });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/PASSWORD/);
    const set = spawnSync('docker', args, { cwd: root, env: { ...env, SHARDCAST_POSTGRES_PASSWORD: 'a', SHARDCAST_APP_PASSWORD: 'd', TEMPORAL_POSTGRES_PASSWORD: 'b', GRAFANA_ADMIN_PASSWORD: 'c' }, encoding: 'utf8', timeout: 60_000 });
    expect(set.status, set.stderr).toBe(0);
  });

  it('runs the catalog and the nodes on postgres:18 with the settings shard moves need', () => {
    for (const name of ['catalog', ...NODE_SERVICES]) {
      expect(service(name).image, `service "${name}" image`).toMatch(/^postgres:18\.\d+$/);
      expect(JSON.stringify(service(name).healthcheck ?? null), `service "${name}" needs a pg_isready healthcheck`).toContain('pg_isready');
      // postgres:18 images keep data under /var/lib/postgresql/18/docker and refuse a volume at /var/lib/postgresql/data.
      const dataMounts = mounts(name).filter((m) => m.type === 'volume' && m.source !== undefined);
      expect(dataMounts.map((m) => m.target), `service "${name}" must keep its data in a named volume at /var/lib/postgresql`).toEqual(['/var/lib/postgresql']);
      expect(environment(name).POSTGRES_DB, `service "${name}" database`).toBe('shardcast');
    }
    const dataVolumes = ['catalog', ...NODE_SERVICES].map((name) => mounts(name).find((m) => m.type === 'volume')?.source);
    expect(new Set(dataVolumes).size, 'the catalog and every node need their own volume').toBe(dataVolumes.length);
    for (const name of NODE_SERVICES) {
      const command = commandText(name);
      for (const setting of ['wal_level=logical', 'max_prepared_transactions', 'shared_preload_libraries=pg_stat_statements', 'track_io_timing=on']) {
        expect(command, `node service "${name}" must start postgres with ${setting}`).toContain(setting);
      }
      expect(command).toMatch(/^postgres\b/);
    }
    // The catalog takes part in the cutover's two-phase commit.
    expect(commandText('catalog'), 'the catalog must start postgres with max_prepared_transactions').toMatch(/max_prepared_transactions=[1-9]/);
    expect(service('temporal-postgresql').image).toMatch(/^postgres:16\.\d+$/);
    expect(mounts('temporal-postgresql').find((m) => m.type === 'volume')?.target).toBe('/var/lib/postgresql/data');
  });

  it('configures the worker consistently with the Shardcast config schema and the other services', () => {
    const env = environment('worker');
    const shardcastVariables = Object.keys(env).filter((key) => key.startsWith('SHARDCAST_'));
    expect(shardcastVariables.length).toBeGreaterThan(0);
    for (const key of shardcastVariables) {
      // SHARDCAST_CONFIG names the file itself (read by loadConfig), every other one overrides a key.
      if (key === 'SHARDCAST_CONFIG') continue;
      expect(Object.keys(ENV_OVERRIDES), `worker sets ${key}, which is not a config override (ENV_OVERRIDES)`).toContain(key);
    }

    // The config file the worker reads exists in the repository and is valid on its own.
    expect(env.SHARDCAST_CONFIG, 'worker must set SHARDCAST_CONFIG').toBeDefined();
    const configFile = repoPathOfWorkerFile(env.SHARDCAST_CONFIG!);
    expect(path.relative(path.join(root, 'deploy'), configFile).startsWith('..'), `${configFile} is not under deploy/`).toBe(false);
    expect(existsSync(configFile), `SHARDCAST_CONFIG points to ${configFile}, which does not exist`).toBe(true);
    const fileConfig = parseConfig(JSON.parse(readFileSync(configFile, 'utf8')));
    expect(fileConfig.nodes.count, 'the compose deployment starts no embedded nodes').toBe(0);
    expect(String(fileConfig.metrics.port), `${path.basename(configFile)} metrics.port disagrees with the worker's SHARDCAST_METRICS_PORT`).toBe(
      env.SHARDCAST_METRICS_PORT,
    );

    // What the worker actually runs with: the file plus the environment overrides.
    const config = loadConfig({ cwd: root, env: { ...env, SHARDCAST_CONFIG: configFile } });

    const catalog = new URL(config.catalog.url ?? '');
    expect(serviceNames, `catalog URL host "${catalog.hostname}" is not a service`).toContain(catalog.hostname);
    const catalogEnv = environment(catalog.hostname);
    expect(catalog.port || POSTGRES_PORT, 'catalog URL port must be the container port').toBe(POSTGRES_PORT);
    expect(catalog.pathname.slice(1), 'catalog URL database').toBe(catalogEnv.POSTGRES_DB);
    expect(decodeURIComponent(catalog.username), 'catalog URL user').toBe(catalogEnv.POSTGRES_USER);
    expect(decodeURIComponent(catalog.password), 'catalog URL password').toBe(catalogEnv.POSTGRES_PASSWORD);

    const temporal = splitHostPort(config.temporal.address ?? '');
    expect(serviceNames, `temporal address host "${temporal.host}" is not a service`).toContain(temporal.host);
    expect(containerPorts(temporal.host), `service "${temporal.host}" does not serve port ${temporal.port}`).toContain(temporal.port);

    expect(String(config.metrics.port), 'the worker must publish its metrics port').toBe(env.SHARDCAST_METRICS_PORT);
    expect(containerPorts('worker'), 'worker metrics port is not published').toContain(String(config.metrics.port));

    const registered = config.nodes.register;
    expect(registered.map((n) => n.name).sort()).toEqual([...NODE_SERVICES].sort());
    const hosts = new Set<string>();
    for (const node of registered) {
      const dsn = new URL(node.dsn);
      expect(NODE_SERVICES, `node "${node.name}": DSN host "${dsn.hostname}" is not a node service`).toContain(dsn.hostname);
      hosts.add(dsn.hostname);
      const nodeEnv = environment(dsn.hostname);
      expect(dsn.port || POSTGRES_PORT, `node "${node.name}": DSN port`).toBe(POSTGRES_PORT);
      expect(dsn.pathname.slice(1), `node "${node.name}": DSN database must match ${dsn.hostname}'s POSTGRES_DB`).toBe(nodeEnv.POSTGRES_DB);
      expect(decodeURIComponent(dsn.username), `node "${node.name}": DSN user`).toBe(nodeEnv.POSTGRES_USER);
      expect(decodeURIComponent(dsn.password), `node "${node.name}": DSN password (with default variables)`).toBe(nodeEnv.POSTGRES_PASSWORD);
    }
    expect(hosts.size, 'two registered nodes share one node service').toBe(registered.length);
  });

  it('has Prometheus scrape the worker on its metrics port', () => {
    const prometheusConfig = readYaml(boundSource('prometheus', '/etc/prometheus/prometheus.yml')) as {
      rule_files?: string[];
      scrape_configs: { job_name: string; static_configs?: { targets: string[] }[] }[];
    };
    const targets = prometheusConfig.scrape_configs.flatMap((job) => (job.static_configs ?? []).flatMap((s) => s.targets.map((t) => ({ job: job.job_name, t }))));
    expect(targets.length, 'prometheus.yml scrapes nothing').toBeGreaterThan(0);
    for (const { job, t } of targets) {
      const { host, port } = splitHostPort(t);
      expect(serviceNames, `job "${job}" scrapes ${t}, but "${host}" is not a service`).toContain(host);
      expect(containerPorts(host), `job "${job}" scrapes ${t}, but "${host}" does not serve port ${port}`).toContain(port);
    }
    const workerPort = environment('worker').SHARDCAST_METRICS_PORT;
    expect(targets, `no job scrapes worker:${workerPort}`).toContainEqual({ job: 'shardcast-worker', t: `worker:${workerPort}` });

    // Every rule file Prometheus loads is mounted from the repository.
    const ruleFiles = prometheusConfig.rule_files ?? [];
    expect(ruleFiles.length, 'prometheus.yml loads no rule file').toBeGreaterThan(0);
    for (const ruleFile of ruleFiles) {
      const inContainer = path.posix.resolve('/etc/prometheus', ruleFile);
      expect(existsSync(boundSource('prometheus', inContainer)), `rule file ${inContainer} is not mounted from the repository`).toBe(true);
    }
  });

  it('alerts only on metrics the worker exports', () => {
    expect(EXPORTED).toEqual(expect.arrayContaining([...WORKER_METRICS, ...JANITOR_METRICS]));
    const rules = readYaml(boundSource('prometheus', '/etc/prometheus/prometheus-rules.yml')) as {
      groups: { name: string; rules: { alert?: string; record?: string; expr: string; for?: string }[] }[];
    };
    const all = rules.groups.flatMap((g) => g.rules);
    const alerts = all.map((r) => r.alert);
    expect(alerts).toContain('ShardcastCatalogDown');
    expect(alerts).toContain('ShardcastWorkerDown');
    for (const rule of all) {
      expect(rule.alert ?? rule.record, 'a rule without a name').toBeTruthy();
      expect(typeof rule.expr, `rule ${rule.alert} has no expr`).toBe('string');
      for (const metric of metricNames(rule.expr)) {
        expect([...EXPORTED, 'up'], `rule ${rule.alert} uses unknown metric "${metric}"`).toContain(metric);
      }
    }
    const catalogDown = all.find((r) => r.alert === 'ShardcastCatalogDown')!;
    expect(catalogDown.expr.replace(/\s+/g, '')).toBe('shardcast_catalog_up==0');
    expect(catalogDown.for).toBe('2m');
    expect(all.find((r) => r.alert === 'ShardcastWorkerDown')!.expr).toContain('up{job="shardcast-worker"}');
  });

  it('registers all of Shardcast\'s search attributes in the namespace the worker uses', () => {
    const registered = new Map<string, { type: string; namespace?: string; address?: string }>();
    for (const name of serviceNames) {
      const text = commandText(name);
      for (const line of text.split('\n')) {
        if (!/search-attribute create\b/.test(line)) continue;
        const option = (flag: string) => new RegExp(`--${flag}[ =]+['"]?([^\\s'"]+)`).exec(line)?.[1];
        const attribute = option('name');
        expect(attribute, `cannot read --name in: ${line.trim()}`).toBeDefined();
        registered.set(attribute!, { type: option('type') ?? '', namespace: option('namespace'), address: option('address') });
      }
    }
    const config = loadConfig({ cwd: root, env: { ...environment('worker'), SHARDCAST_CONFIG: repoPathOfWorkerFile(environment('worker').SHARDCAST_CONFIG!) } });
    for (const [attribute, type] of Object.entries(SEARCH_ATTRIBUTES)) {
      const found = registered.get(attribute);
      expect(found, `search attribute ${attribute} is never registered`).toBeDefined();
      expect(found!.type, `search attribute ${attribute} type`).toBe(type);
      expect(found!.namespace ?? 'default', `search attribute ${attribute} namespace`).toBe(config.temporal.namespace);
      if (found!.address) {
        expect(serviceNames, `search attribute ${attribute} registered at unknown host ${found!.address}`).toContain(splitHostPort(found!.address).host);
      }
    }
    expect(environment('temporal-admin-tools').TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(environment('temporal').DEFAULT_NAMESPACE ?? 'default', 'auto-setup must create the namespace the worker uses').toBe(config.temporal.namespace);
  });

  it('provisions Grafana with the Prometheus datasource and a dashboard of the worker metrics', () => {
    const provisioning = boundSource('grafana', '/etc/grafana/provisioning');
    const datasourceFile = path.join(provisioning, 'datasources', 'prometheus.yml');
    const providerFile = path.join(provisioning, 'dashboards', 'shardcast.yml');
    expect(existsSync(datasourceFile), `${datasourceFile} is missing`).toBe(true);
    expect(existsSync(providerFile), `${providerFile} is missing`).toBe(true);

    const { datasources } = readYaml(datasourceFile) as { datasources: { uid: string; type: string; url: string }[] };
    const prometheus = datasources.find((d) => d.uid === 'prometheus');
    expect(prometheus, 'no datasource with uid "prometheus"').toBeDefined();
    expect(prometheus!.type).toBe('prometheus');
    const url = new URL(prometheus!.url);
    expect(serviceNames, `datasource URL host "${url.hostname}" is not a service`).toContain(url.hostname);
    expect(containerPorts(url.hostname), `"${url.hostname}" does not serve port ${url.port}`).toContain(url.port);

    const { providers } = readYaml(providerFile) as { providers: { type: string; options: { path: string } }[] };
    expect(providers.length).toBeGreaterThan(0);
    const dashboardDirs = providers.map((p) => boundSource('grafana', p.options.path));
    const dashboards = dashboardDirs.flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => path.join(dir, f)));
    expect(dashboards.map((f) => path.basename(f))).toContain('shardcast.json');

    for (const file of dashboards) {
      let dashboard: unknown;
      expect(() => (dashboard = JSON.parse(readFileSync(file, 'utf8'))), `${file} is not valid JSON`).not.toThrow();
      const uids: unknown[] = [];
      const exprs: string[] = [];
      const walk = (value: unknown): void => {
        if (Array.isArray(value)) return value.forEach(walk);
        if (value === null || typeof value !== 'object') return;
        for (const [key, child] of Object.entries(value)) {
          if (key === 'datasource') uids.push(typeof child === 'object' && child !== null ? (child as { uid?: unknown }).uid : child);
          if (key === 'expr' && typeof child === 'string') exprs.push(child);
          walk(child);
        }
      };
      walk(dashboard);
      expect(uids.length, `${file} references no datasource`).toBeGreaterThan(0);
      for (const uid of uids) expect(uid, `${file} references a datasource other than uid "prometheus"`).toBe('prometheus');
      const used = new Set(exprs.flatMap(metricNames));
      for (const metric of WORKER_METRICS) expect([...used], `${path.basename(file)} has no panel for ${metric}`).toContain(metric);
      for (const metric of used) expect(WORKER_METRICS, `${path.basename(file)} queries unknown metric "${metric}"`).toContain(metric);
    }
  });

  it.skipIf(!hasDockerCompose)('is accepted by `docker compose config`', () => {
    const result = spawnSync('docker', ['compose', '--project-directory', root, '-f', composeFile, 'config', '-q'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.status, `docker compose config -q failed:\n${result.stderr}`).toBe(0);
  });

  // Debian's docker-compose 1.29 (apt-get install docker-compose) validates the file without an engine;
  // it predates the Compose spec's top-level `name`, so it checks a copy without that one key.
  it.skipIf(!hasComposeV1)('is accepted by `docker-compose config` (v1)', () => {
    const copy = path.join(root, `.docker-compose-check-${process.pid}.yml`);
    writeFileSync(copy, readFileSync(composeFile, 'utf8').replace(/^name:.*\n/m, ''));
    try {
      const result = spawnSync('docker-compose', ['-f', copy, 'config', '-q'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
      expect(result.status, `docker-compose config -q failed:\n${result.stderr}`).toBe(0);
    } finally {
      rmSync(copy, { force: true });
    }
  });
});
