import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ENV_OVERRIDES, loadConfig, localUrl, parseConfig, parseListenAddress } from '../../src/config.js';
import { ConfigError, ShardcastError } from '../../src/errors.js';

let dir: string;
/** A directory with no shardcast.config.* in it, so loadConfig finds no default file. */
let emptyDir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardcast-config-test-'));
  emptyDir = path.join(dir, 'empty');
  mkdirSync(emptyDir);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Runs fn, expects a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(ShardcastError);
    expect((err as ConfigError).code).toBe('INVALID_CONFIG');
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('defaults', () => {
  it('parseConfig({}) fills every default', () => {
    expect(parseConfig({})).toEqual({
      dataDir: '.shardcast',
      catalog: { port: 5440, database: 'shardcast' },
      nodes: { count: 3, basePort: 5441, database: 'shardcast', maxSlotWalKeepSize: '10GB', register: [] },
      postgres: { user: 'postgres' },
      app: { provision: true, user: 'shardcast_app' },
      temporal: { namespace: 'default', port: 7233, uiPort: 8233, taskQueue: 'shardcast-control', tls: { enabled: false }, encryption: {} },
      codecServer: { listen: '127.0.0.1:8888', corsOrigins: [] },
      metrics: { port: 9464, host: '127.0.0.1' },
      clock: { compression: 1 },
      collection: { intervalSeconds: 15, retentionDays: 35 },
      forecast: { backend: 'auto', retrainAt: '03:00', catchupWindowMinutes: 60, trainingDays: 30, budgetSeconds: 1.2, searchSeconds: 0.8, threads: 1, batchSize: 10, parallelBatches: 4 },
      movement: {
        requireApproval: false,
        graceSeconds: 300,
        maxPerNode: 2,
        catchUpLagBytes: 1048576,
        statementTimeoutSeconds: 60,
        idleInTransactionTimeoutSeconds: 30,
        keepAliveSeconds: 10,
        governor: { enabled: true, latencyRatio: 1.5, probeIntervalMs: 25, maxLagBytes: 67108864, minBaselineMs: 0.5, maxPauseMs: 500, chunkRows: 10000 },
      },
      janitor: { intervalMinutes: 10, fix: true },
      restore: { requireApproval: true, parallelism: 4, batchesPerUnit: 2 },
      retention: { at: '02:30', intervalHours: 0, enabled: true, rebalanceCheck: true, minShardBytes: 64 * 1024 * 1024 },
      planning: {
        mode: 'on',
        targetUtilisation: 0.7,
        bound: 'upper95',
        hysteresisSeconds: 7200,
        maxConcurrentMovesPerNode: 2,
        minBenefitPerGiB: 0.5,
        horizonSteps: 12,
        replanMinutes: 5,
        isolateTenantShare: 0.5,
        provisioner: 'standby',
        weights: { load: 1, bytes: 0.05, locality: 0.5, alignment: 0.5 },
      },
      tableCreation: { maximumAttempts: 5, initialRetryIntervalMs: 1000 },
    });
  });

  it('loadConfig without file, env or overrides gives the defaults', () => {
    const cfg = loadConfig({ cwd: emptyDir, env: {} });
    expect(cfg).toEqual(parseConfig({}));
    expect(cfg.catalog.url).toBeUndefined();
    expect(cfg.temporal.address).toBeUndefined();
  });

  it('a partial section keeps the defaults of its other keys', () => {
    const cfg = parseConfig({ temporal: { port: 7300 } });
    expect(cfg.temporal).toEqual({ namespace: 'default', port: 7300, uiPort: 8233, taskQueue: 'shardcast-control', tls: { enabled: false }, encryption: {} });
  });

  it('registered nodes get a state default, and no capacity (calibrated) unless given', () => {
    const cfg = parseConfig({ nodes: { count: 0, register: [{ name: 'eu-1', dsn: 'postgresql://u:p@h:5432/db' }] } });
    expect(cfg.nodes.register).toEqual([{ name: 'eu-1', dsn: 'postgresql://u:p@h:5432/db', state: 'active' }]);
  });

  it('localUrl encodes user and password', () => {
    const cfg = parseConfig({ postgres: { user: 'admin', password: 'p@ss/w:rd' } });
    expect(localUrl(cfg, 6543, 'db1')).toBe('postgres://admin:p%40ss%2Fw%3Ard@127.0.0.1:6543/db1');
  });
});

