import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.js';
import { PROVISIONED_NODE_NAME, provisionedSlot } from '../../../src/planning/provisioner.js';
import type { PlanNode } from '../../../src/planning/types.js';

const node = (id: number, over: Partial<PlanNode> = {}): PlanNode => ({ id, name: `node-${id}`, capacity: 1000, state: 'active', region: null, zone: null, reachable: true, ...over });

describe('planning.provisioner', () => {
  it('defaults to standby; a command or a webhook gets a time limit', () => {
    expect(parseConfig({}).planning.provisioner).toBe('standby');
    expect(parseConfig({ planning: { provisioner: { command: './make-node' } } }).planning.provisioner).toEqual({ command: './make-node', timeoutSeconds: 600 });
    expect(parseConfig({ planning: { provisioner: { webhook: 'https://infra.example/nodes', capacity: 800, region: 'eu' } } }).planning.provisioner).toEqual({
      webhook: 'https://infra.example/nodes',
      timeoutSeconds: 600,
      capacity: 800,
      region: 'eu',
    });
  });

  it('refuses a bad provisioner with one line naming the key', () => {
    const error = (provisioner: unknown) => {
      try {
        parseConfig({ planning: { provisioner } });
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    expect(error('cloud')).toBe('config: planning.provisioner: expected "standby", { command: "…" } or { webhook: "http://…" }');
    expect(error({ webhook: 'ftp://x' })).toBe('config: planning.provisioner.webhook: Invalid URL');
    expect(error({ command: '' })).toBe('config: planning.provisioner.command: must be at least 1');
    expect(error({ command: 'x', timeoutSeconds: 0 })).toBe('config: planning.provisioner.timeoutSeconds: must be at least 1');
  });
});

describe('provisionedSlot', () => {
  it('with an external provisioner and no standby node: one node to be made, as large as the largest active one', () => {
    const slot = provisionedSlot([node(1, { capacity: 500 }), node(2, { capacity: 900 }), node(3, { state: 'retired', capacity: 5000 })], { command: 'x', region: 'eu' });
    expect(slot).toMatchObject({ name: PROVISIONED_NODE_NAME, capacity: 900, state: 'standby', region: 'eu', zone: null, reachable: true });
    expect(provisionedSlot([node(1)], { webhook: 'http://h/', capacity: 300 })?.capacity).toBe(300);
  });

  it('none with the standby provisioner, or while a reachable standby node is left', () => {
    expect(provisionedSlot([node(1)], 'standby')).toBeUndefined();
    expect(provisionedSlot([node(1)], undefined)).toBeUndefined();
    expect(provisionedSlot([node(1), node(2, { state: 'standby' })], { command: 'x' })).toBeUndefined();
    expect(provisionedSlot([node(1), node(2, { state: 'standby', reachable: false })], { command: 'x' })?.name).toBe(PROVISIONED_NODE_NAME);
  });
});
