/**
 * Scale-out's provisioner (planning.provisioner): where a new node comes from.
 *
 * - `standby` (default): nodes registered beforehand in state standby are activated; nothing is created.
 * - `{ command }`: `sh -c COMMAND` is run with the request as JSON on stdin and in the environment
 *   (SHARDCAST_PROVISION_ACTION = provision | release, SHARDCAST_PROVISION_REQUEST = the JSON). For
 *   `provision` it prints the new node as JSON on its last line of output:
 *   `{"name": "node-4", "dsn": "postgres://…", "region"?: …, "zone"?: …, "capacity"?: …}`; exit 0.
 * - `{ webhook }`: the same JSON POSTed (`action` in the body); a 2xx answer's body is the node.
 *
 * The DSN may name a password file or variable (`?passfile=`, `?passwordenv=`, src/catalog/dsn-password.ts)
 * instead of holding one. It goes to the catalog and nowhere else: neither the workflow's history
 * nor an error message holds it. Requests carry a `requestId`, the same on every retry of one
 * scale-out: a provisioner that may be asked twice makes one node per id, and `release` of an id it
 * created nothing for does nothing. The second call may come while the first still runs: a worker
 * killed in the middle of a call leaves its command running (the command has a process group of its
 * own, and the worker's time limit died with it), and the scale-out asks again once the dead
 * attempt's heartbeat is 10 s late.
 */
import { spawn } from 'node:child_process';
import { validateNewNode } from '../catalog/nodes.js';
import { errorMessage, InvalidInputError, ShardcastError } from '../errors.js';
import type { PlanNode } from './types.js';

export interface ExternalProvisioner {
  /** Seconds a provision or release call may take (default 600). */
  timeoutSeconds?: number;
  /** What the planner assumes of a node not yet created: its capacity (default: the largest active node's), region and zone. */
  capacity?: number;
  region?: string;
  zone?: string;
}

export type ProvisionerConfig = 'standby' | (ExternalProvisioner & { command: string }) | (ExternalProvisioner & { webhook: string });

export interface NodeRequest {
  /** Identifies one scale-out; the same on every retry. */
  requestId: string;
  region?: string;
  zone?: string;
  capacity?: number;
  /** Why the node is wanted (the plan's reason). */
  reason: string;
}

export interface ProvisionedNode {
  name: string;
  dsn: string;
  region?: string;
  zone?: string;
  capacity?: number;
}

/** The provisioner failed or did not answer in time: retrying may help. */
export class ProvisionerError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROVISIONER', `provisioner: ${message}`, options);
  }
}

export function isExternal(p: ProvisionerConfig | undefined): p is Exclude<ProvisionerConfig, 'standby'> {
  return p !== undefined && p !== 'standby';
}

/** The planner's stand-in for the node a provisioner would make; its activation is a scale-out through the provisioner. */
export const PROVISIONED_NODE_ID = -1;
export const PROVISIONED_NODE_NAME = '+new-node';

/**
 * With an external provisioner and no standby node left to activate, the planner also sees one node
 * that does not exist yet: standby, of the configured capacity (default: the largest active node's),
 * in the configured region and zone. Registered standby nodes are always used first. One per plan:
 * when the fleet needs more, the next plan asks again.
 */
export function provisionedSlot(nodes: readonly PlanNode[], p: ProvisionerConfig | undefined): PlanNode | undefined {
  if (!isExternal(p) || nodes.some((n) => n.state === 'standby' && n.reachable)) return undefined;
  const sizes = nodes.filter((n) => n.state === 'active').map((n) => n.capacity);
  const capacity = p.capacity ?? (sizes.length ? Math.max(...sizes) : undefined);
  if (capacity === undefined) return undefined;
  return { id: PROVISIONED_NODE_ID, name: PROVISIONED_NODE_NAME, capacity, state: 'standby', region: p.region ?? null, zone: p.zone ?? null, reachable: true };
}