describe('files', () => {
  it('reads a JSON file', () => {
    const file = write('a.json', JSON.stringify({ dataDir: '/var/sc', temporal: { port: 7400, namespace: 'prod' } }));
    const cfg = loadConfig({ file, env: {} });
    expect(cfg.dataDir).toBe('/var/sc');
    expect(cfg.temporal.port).toBe(7400);
    expect(cfg.temporal.namespace).toBe('prod');
    expect(cfg.catalog.port).toBe(5440);
  });

  it('reads a YAML file', () => {
    const file = write('a.yaml', 'catalog:\n  url: postgres://u:p@db:5432/cat\nnodes:\n  count: 0\n  register:\n    - name: n1\n      dsn: postgres://u:p@n1/db\n      capacity: 250\n');
    const cfg = loadConfig({ file, env: {} });
    expect(cfg.catalog.url).toBe('postgres://u:p@db:5432/cat');
    expect(cfg.nodes.count).toBe(0);
    expect(cfg.nodes.register).toEqual([{ name: 'n1', dsn: 'postgres://u:p@n1/db', capacity: 250, state: 'active' }]);
  });

  it('an empty YAML file means all defaults', () => {
    const file = write('empty.yaml', '');
    expect(loadConfig({ file, env: {} })).toEqual(parseConfig({}));
  });

  it('resolves a relative file against cwd', () => {
    write('rel.json', '{"metrics":{"port":0}}');
    expect(loadConfig({ file: 'rel.json', cwd: dir, env: {} }).metrics.port).toBe(0);
  });

  it('finds shardcast.config.yaml in cwd by default', () => {
    const cwd = path.join(dir, 'with-default');
    mkdirSync(cwd);
    writeFileSync(path.join(cwd, 'shardcast.config.yaml'), 'temporal:\n  uiPort: 8999\n');
    expect(loadConfig({ cwd, env: {} }).temporal.uiPort).toBe(8999);
  });

  it('$SHARDCAST_CONFIG names the file when no file is given', () => {
    const file = write('from-env.json', '{"postgres":{"user":"alice"}}');
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_CONFIG: file } }).postgres.user).toBe('alice');
  });

  it('an explicit file wins over $SHARDCAST_CONFIG', () => {
    const a = write('explicit.json', '{"postgres":{"user":"explicit"}}');
    const b = write('envfile.json', '{"postgres":{"user":"envfile"}}');
    expect(loadConfig({ file: a, cwd: emptyDir, env: { SHARDCAST_CONFIG: b } }).postgres.user).toBe('explicit');
  });

  it('invalid JSON is a ConfigError naming the file', () => {
    const file = write('bad.json', '{\n  "postgres": {"password": hunter2}\n}');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.key).toBe('(file)');
    // One line, with the position, and without quoting the file (it may hold a password).
    expect(err.message).toBe(`config: (file): ${file} is not valid JSON at line 2, column 28`);
    expect(err.message).not.toContain('hunter2');
  });

  it('invalid YAML is a ConfigError naming the file', () => {
    const file = write('bad.yaml', 'temporal:\n  port: 1\n   bad: : x\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.key).toBe('(file)');
    expect(err.message).toMatch(new RegExp(`^config: \\(file\\): ${file.replaceAll('.', '\\.')} is not valid YAML at line 2, column 9 \\([a-z ]+\\)$`));
    expect(err.message).not.toContain('\n');
  });

  it('an unreadable file is a ConfigError', () => {
    const missing = path.join(dir, 'does-not-exist.json');
    const err = configError(() => loadConfig({ file: missing, env: {} }));
    expect(err.key).toBe('(file)');
    expect(err.message).toMatch(new RegExp(`^config: \\(file\\): cannot read ${missing.replaceAll('.', '\\.')}: ENOENT`));
    expect(err.message).not.toContain('\n');
    const asDir = configError(() => loadConfig({ file: emptyDir, env: {} }));
    expect(asDir.message).toMatch(/^config: \(file\): cannot read .*EISDIR/);
  });

  it('a file that holds a list is rejected', () => {
    const file = write('list.yaml', '- a\n- b\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.key).toBe('(root)');
    expect(err.message).toBe(`config: (root): ${file} must hold an object`);
  });
});

