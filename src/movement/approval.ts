/** When a movement must wait for an operator's approve before its cutover. Pure: workflows call it. */
export interface ApprovalPolicy {
  approvalRequired: boolean;
  approvalOverBytes?: number;
  approvalHoursUtc?: [number, number];
}

/** The approval policy: always, for large shards, or inside given UTC hours (workflow time is deterministic). */
export function approvalReason(input: ApprovalPolicy, bytes: number, now: Date): string | null {
  if (input.approvalRequired) return 'approval is required for every movement';
  if (input.approvalOverBytes !== undefined && bytes > input.approvalOverBytes) {
    return `the shard holds ${bytes} bytes, over ${input.approvalOverBytes}`;
  }
  if (input.approvalHoursUtc) {
    const [from, to] = input.approvalHoursUtc;
    const hour = now.getUTCHours();
    const inside = from <= to ? hour >= from && hour < to : hour >= from || hour < to;
    if (inside) return `it is ${hour}:00 UTC, inside the approval hours ${from}–${to}`;
  }
  return null;
}
