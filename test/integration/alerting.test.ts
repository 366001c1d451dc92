import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { Client, Connection } from '@temporalio/client';
import { collectorWorkflowId, ensureCollector } from '../../client/index.js';
import { addNode } from '../../src/catalog/nodes.js';
import { freePort } from '../../src/fleet/postgres-server.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, createTestCatalog, fleet, startWorkerProcess, uniqueName, until, withDatabase, type TestCatalog } from '../helpers/fleet.js';

/**
 * The alert rules of deploy/ end to end: a real `shardcast worker` exports /metrics, a real
 * Prometheus scrapes it and evaluates deploy/prometheus-rules.yml, a real Alertmanager delivers to a
 * webhook receiver in this test. The condition is real too: a registered node stops answering, the
 * collector finds it unreachable, and ShardcastNodeUnreachable fires (then resolves when it answers).
 */

const ROOT = path.resolve(import.meta.dirname, '../..');
const RULES = path.join(ROOT, 'deploy/prometheus-rules.yml');
/** The rules' `for:` durations (minutes) shortened to this, so the test takes seconds; expressions unchanged. */
const SHORT_FOR = '2s';

function which(...names: string[]): string | undefined {
  for (const name of names) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
    if (found) return found;
  }
  return undefined;
}

const prometheusBin = which('prometheus');
const alertmanagerBin = which('prometheus-alertmanager', 'alertmanager');
const missing = [prometheusBin ? '' : 'prometheus', alertmanagerBin ? '' : 'alertmanager (prometheus-alertmanager)'].filter(Boolean);

interface WebhookAlert {
  status: 'firing' | 'resolved';
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** The rules file as deployed, with every `for:` shortened; the expressions are the deployed ones. */
function shortenedRules(text: string, shortFor: string): { text: string; exprs: Map<string, string> } {
  const doc = YAML.parse(text) as { groups: Array<{ rules: Array<{ alert?: string; expr: string; for?: string }> }> };
  const exprs = new Map<string, string>();
  for (const group of doc.groups) {
    for (const rule of group.rules) {
      if (rule.alert) exprs.set(rule.alert, rule.expr);
      if (rule.for !== undefined) rule.for = shortFor;
    }
  }
  return { text: YAML.stringify(doc), exprs };
}

/** A TCP proxy to a fleet node: closing it makes the node stop answering for real (refused connections). */
class NodeProxy {
  private server?: TcpServer;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  async open(): Promise<void> {
    const server = createTcpServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function body(req: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of req) text += String(chunk);
  return text;
}

async function ready(url: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(2000) }).then(
    (r) => r.ok,
    () => false,
  );
}

/** A Prometheus or Alertmanager process; its output is kept for the failure message. */
function startDaemon(bin: string, args: string[]): { child: ChildProcess; output(): string } {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  children.push(child);
  return { child, output: () => out.slice(-4000) };
}

const children: ChildProcess[] = [];
const cleanups: Array<() => Promise<unknown>> = [];
let catalog: TestCatalog;
let dir: string;