describe('environment', () => {
  it('SHARDCAST_TEMPORAL_PORT becomes a number', () => {
    const cfg = loadConfig({ cwd: emptyDir, env: { SHARDCAST_TEMPORAL_PORT: '9999' } });
    expect(cfg.temporal.port).toBe(9999);
    expect(typeof cfg.temporal.port).toBe('number');
  });

  it('SHARDCAST_CATALOG_URL and SHARDCAST_TEMPORAL_ADDRESS stay strings', () => {
    const cfg = loadConfig({
      cwd: emptyDir,
      env: { SHARDCAST_CATALOG_URL: 'postgres://u:p@cat.example:5432/shardcast', SHARDCAST_TEMPORAL_ADDRESS: 'temporal.example:7233' },
    });
    expect(cfg.catalog.url).toBe('postgres://u:p@cat.example:5432/shardcast');
    expect(cfg.temporal.address).toBe('temporal.example:7233');
  });

  it('a numeric password stays a string', () => {
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_POSTGRES_PASSWORD: '123456' } }).postgres.password).toBe('123456');
  });

  it('nested multi-word keys are mapped', () => {
    const cfg = loadConfig({
      cwd: emptyDir,
      env: { SHARDCAST_NODES_BASE_PORT: '6000', SHARDCAST_TABLE_CREATION_INITIAL_RETRY_INTERVAL_MS: '250', SHARDCAST_DATA_DIR: '/data/sc' },
    });
    expect(cfg.nodes.basePort).toBe(6000);
    expect(cfg.tableCreation.initialRetryIntervalMs).toBe(250);
    expect(cfg.dataDir).toBe('/data/sc');
  });

  it('SHARDCAST_FORECAST_BACKEND chooses the tfjs backend', () => {
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_FORECAST_BACKEND: 'wasm' } }).forecast.backend).toBe('wasm');
  });

  it('empty variables are ignored', () => {
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_TEMPORAL_PORT: '' } }).temporal.port).toBe(7233);
  });

  it('a non-numeric port variable is a ConfigError on the key', () => {
    const err = configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_TEMPORAL_PORT: 'abc' } }));
    expect(err.key).toBe('temporal.port');
    expect(err.message).toBe('config: temporal.port: expected a number, got a string');
  });

  it('the copy governor: set by variables, a bad value is a ConfigError naming its key', () => {
    const cfg = loadConfig({ cwd: emptyDir, env: { SHARDCAST_MOVEMENT_GOVERNOR_ENABLED: 'false', SHARDCAST_MOVEMENT_GOVERNOR_LATENCY_RATIO: '2.5' } });
    expect(cfg.movement.governor).toMatchObject({ enabled: false, latencyRatio: 2.5, chunkRows: 10000 });
    const err = configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_MOVEMENT_GOVERNOR_LATENCY_RATIO: '0.5' } }));
    expect(err.key).toBe('movement.governor.latencyRatio');
    expect(configError(() => parseConfig({ movement: { governor: { chunkRows: 0 } } })).key).toBe('movement.governor.chunkRows');
  });

  it('every override variable maps to an existing leaf key', () => {
    const defaults = parseConfig({}) as unknown as Record<string, Record<string, unknown>>;
    for (const [variable, key] of Object.entries(ENV_OVERRIDES)) {
      expect(variable).toMatch(/^SHARDCAST_[A-Z_]+$/);
      const parts = key.split('.');
      // Optional keys (catalog.url, temporal.address, temporal.encryption.keyFile) are absent from the defaults but belong to a section.
      expect(defaults).toHaveProperty(parts.length > 1 ? parts.slice(0, -1) : parts);
      const expected = 'SHARDCAST_' + key.replace(/\./g, '_').replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
      expect(variable).toBe(expected);
    }
  });
});

