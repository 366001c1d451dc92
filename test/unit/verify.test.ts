import { describe, expect, it } from 'vitest';
import { describeRange, differingKeys, emptyProgress, etaSeconds, furthest, keyRange, type PkColumn } from '../../src/movement/verify.js';

const id: PkColumn[] = [{ name: 'id', type: 'bigint' }];
const pair: PkColumn[] = [
  { name: 'order_id', type: 'bigint' },
  { name: 'line', type: 'integer' },
];

describe('chunk key ranges', () => {
  it('bounds a chunk after the last verified key and up to the chunk’s last key, parameters typed', () => {
    expect(keyRange(id, null, null)).toEqual({ sql: 'true', params: [] });
    expect(keyRange(id, ['10'], null)).toEqual({ sql: '(t."id") > ($1::bigint)', params: ['10'] });
    expect(keyRange(id, null, ['20'])).toEqual({ sql: '(t."id") <= ($1::bigint)', params: ['20'] });
    expect(keyRange(id, ['10'], ['20'])).toEqual({ sql: '(t."id") > ($1::bigint) and (t."id") <= ($2::bigint)', params: ['10', '20'] });
  });

  it('compares composite keys as row values (keyset order), numbering parameters from the given one', () => {
    expect(keyRange(pair, ['1', '2'], ['3', '4'], 3)).toEqual({
      sql: '(t."order_id", t."line") > ($3::bigint, $4::integer) and (t."order_id", t."line") <= ($5::bigint, $6::integer)',
      params: ['1', '2', '3', '4'],
    });
  });

  it('names a range the way an operator reads it', () => {
    expect(describeRange(id, ['10'], ['20'])).toBe('id in (10, 20]');
    expect(describeRange(id, ['10'], null)).toBe('id > 10');
    expect(describeRange(id, null, ['20'])).toBe('id <= 20');
    expect(describeRange(id, null, null)).toBe('all of id');
    expect(describeRange(pair, ['1', '2'], ['3', '4'])).toBe('(order_id, line) in ((1, 2), (3, 4)]');
  });
});

describe('differing keys of a chunk', () => {
  it('lists changed rows, rows missing on the target and rows only on the target, at most `max`', () => {
    const source = [
      { k: ['1'], h: 'a' },
      { k: ['2'], h: 'b' },
      { k: ['3'], h: 'c' },
    ];
    const target = [
      { k: ['1'], h: 'a' },
      { k: ['2'], h: 'x' },
      { k: ['4'], h: 'd' },
    ];
    expect(differingKeys(source, target)).toEqual(['2 (changed)', '3 (missing on the target)', '4 (only on the target)']);
    expect(differingKeys(source, target, 1)).toEqual(['2 (changed)']);
    expect(differingKeys(source, source)).toEqual([]);
    expect(differingKeys([{ k: ['1', '2'], h: 'a' }], [{ k: ['1', '2'], h: 'b' }])).toEqual(['1, 2 (changed)']);
  });
});

describe('progress', () => {
  it('estimates the seconds left from the rate of this run', () => {
    expect(etaSeconds(1000, 250, 250, 5000)).toBe(15);
    expect(etaSeconds(1000, 500, 250, 5000)).toBe(10); // resumed: only this run's rows count for the rate
    expect(etaSeconds(1000, 0, 0, 0)).toBeNull();
    expect(etaSeconds(100, 150, 150, 1000)).toBe(0); // the estimate was low
  });

  it('resumes from whichever record is further along: a heartbeat can be newer than the workflow’s', () => {
    const a = { ...emptyProgress(), rowsVerified: 10 };
    const b = { ...emptyProgress(), rowsVerified: 20 };
    expect(furthest(a, b)).toBe(b);
    expect(furthest(b, a)).toBe(b);
    expect(furthest(undefined, a)).toBe(a);
    expect(furthest(a, undefined)).toBe(a);
    expect(furthest(undefined, undefined)).toBeUndefined();
  });
});
