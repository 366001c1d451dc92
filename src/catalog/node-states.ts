/** A node's life-cycle states (DESIGN §5), apart from the catalog code so that the CLI can list them without loading it. */
export const NODE_STATES = ['active', 'standby', 'draining', 'retired'] as const;
export type NodeState = (typeof NODE_STATES)[number];