describe('lists and listen addresses', () => {
  it('reads a comma-separated list from the environment', () => {
    const cfg = loadConfig({ cwd: emptyDir, env: { SHARDCAST_CODEC_SERVER_CORS_ORIGINS: 'http://127.0.0.1:8233, https://ui.example.com' } });
    expect(cfg.codecServer.corsOrigins).toEqual(['http://127.0.0.1:8233', 'https://ui.example.com']);
    const err = configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_CODEC_SERVER_CORS_ORIGINS: 'http://ui/path' } }));
    expect(err.key).toBe('codecServer.corsOrigins.0');
  });

  it('reads the replanning interval from the environment, 0 (hourly, after the forecast) to 60 minutes', () => {
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_REPLAN_MINUTES: '0' } }).planning.replanMinutes).toBe(0);
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_REPLAN_MINUTES: '15' } }).planning.replanMinutes).toBe(15);
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_ISOLATE_TENANT_SHARE: '0' } }).planning.isolateTenantShare).toBe(0);
    expect(configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_ISOLATE_TENANT_SHARE: '1.2' } })).key).toBe('planning.isolateTenantShare');
    for (const bad of ['61', '-1', '2.5']) {
      expect(configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_REPLAN_MINUTES: bad } })).key, bad).toBe('planning.replanMinutes');
    }
  });

  it('reads the planner\'s horizon from the environment, 12 to 24 steps (the forecast\'s two hours)', () => {
    expect(loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_HORIZON_STEPS: '24' } }).planning.horizonSteps).toBe(24);
    for (const bad of ['30', '6', '12.5']) {
      expect(configError(() => loadConfig({ cwd: emptyDir, env: { SHARDCAST_PLANNING_HORIZON_STEPS: bad } })).key, bad).toBe('planning.horizonSteps');
    }
  });

  it('parses host:port, IPv6 in brackets, and refuses the rest', () => {
    expect(parseListenAddress('0.0.0.0:9464')).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(parseListenAddress('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseListenAddress('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    for (const bad of ['9464', 'host:', ':9464', 'host:70000', 'a b:1', '::1:80']) expect(parseListenAddress(bad), bad).toBeUndefined();
    expect(configError(() => parseConfig({ codecServer: { listen: 'nowhere' } })).message).toBe('config: codecServer.listen: host:port, port 0-65535');
  });
});

describe('precedence: file < env < overrides', () => {
  it('env beats the file and overrides beat env', () => {
    const file = write('prec.json', JSON.stringify({ temporal: { port: 1111, uiPort: 2222, namespace: 'file' }, catalog: { port: 3333 } }));
    const fileOnly = loadConfig({ file, env: {} });
    expect(fileOnly.temporal.port).toBe(1111);

    const withEnv = loadConfig({ file, env: { SHARDCAST_TEMPORAL_PORT: '4444', SHARDCAST_CATALOG_PORT: '5555' } });
    expect(withEnv.temporal.port).toBe(4444);
    expect(withEnv.catalog.port).toBe(5555);
    expect(withEnv.temporal.uiPort).toBe(2222); // untouched file value kept
    expect(withEnv.temporal.namespace).toBe('file');

    const withOverrides = loadConfig({
      file,
      env: { SHARDCAST_TEMPORAL_PORT: '4444', SHARDCAST_CATALOG_PORT: '5555' },
      overrides: { 'temporal.port': 6666, 'catalog.url': 'postgres://o@h/db', 'temporal.address': undefined },
    });
    expect(withOverrides.temporal.port).toBe(6666);
    expect(withOverrides.catalog.port).toBe(5555);
    expect(withOverrides.catalog.url).toBe('postgres://o@h/db');
    expect(withOverrides.temporal.address).toBeUndefined();
  });

  it('an override of undefined leaves the env value', () => {
    const cfg = loadConfig({
      cwd: emptyDir,
      env: { SHARDCAST_CATALOG_URL: 'postgres://env@h/db' },
      overrides: { 'catalog.url': undefined },
    });
    expect(cfg.catalog.url).toBe('postgres://env@h/db');
  });

  it('a bad override is reported like a bad file value', () => {
    const err = configError(() => loadConfig({ cwd: emptyDir, env: {}, overrides: { 'catalog.url': 'mysql://h/db' } }));
    expect(err.key).toBe('catalog.url');
  });
});