/** Asks the provisioner for a new node. */
export async function provisionNode(p: ProvisionerConfig, request: NodeRequest): Promise<ProvisionedNode> {
  if (!isExternal(p)) throw new InvalidInputError('provisioner: "standby" creates no node (register standby nodes with `shardcast nodes add --state standby`)');
  const reply = await call(p, 'provision', request);
  return parseNode(reply);
}

/** Tells the provisioner the node of this request is not wanted (a failed scale-out); `name` when it was reported. */
export async function releaseNode(p: ProvisionerConfig, request: NodeRequest & { name?: string }): Promise<void> {
  if (!isExternal(p)) return;
  await call(p, 'release', request);
}

function parseNode(reply: string): ProvisionedNode {
  let value: unknown;
  try {
    value = JSON.parse(reply);
  } catch {
    // Never the reply itself: it may hold a password.
    throw new InvalidInputError('provisioner: its answer is not JSON {"name": …, "dsn": …}');
  }
  const v = value as Partial<Record<keyof ProvisionedNode, unknown>>;
  if (typeof value !== 'object' || value === null || typeof v.name !== 'string' || typeof v.dsn !== 'string') {
    throw new InvalidInputError('provisioner: its answer has no "name" and "dsn" strings');
  }
  const node: ProvisionedNode = { name: v.name, dsn: v.dsn };
  if (typeof v.region === 'string') node.region = v.region;
  if (typeof v.zone === 'string') node.zone = v.zone;
  if (typeof v.capacity === 'number') node.capacity = v.capacity;
  try {
    validateNewNode(node);
  } catch (err) {
    throw new InvalidInputError(`provisioner: ${errorMessage(err)}`);
  }
  return node;
}

async function call(p: Exclude<ProvisionerConfig, 'standby'>, action: 'provision' | 'release', request: NodeRequest & { name?: string }): Promise<string> {
  const timeoutMs = (p.timeoutSeconds ?? 600) * 1000;
  const body = JSON.stringify({ action, ...request });
  if ('command' in p) return runCommand(p.command, action, body, timeoutMs);
  return postWebhook(p.webhook, body, timeoutMs);
}

/** The command's last line of output; its exit status and its last line of stderr when it fails. */
function runCommand(command: string, action: string, body: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], {
      env: { ...process.env, SHARDCAST_PROVISION_ACTION: action, SHARDCAST_PROVISION_REQUEST: body },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group: a timeout ends what it started too
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.on('error', () => undefined); // a command that does not read its input
    child.stdin.end(body);
    // The time limit is checked one turn of the event loop late (setImmediate runs after the loop has read
    // what is ready): a worker stopped (SIGSTOP, a suspended VM) past the limit while its command finished
    // wakes with the timer due and the command's exit and output waiting; the command's answer wins.
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (child.exitCode !== null || child.signalCode !== null) return; // it ended: 'close' settles
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
        reject(new ProvisionerError(`${action}: the command did not finish within ${timeoutMs / 1000} s`));
      });
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new ProvisionerError(`${action}: the command could not start: ${e.message}`, { cause: e }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve(lastLine(out));
      const why = lastLine(err) || (signal ? `killed by ${signal}` : `exit status ${code}`);
      reject(new ProvisionerError(`${action}: the command failed (${signal ?? `exit status ${code}`}): ${why}`));
    });
  });
}

async function postWebhook(url: string, body: string, timeoutMs: number): Promise<string> {
  const origin = new URL(url).origin;
  // The time limit as runCommand's: checked one turn of the event loop late, so that an answer that came
  // while the worker was stopped past the limit is read before the limit is enforced.
  const controller = new AbortController();
  const timer = setTimeout(() => setImmediate(() => controller.abort(new DOMException(`no answer within ${timeoutMs / 1000} s`, 'TimeoutError'))), timeoutMs);
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: controller.signal });
    text = await res.text();
  } catch (err) {
    const e = err as Error;
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : errorMessage(e.cause ?? e);
    throw new ProvisionerError(`webhook ${origin}: ${why}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) throw new ProvisionerError(`webhook ${origin}: HTTP ${res.status}${text.trim() ? `: ${lastLine(text).slice(0, 200)}` : ''}`);
  return text.trim();
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.trim() ?? '';
}
