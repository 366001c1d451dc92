import { describe, expect, it } from 'vitest';
import { movementOfName } from '../../src/movement/doctor.js';
import { reverseNames } from '../../src/movement/reverse.js';

describe('doctor: which movement an object belongs to', () => {
  const movements = new Map([['s17_ab12cd34ef', {}]]);

  it('attributes a move’s reverse stream (slot and publication `…_r`) to the move', () => {
    const names = reverseNames('s17_ab12cd34ef');
    expect(names).toEqual({ slot: 'sc_mv_s17_ab12cd34ef_r', publication: 'sc_mv_s17_ab12cd34ef_r' });
    expect(movementOfName(movements, names.slot)).toBe('s17_ab12cd34ef');
  });

  it('still attributes the other suffixes, and nothing of another movement', () => {
    for (const name of ['sc_mv_s17_ab12cd34ef', 'sc_mv_s17_ab12cd34ef_v', 'sc_mv_s17_ab12cd34ef_t']) expect(movementOfName(movements, name)).toBe('s17_ab12cd34ef');
    expect(movementOfName(movements, 'sc_mv_s18_ab12cd34ef_r')).toBeNull();
  });
});