describe('validation errors: one line naming the key path', () => {
  const cases: Array<{ name: string; raw: unknown; key: string; message: string | RegExp }> = [
    { name: 'string port', raw: { temporal: { port: 'x' } }, key: 'temporal.port', message: 'config: temporal.port: expected a number, got a string' },
    { name: 'port too large', raw: { temporal: { port: 70000 } }, key: 'temporal.port', message: /^config: temporal\.port: .*65535/ },
    { name: 'port zero', raw: { catalog: { port: 0 } }, key: 'catalog.port', message: 'config: catalog.port: must be at least 1' },
    { name: 'negative node count', raw: { nodes: { count: -1 } }, key: 'nodes.count', message: 'config: nodes.count: must be at least 0' },
    { name: 'too many nodes', raw: { nodes: { count: 65 } }, key: 'nodes.count', message: 'config: nodes.count: must be at most 64' },
    { name: 'fractional node count', raw: { nodes: { count: 1.5 } }, key: 'nodes.count', message: 'config: nodes.count: expected an integer, got a number' },
    { name: 'non-postgres catalog URL', raw: { catalog: { url: 'mysql://h/db' } }, key: 'catalog.url', message: 'config: catalog.url: a postgres:// connection URL' },
    { name: 'temporal address without port', raw: { temporal: { address: 'temporal' } }, key: 'temporal.address', message: 'config: temporal.address: host:port' },
    { name: 'unknown top-level key', raw: { bogus: 1 }, key: 'bogus', message: 'config: bogus: unknown key' },
    { name: 'unknown nested key', raw: { temporal: { prot: 7233 } }, key: 'temporal.prot', message: 'config: temporal.prot: unknown key' },
    { name: 'upper-case database', raw: { catalog: { database: 'Shard' } }, key: 'catalog.database', message: /^config: catalog\.database: lower-case letters/ },
    { name: 'empty password', raw: { postgres: { password: '' } }, key: 'postgres.password', message: /^config: postgres\.password: / },
    { name: 'bad registered node state', raw: { nodes: { register: [{ name: 'n1', dsn: 'postgres://h/db', state: 'gone' }] } }, key: 'nodes.register.0.state', message: /^config: nodes\.register\.0\.state: / },
    { name: 'registered node DSN', raw: { nodes: { register: [{ name: 'n1', dsn: 'http://h' }] } }, key: 'nodes.register.0.dsn', message: 'config: nodes.register.0.dsn: a postgres:// connection URL' },
    { name: 'unknown key in a registered node', raw: { nodes: { register: [{ name: 'n1', dsn: 'postgres://h', weight: 3 }] } }, key: 'nodes.register.0.weight', message: 'config: nodes.register.0.weight: unknown key' },
    { name: 'maximumAttempts 0', raw: { tableCreation: { maximumAttempts: 0 } }, key: 'tableCreation.maximumAttempts', message: /^config: tableCreation\.maximumAttempts: / },
    { name: 'unknown forecast backend', raw: { forecast: { backend: 'gpu' } }, key: 'forecast.backend', message: /^config: forecast\.backend: .*"auto"/ },
    { name: 'unknown planning mode', raw: { planning: { mode: 'sometimes' } }, key: 'planning.mode', message: /^config: planning\.mode: .*"dry-run"/ },
    { name: 'planning target above 1', raw: { planning: { targetUtilisation: 1.5 } }, key: 'planning.targetUtilisation', message: /^config: planning\.targetUtilisation: / },
    { name: 'section not an object', raw: { temporal: 5 }, key: 'temporal', message: /^config: temporal: expected .*object, got .*number$/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const err = configError(() => parseConfig(c.raw));
      expect(err.key).toBe(c.key);
      if (typeof c.message === 'string') expect(err.message).toBe(c.message);
      else expect(err.message).toMatch(c.message);
      expect(err.message).not.toContain('\n');
      expect(err.message).not.toMatch(/Invalid input/);
    });
  }

  it('a bad value in a file names the key, not the file', () => {
    const file = write('badvalue.json', '{"temporal":{"port":"x"}}');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.key).toBe('temporal.port');
    expect(err.message).toBe('config: temporal.port: expected a number, got a string');
  });

  it('a YAML file with an unknown key', () => {
    const file = write('unknown.yaml', 'metrics:\n  port: 1\n  path: /m\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.key).toBe('metrics.path');
    expect(err.message).toBe('config: metrics.path: unknown key');
  });
});

describe('environment values keep their type', () => {
  it('numeric-looking values of text keys stay text', () => {
    const cfg = loadConfig({ env: { SHARDCAST_TEMPORAL_TASK_QUEUE: '123', SHARDCAST_DATA_DIR: '2024', SHARDCAST_TEMPORAL_NAMESPACE: '7' }, cwd: '/' });
    expect(cfg.temporal.taskQueue).toBe('123');
    expect(cfg.dataDir).toBe('2024');
    expect(cfg.temporal.namespace).toBe('7');
  });
});

describe('embedded nodes with an existing catalog', () => {
  it('start none unless nodes.count says otherwise', () => {
    expect(parseConfig({}).nodes.count).toBe(3);
    expect(parseConfig({ catalog: { url: 'postgres://u:p@db/cat' } }).nodes.count).toBe(0);
    expect(parseConfig({ catalog: { url: 'postgres://u:p@db/cat' }, nodes: { count: 2 } }).nodes.count).toBe(2);
    expect(loadConfig({ env: { SHARDCAST_CATALOG_URL: 'postgres://u:p@db/cat' }, cwd: '/' }).nodes.count).toBe(0);
    expect(loadConfig({ env: { SHARDCAST_CATALOG_URL: 'postgres://u:p@db/cat', SHARDCAST_NODES_COUNT: '1' }, cwd: '/' }).nodes.count).toBe(1);
  });
});
