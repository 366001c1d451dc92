import { describe, expect, it } from 'vitest';
import { approvalReason } from '../../src/movement/approval.js';

const at = (hour: number): Date => new Date(Date.UTC(2026, 10, 22, hour, 30));

describe('movement approval policy', () => {
  it('none by default', () => {
    expect(approvalReason({ approvalRequired: false }, 10 ** 12, at(12))).toBeNull();
  });
  it('always when required', () => {
    expect(approvalReason({ approvalRequired: true }, 0, at(3))).toBe('approval is required for every movement');
  });
  it('for shards over a size', () => {
    expect(approvalReason({ approvalRequired: false, approvalOverBytes: 1000 }, 1000, at(3))).toBeNull();
    expect(approvalReason({ approvalRequired: false, approvalOverBytes: 1000 }, 1001, at(3))).toBe('the shard holds 1001 bytes, over 1000');
  });
  it('inside given UTC hours, including windows past midnight', () => {
    const office = { approvalRequired: false, approvalHoursUtc: [9, 17] as [number, number] };
    expect(approvalReason(office, 0, at(8))).toBeNull();
    expect(approvalReason(office, 0, at(9))).toBe('it is 9:00 UTC, inside the approval hours 9–17');
    expect(approvalReason(office, 0, at(16))).not.toBeNull();
    expect(approvalReason(office, 0, at(17))).toBeNull();
    const night = { approvalRequired: false, approvalHoursUtc: [22, 6] as [number, number] };
    expect(approvalReason(night, 0, at(23))).not.toBeNull();
    expect(approvalReason(night, 0, at(2))).not.toBeNull();
    expect(approvalReason(night, 0, at(6))).toBeNull();
    expect(approvalReason(night, 0, at(12))).toBeNull();
  });
});