beforeAll(async () => {
  if (missing.length) return;
  dir = mkdtempSync(path.join(fleet().baseDir, 'alerting-'));
  catalog = await createTestCatalog('alerting');
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await Promise.all(
    children.map((c) => new Promise((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve(undefined) : (c.once('exit', resolve), c.kill('SIGTERM'))))),
  );
  await catalog?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('alerting end to end (Prometheus and Alertmanager)', () => {
  it('the shortened rules keep every deployed expression', () => {
    const text = readFileSync(RULES, 'utf8');
    const { text: short, exprs } = shortenedRules(text, SHORT_FOR);
    const again = shortenedRules(short, SHORT_FOR);
    expect(exprs.size).toBeGreaterThan(5);
    expect(again.exprs).toEqual(exprs);
    expect(short).not.toMatch(/\bfor: (?!2s)/);
  });

  it('a node that stops answering reaches the webhook as ShardcastNodeUnreachable, and its resolution too', async ({ skip }) => {
    if (missing.length) skip(`not installed: ${missing.join(', ')} (Debian: apt-get install prometheus prometheus-alertmanager)`);
    const started = Date.now();

    // The webhook receiver: every alert Alertmanager delivers.
    const received: WebhookAlert[] = [];
    const webhookPort = await freePort();
    const webhook: Server = createServer((req, res) => {
      void body(req).then((text) => {
        const payload = JSON.parse(text) as { alerts: WebhookAlert[] };
        received.push(...payload.alerts);
        res.writeHead(200);
        res.end();
      });
    });
    await new Promise<void>((resolve) => webhook.listen(webhookPort, '127.0.0.1', () => resolve()));
    cleanups.push(() => new Promise((resolve) => webhook.close(resolve)));

    // A fourth node, reached through a proxy so that it can stop answering.
    const f = fleet();
    const target = f.nodes[0]!;
    const ghostDb = uniqueName('ghost');
    await adminQuery(target.adminUrl, `create database ${quoteIdent(ghostDb)}`);
    cleanups.push(() => adminQuery(target.adminUrl, `drop database if exists ${quoteIdent(ghostDb)} with (force)`));
    const proxy = new NodeProxy(await freePort(), target.port);
    await proxy.open();
    cleanups.push(() => proxy.close());
    const viaProxy = new URL(withDatabase(target.adminUrl, ghostDb));
    viaProxy.port = String(proxy.port);
    const ghost = await addNode(catalog.pool, { name: uniqueName('ghost').replace(/_/g, '-'), dsn: viaProxy.toString(), region: 'test', zone: 'z4' });

    // The worker as deployed, exporting /metrics; the collector (every second) runs on its queue.
    const metricsPort = await freePort();
    const taskQueue = uniqueName('alerting-tq');
    const worker = await startWorkerProcess(catalog.catalogUrl, taskQueue, {
      SHARDCAST_METRICS_PORT: String(metricsPort),
      SHARDCAST_COLLECTION_INTERVAL_SECONDS: '1',
      SHARDCAST_JANITOR_INTERVAL_MINUTES: '0',
      SHARDCAST_DATA_DIR: path.join(dir, 'worker'),
    });
    cleanups.push(() => worker.stop());
    // A collector of this test's own (the worker's has a namespace-wide id another test may hold).
    const connection = await Connection.connect({ address: fleet().temporalAddress });
    const client = new Client({ connection, namespace: 'default' });
    const collector = await ensureCollector({ client, taskQueue, workflowIdPrefix: `${taskQueue}-` }, { intervalSeconds: 1, retentionDays: 1 });
    cleanups.push(async () => {
      await collector.terminate('test over').catch(() => undefined);
      // The worker's own collector, when it started one on this queue: no other test finds it orphaned.
      const own = client.workflow.getHandle(collectorWorkflowId());
      if ((await own.describe().catch(() => undefined))?.taskQueue === taskQueue) await own.terminate('test over').catch(() => undefined);
      await connection.close();
    });

    // Alertmanager: groups by alert and node, waits a second, delivers to the webhook (resolutions too).
    const amPort = await freePort();
    writeFileSync(
      path.join(dir, 'alertmanager.yml'),
      YAML.stringify({
        route: { receiver: 'test', group_by: ['alertname', 'node'], group_wait: '1s', group_interval: '1s', repeat_interval: '1h' },
        receivers: [{ name: 'test', webhook_configs: [{ url: `http://127.0.0.1:${webhookPort}/`, send_resolved: true }] }],
      }),
    );
    const am = startDaemon(alertmanagerBin!, [
      `--config.file=${path.join(dir, 'alertmanager.yml')}`,
      `--storage.path=${path.join(dir, 'am-data')}`,
      `--web.listen-address=127.0.0.1:${amPort}`,
      '--cluster.listen-address=',
    ]);

    // Prometheus: scrapes the worker every second, evaluates the deployed rules (for: shortened) every second.
    const promPort = await freePort();
    writeFileSync(path.join(dir, 'rules.yml'), shortenedRules(readFileSync(RULES, 'utf8'), SHORT_FOR).text);
    writeFileSync(
      path.join(dir, 'prometheus.yml'),
      YAML.stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s' },
        rule_files: [path.join(dir, 'rules.yml')],
        alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
        scrape_configs: [{ job_name: 'shardcast-worker', static_configs: [{ targets: [`127.0.0.1:${metricsPort}`] }] }],
      }),
    );
    const prom = startDaemon(prometheusBin!, [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'prom-data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ]);
    const daemons = () => `\n--- alertmanager:\n${am.output()}\n--- prometheus:\n${prom.output()}`;
    await until(`Alertmanager and Prometheus ready${daemons()}`, async () => (await ready(`http://127.0.0.1:${amPort}/-/ready`)) && (await ready(`http://127.0.0.1:${promPort}/-/ready`)), 20_000, 200);

    // The node answers first: the collector records it reachable, and nothing fires for it.
    const reachable = async (value: number) => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return new RegExp(`^shardcast_node_reachable\\{node="${ghost.name}"\\} ${value}$`, 'm').test(text);
    };
    await until(`${ghost.name} reachable in /metrics`, () => reachable(1), 20_000, 200);

    // It stops answering.
    await proxy.close();
    await until(`${ghost.name} unreachable in /metrics`, () => reachable(0), 20_000, 200);
    const ofGhost = (status: WebhookAlert['status']) => received.find((a) => a.status === status && a.labels.node === ghost.name);
    await until(`the webhook receiving ShardcastNodeUnreachable for ${ghost.name}${daemons()}`, async () => ofGhost('firing') !== undefined, 30_000, 200);
    const firing = ofGhost('firing')!;
    expect(firing.labels).toMatchObject({ alertname: 'ShardcastNodeUnreachable', node: ghost.name, severity: 'critical', job: 'shardcast-worker', instance: `127.0.0.1:${metricsPort}` });
    expect(firing.annotations.summary).toBe(`Node ${ghost.name} does not answer`);
    // The fleet's own nodes answer: no alert about them, nor any other alert.
    expect(received.filter((a) => a.labels.node !== ghost.name)).toEqual([]);

    // It answers again: the alert resolves, and the webhook hears it.
    await proxy.open();
    await until(`${ghost.name} reachable again`, () => reachable(1), 20_000, 200);
    await until(`the webhook receiving the resolution${daemons()}`, async () => ofGhost('resolved') !== undefined, 30_000, 200);
    expect(ofGhost('resolved')!.labels.alertname).toBe('ShardcastNodeUnreachable');
    console.log(`alerting end to end: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, 90_000);
});
